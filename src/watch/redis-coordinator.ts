import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { Cluster, Redis } from "ioredis";
import type { BindRegistration, BindState } from "../domain/bind.js";
import { BIND_STATUSES } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { silentLogger } from "../domain/logger.js";
import { canonicalJson } from "../domain/state.js";
import type { CallGate, Coordinator, Permit, RegisterResult, Unsubscribe } from "./coordinator.js";
import { CoordinatorUnavailableError } from "./coordinator.js";
import type { TraceKeys } from "./redis-keys.js";
import { createRedisKeys } from "./redis-keys.js";
import { defineCoordinatorScripts } from "./redis-scripts.js";

export interface RedisCoordinatorOptions {
  /** The command connection (standalone or Cluster). Owned by the caller: `close()` does not quit it. */
  readonly redis: Redis | Cluster;
  /**
   * A separate connection for pub/sub, owned by the caller too. A Cluster must be built with
   * `shardedSubscribers: true`, since states are published with SPUBLISH.
   */
  readonly subscriber: Redis | Cluster;
  /** Prefix of every key; default `bw:`. Tests use a fresh one each. */
  readonly prefix?: string;
  /** How long a trace is kept after registration (BIND_TIMEOUT_MS + RESULT_TTL_MS). */
  readonly retentionMs: number;
  /** How long a final state is kept at least (RESULT_TTL_MS). */
  readonly resultTtlMs: number;
  /** Deployment-wide budget of checkbind calls per second (UPSTREAM_QPS). */
  readonly upstreamQps: number;
  /** The clock for what the port gives no time for (ban length, interest pruning). */
  readonly now?: () => number;
  readonly logger?: Logger;
}

/** Optimistic updates give up after this many lost races (each loss means another writer succeeded). */
const MAX_CAS_ATTEMPTS = 32;
/** `isReady()` answers false when PING takes longer than this. */
const READY_TIMEOUT_MS = 1_000;
/** A failed re-read after a reconnect is tried again after this long. */
const RESYNC_RETRY_MS = 1_000;
/** An idle budget bucket may vanish once it would be full again anyway; kept a while longer to be safe. */
const BUDGET_IDLE_TTL_MS = 60_000;
/** How long a call's start time outlives its minGap. */
const LAST_CALL_SLACK_MS = 60_000;
/** A bucket of one: calls are paced evenly (same rule as the in-memory coordinator). */
const BUDGET_CAPACITY = 1;

type Listener = (state: BindState) => void;

interface ChannelEntry {
  readonly traceId: string;
  readonly channel: string;
  readonly keys: TraceKeys;
  readonly listeners: Set<Listener>;
  readonly ready: Promise<void>;
}

/**
 * The coordinator of a deployment that shares one Redis (standalone or Cluster, Redis
 * >= 7.0): every trace's keys carry the hash tag `{<trace_id>}`, each operation is one
 * Lua script, and state changes fan out through sharded pub/sub.
 *
 * Times the port passes (`nowMs`) are the caller's clock; instances' clocks are
 * assumed roughly in sync (see redis-scripts.ts).
 *
 * Listeners may see a version twice: after the subscriber reconnects, the stored
 * state of every subscribed trace is delivered again (a change published while it
 * was away is otherwise lost), so they dedupe by version as the scheduler does.
 * `mutate` of updateState may run more than once (optimistic retries): keep it pure.
 *
 * The connections belong to the caller: `close()` drops this coordinator's
 * subscriptions and listeners and leaves both connections open. Use one coordinator
 * per subscriber connection and prefix, or one would unsubscribe the other's channels.
 *
 * @example
 * // The connections come from src/runtime/redis-connections.ts, for each topology.
 * const { redis, subscriber } = createRedisConnections(config.redis, { onError: (err) => log.warn({ err }) });
 * const coordinator = createRedisCoordinator({ redis, subscriber, retentionMs: 780_000, resultTtlMs: 600_000, upstreamQps: 40 });
 */
export function createRedisCoordinator(opts: RedisCoordinatorOptions): Coordinator {
  const { redis, subscriber } = opts;
  for (const [name, value] of [
    ["retentionMs", opts.retentionMs],
    ["resultTtlMs", opts.resultTtlMs],
    ["upstreamQps", opts.upstreamQps],
  ] as const) {
    if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number, got ${value}`);
  }
  if (subscriber.isCluster && !(subscriber as Cluster).options.shardedSubscribers) {
    throw new TypeError("the subscriber Cluster needs `shardedSubscribers: true` (states are sent with SPUBLISH)");
  }
  const now = opts.now ?? Date.now;
  const logger = opts.logger ?? silentLogger;
  const keys = createRedisKeys(opts.prefix);
  const scripts = defineCoordinatorScripts(redis);
  const retentionMs = Math.ceil(opts.retentionMs);
  const resultTtlMs = Math.ceil(opts.resultTtlMs);

  /** Subscriptions of this coordinator, by channel name. */
  const channels = new Map<string, ChannelEntry>();
  /**
   * Channels nobody here listens to any more whose SUNSUBSCRIBE may not have reached
   * Redis (it failed during an outage): ioredis would re-subscribe them after a
   * reconnect, so they are dropped again then.
   */
  const orphaned = new Set<string>();
  let closed = false;
  let resyncing: Promise<void> | null = null;
  let resyncAgain = false;
  let resyncTimer: ReturnType<typeof setTimeout> | null = null;

  /** Runs one store operation; whatever goes wrong talking to Redis becomes a 503 for the API. */
  async function store<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw toUnavailable(err, what);
    }
  }

  function deliver(entry: ChannelEntry, state: BindState): void {
    for (const listener of [...entry.listeners]) {
      try {
        listener(state);
      } catch (err) {
        logger.warn({ err, trace_id: entry.traceId }, "state listener threw");
      }
    }
  }

  function onMessage(channel: string, message: string): void {
    const entry = channels.get(channel);
    if (!entry) return;
    const state = parsePublishedState(message, entry.traceId);
    if (!state) {
      logger.warn({ trace_id: entry.traceId }, "ignored a malformed state message");
      return;
    }
    deliver(entry, state);
  }

  /**
   * After the subscriber (re)connects, messages published while it was away are lost
   * (pub/sub keeps nothing): re-subscribe, and once that is acknowledged re-read every
   * subscribed trace's stored state and hand it to the listeners, which skip versions
   * they already have.
   */
  function scheduleResync(): void {
    if (closed) return;
    if (resyncing) {
      resyncAgain = true;
      return;
    }
    resyncing = resync().finally(() => {
      resyncing = null;
      if (resyncAgain) {
        resyncAgain = false;
        scheduleResync();
      }
    });
  }

  /** Best-effort SUNSUBSCRIBE of a channel no listener here wants; remembered for the next resync if it fails. */
  async function dropChannel(channel: string): Promise<void> {
    orphaned.add(channel);
    await subscriber.sunsubscribe(channel);
    if (!channels.has(channel)) orphaned.delete(channel);
  }

  async function resync(): Promise<void> {
    for (const channel of orphaned) if (!channels.has(channel)) void dropChannel(channel).catch(() => {});
    const entries = [...channels.values()];
    if (entries.length === 0 || closed) return;
    try {
      // ioredis re-subscribes by itself on reconnect but does not say when that is
      // done; an own SSUBSCRIBE (idempotent) is acknowledged only after it.
      await Promise.all(entries.map((entry) => subscriber.ssubscribe(entry.channel)));
      const texts = await Promise.all(entries.map((entry) => redis.get(entry.keys.state)));
      entries.forEach((entry, i) => {
        if (channels.get(entry.channel) !== entry) {
          if (!channels.has(entry.channel)) void dropChannel(entry.channel).catch(() => {});
          return;
        }
        const text = texts[i];
        const state = text ? parsePublishedState(text, entry.traceId) : null;
        if (state) deliver(entry, state);
      });
    } catch (err) {
      if (closed) return;
      logger.warn({ err }, "could not re-read subscribed traces after a reconnect; retrying");
      if (resyncTimer) clearTimeout(resyncTimer);
      resyncTimer = setTimeout(() => {
        resyncTimer = null;
        scheduleResync();
      }, RESYNC_RETRY_MS);
      resyncTimer.unref?.();
    }
  }

  subscriber.on("smessage", onMessage);
  // Redis emits "ready" after each reconnect; a Cluster's sharded subscribers announce "subscribersReady".
  subscriber.on("ready", scheduleResync);
  subscriber.on("subscribersReady", scheduleResync);

  return {
    async register(reg, initial, lastCallStartMs): Promise<RegisterResult> {
      const k = keys.trace(reg.trace_id);
      const reply = await store("register", () =>
        scripts.register(
          [k.reg, k.state, k.lease, k.lastCall, k.interest],
          [canonicalJson(reg), JSON.stringify(initial), retentionMs, lastCallStartMs ?? "", LAST_CALL_SLACK_MS],
        ),
      );
      const [kind, text] = reply as [string, string | undefined];
      if (kind === "created") return { kind: "created", state: initial };
      if (kind === "existing" && text !== undefined) return { kind: "existing", state: JSON.parse(text) as BindState };
      return { kind: "conflict" };
    },

    async getRegistration(traceId) {
      const text = await store("GET registration", () => redis.get(keys.trace(traceId).reg));
      return text === null ? null : (JSON.parse(text) as BindRegistration);
    },

    async getState(traceId) {
      const text = await store("GET state", () => redis.get(keys.trace(traceId).state));
      return text === null ? null : (JSON.parse(text) as BindState);
    },

    async updateState(traceId, mutate) {
      const k = keys.trace(traceId);
      // Optimistic: read, mutate in JS, swap only if nobody wrote in between; a lost
      // race means another update succeeded, so the retries are bounded.
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt += 1) {
        const text = await store("GET state", () => redis.get(k.state));
        if (text === null) return null;
        const current = JSON.parse(text) as BindState;
        const next = mutate(current);
        if (next === current) return current;
        const nextText = JSON.stringify(next);
        const swapped = await store("update state", () =>
          scripts.updateState(
            [k.state, k.reg],
            [
              text,
              nextText,
              next.version !== current.version ? "1" : "0",
              next.final ? "1" : "0",
              resultTtlMs,
              k.events,
            ],
          ),
        );
        if (swapped === 1) return JSON.parse(nextText) as BindState;
        if (swapped === -1) return null;
        // Spread competing writers a little so they do not collide again at once.
        await delay(Math.random() * Math.min(20, 2 ** attempt));
      }
      throw new CoordinatorUnavailableError(
        `state of trace ${traceId} kept changing under ${MAX_CAS_ATTEMPTS} update attempts`,
      );
    },

    async subscribe(traceId, listener): Promise<Unsubscribe> {
      if (closed) throw new CoordinatorUnavailableError("coordinator is closed");
      const k = keys.trace(traceId);
      let entry = channels.get(k.events);
      if (!entry) {
        const created: ChannelEntry = {
          traceId,
          channel: k.events,
          keys: k,
          listeners: new Set(),
          // Resolves on the server's acknowledgement: from then on no publish is missed.
          ready: subscriber.ssubscribe(k.events).then(() => undefined),
        };
        created.ready.catch(() => {
          if (channels.get(created.channel) !== created) return;
          channels.delete(created.channel);
          // A timed-out SSUBSCRIBE may still run once Redis is back: undo it in order after it.
          void dropChannel(created.channel).catch(() => {});
        });
        orphaned.delete(k.events);
        channels.set(k.events, created);
        entry = created;
      }
      const subscribed = entry;
      subscribed.listeners.add(listener);
      try {
        await subscribed.ready;
      } catch (err) {
        subscribed.listeners.delete(listener);
        throw toUnavailable(err, "SSUBSCRIBE");
      }
      let active = true;
      return async () => {
        if (!active) return;
        active = false;
        subscribed.listeners.delete(listener);
        if (subscribed.listeners.size > 0 || channels.get(subscribed.channel) !== subscribed) return;
        channels.delete(subscribed.channel);
        await store("SUNSUBSCRIBE", () => dropChannel(subscribed.channel));
      };
    },

    async setInterest(traceId, instanceId, untilMs) {
      const k = keys.trace(traceId);
      await store("set interest", () => scripts.setInterest([k.reg, k.interest], [instanceId, untilMs, now()]));
    },

    async hasInterest(traceId, nowMs) {
      const k = keys.trace(traceId);
      return (await store("has interest", () => scripts.hasInterest([k.reg, k.interest], [nowMs]))) === 1;
    },

    async acquireLease(traceId, ttlMs) {
      const k = keys.trace(traceId);
      const token = randomUUID();
      const acquired = await store("acquire lease", () => scripts.acquireLease([k.reg, k.lease], [token, pxOf(ttlMs)]));
      return acquired === 1 ? token : null;
    },

    async renewLease(traceId, token, ttlMs) {
      const k = keys.trace(traceId);
      return (await store("renew lease", () => scripts.renewLease([k.lease], [token, pxOf(ttlMs)]))) === 1;
    },

    async releaseLease(traceId, token) {
      const k = keys.trace(traceId);
      await store("release lease", () => scripts.releaseLease([k.lease, k.state, k.events], [token]));
    },

    async beginCall(traceId, token, nowMs, minGapMs): Promise<CallGate> {
      const k = keys.trace(traceId);
      // The start time matters only for minGap; the slack covers clock skew and stalled callers.
      const lastCallTtlMs = pxOf(minGapMs + LAST_CALL_SLACK_MS);
      const reply = await store("begin call", () =>
        scripts.beginCall([k.lease, k.lastCall], [token, nowMs, minGapMs, lastCallTtlMs]),
      );
      const [kind, untilMs] = reply as [number, number | undefined];
      if (kind === 1) return { kind: "go" };
      if (kind === 2 && untilMs !== undefined) return { kind: "wait", untilMs };
      return { kind: "lost" };
    },

    async takeCallPermit(nowMs): Promise<Permit> {
      const { budget, ban } = keys.upstream;
      const idleTtlMs = pxOf((BUDGET_CAPACITY * 1000) / opts.upstreamQps + BUDGET_IDLE_TTL_MS);
      const reply = await store("take call permit", () =>
        scripts.takePermit([budget, ban], [nowMs, opts.upstreamQps, BUDGET_CAPACITY, idleTtlMs]),
      );
      const [ok, untilMs] = reply as [number, number | undefined];
      return ok === 1 || untilMs === undefined ? { kind: "go" } : { kind: "wait", untilMs };
    },

    async banUpstream(untilMs) {
      await store("ban upstream", () => scripts.banUpstream([keys.upstream.ban], [untilMs, now()]));
    },

    async takeRegistration(key, perMinute) {
      const reply = await store("take registration", () =>
        scripts.takeRegistration([keys.quota(key)], [perMinute, "take"]),
      );
      const [ok, retryAfterMs] = reply as [number, number | undefined];
      return ok === 1 || retryAfterMs === undefined ? { kind: "go" } : { kind: "wait", retryAfterMs };
    },

    async refundRegistration(key, perMinute) {
      await store("refund registration", () => scripts.takeRegistration([keys.quota(key)], [perMinute, "refund"]));
    },

    async isReady() {
      if (closed || redis.status !== "ready" || subscriber.status !== "ready") return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([
          redis.ping(),
          new Promise<never>((_resolve, reject) => {
            timer = setTimeout(() => reject(new Error("PING timed out")), READY_TIMEOUT_MS);
          }),
        ]);
        return true;
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
      }
    },

    async close() {
      if (closed) return;
      closed = true;
      subscriber.off("smessage", onMessage);
      subscriber.off("ready", scheduleResync);
      subscriber.off("subscribersReady", scheduleResync);
      if (resyncTimer) clearTimeout(resyncTimer);
      resyncTimer = null;
      const names = [...channels.keys()];
      channels.clear();
      // Best effort: a connection that is down has no subscriptions to drop.
      await Promise.race([
        Promise.allSettled(names.map((name) => subscriber.sunsubscribe(name))),
        delay(READY_TIMEOUT_MS, undefined, { ref: false }),
      ]);
    },
  };
}

/** PX and PEXPIRE take whole milliseconds above zero. */
function pxOf(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}

function toUnavailable(err: unknown, what: string): CoordinatorUnavailableError {
  if (err instanceof CoordinatorUnavailableError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new CoordinatorUnavailableError(`Redis ${what} failed: ${detail}`, { cause: err });
}

const STATUSES: ReadonlySet<string> = new Set(BIND_STATUSES);

/** Reads a state off the wire, or `null` when the text is not one of this trace's states. */
function parsePublishedState(text: string, traceId: string): BindState | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const state = value as Record<string, unknown>;
  const ok =
    state.trace_id === traceId &&
    typeof state.status === "string" &&
    STATUSES.has(state.status) &&
    typeof state.final === "boolean" &&
    Number.isSafeInteger(state.version) &&
    (state.version as number) > 0;
  return ok ? (value as BindState) : null;
}
