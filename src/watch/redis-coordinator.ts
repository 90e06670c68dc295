import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { Cluster, Redis } from "ioredis";
import type { BindRegistration, BindState } from "../domain/bind.js";
import { BIND_STATUSES } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { silentLogger } from "../domain/logger.js";
import { createInitialState, registrationText } from "../domain/state.js";
import type {
  CallGate,
  Coordinator,
  LeaseTake,
  Permit,
  QuotaTake,
  RegisterResult,
  TraceEvent,
  Unsubscribe,
} from "./coordinator.js";
import { CoordinatorUnavailableError } from "./coordinator.js";
import { createRedisDeliveryStore } from "./redis-deliveries.js";
import type { TraceKeys } from "./redis-keys.js";
import { createRedisKeys } from "./redis-keys.js";
import { defineCoordinatorScripts, MAX_CAS_ATTEMPTS, pxOf } from "./redis-scripts.js";

export interface RedisCoordinatorOptions {
  /** The command connection (standalone, Sentinel or Cluster). Owned by the caller: `close()` does not quit it. */
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
  /**
   * No call begins for this long after the command connection was lost and came back
   * (a failover, a restart): the promoted replica may lack the last lease write, and a
   * call begun before it may still be in flight (SPEC §4.9). At least the poll lease.
   */
  readonly failoverQuietMs?: number;
  /** How long the webhook deliveries of a final are kept (WEBHOOK_MAX_AGE_MS and some); default 25 h. */
  readonly deliveryRetentionMs?: number;
  /** Counts every request sent to Redis (a script or a pipeline being one), by operation. */
  readonly onRequest?: (operation: string) => void;
  readonly logger?: Logger;
}

/** `isReady()` answers false when PING takes longer than this. */
const READY_TIMEOUT_MS = 1_000;
/** A failed re-read after a reconnect is tried again after this long. */
const RESYNC_RETRY_MS = 1_000;
/** A placeholder of the initial state that register.lua replaces with TIME (no trace_id can hold braces). */
const NOW_PLACEHOLDER = "{{now}}";
const DEADLINE_PLACEHOLDER = "{{deadline}}";
/** WEBHOOK_MAX_AGE_MS's default (a day) and an hour. */
const DEFAULT_DELIVERY_RETENTION_MS = 25 * 60 * 60 * 1000;

interface ChannelEntry {
  readonly traceId: string;
  readonly channel: string;
  readonly keys: TraceKeys;
  readonly listeners: Set<(event: TraceEvent) => void>;
  readonly ready: Promise<void>;
  /** The state text last seen (own writes, messages, reads): the expected text of the next swap. */
  known: string | null;
}

/**
 * The coordinator of a deployment that shares one Redis (standalone, Sentinel or
 * Cluster, Redis >= 7.0): every trace's keys carry the hash tag `{<trace_id>}`, each
 * operation is one Lua script (src/watch/lua/) that reads the clock it compares with
 * (TIME), and state changes fan out through sharded pub/sub.
 *
 * What a call costs (SPEC §8), one round trip each: the budget (take-permit) and the gate
 * (begin-call, which renews the lease and writes the previous answer when it made no new
 * version); an answer that changes the version is written at once (update-state). Every
 * write is published; instances waiting for the lease send nothing, since the published
 * writes show them the poller is alive, and a release is announced.
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
  const logger = opts.logger ?? silentLogger;
  const keys = createRedisKeys(opts.prefix);
  const scripts = defineCoordinatorScripts(redis);
  const retentionMs = Math.ceil(opts.retentionMs);
  const resultTtlMs = Math.ceil(opts.resultTtlMs);
  const paceMs = 1000 / opts.upstreamQps;
  const quietMs = opts.failoverQuietMs ?? 0;
  const deliveryRetentionMs = Math.ceil(opts.deliveryRetentionMs ?? DEFAULT_DELIVERY_RETENTION_MS);

  /** The Redis clock minus this instance's, as the last script that read TIME said. */
  let offsetMs = 0;
  /** No call begins before this time (this instance's clock): a failover's quiet period. */
  let quietUntil = 0;
  let wasReady = false;

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

  /** Runs one request to Redis; whatever goes wrong talking to Redis becomes a 503 for the API. */
  async function store<T>(what: string, run: () => Promise<T>): Promise<T> {
    opts.onRequest?.(what);
    try {
      return await run();
    } catch (err) {
      throw toUnavailable(err, what);
    }
  }

  function learnClock(redisNowMs: unknown): void {
    if (typeof redisNowMs === "number" && Number.isFinite(redisNowMs)) offsetMs = redisNowMs - Date.now();
  }

  const channelOf = (traceId: string) => channels.get(keys.trace(traceId).events);

  function deliver(entry: ChannelEntry, event: TraceEvent): void {
    for (const listener of [...entry.listeners]) {
      try {
        listener(event);
      } catch (err) {
        logger.warn({ err, trace_id: entry.traceId }, "trace listener threw");
      }
    }
  }

  function onMessage(channel: string, message: string): void {
    const entry = channels.get(channel);
    if (!entry) return;
    const event = parseTraceMessage(message, entry.traceId);
    if (!event) {
      logger.warn({ trace_id: entry.traceId }, "ignored a malformed trace message");
      return;
    }
    if (event.kind === "state") entry.known = message.slice(1);
    deliver(entry, event);
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
        const state = text ? parseState(text, entry.traceId) : null;
        if (!state || !text) return;
        entry.known = text;
        deliver(entry, { kind: "state", state });
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

  /**
   * The command connection was lost after it had served: whatever Redis answers next
   * (a promoted replica, a restarted server) may lack the last writes, the lease among
   * them, while a call begun before may still run. No call begins for the quiet period.
   */
  function onConnectionLost(): void {
    if (!wasReady || closed) return;
    quietUntil = Math.max(quietUntil, Date.now() + quietMs);
    logger.warn({ quiet_ms: quietMs }, "Redis connection lost: no call begins for the quiet period");
  }
  const onReady = () => {
    wasReady = true;
  };

  subscriber.on("smessage", onMessage);
  // Redis emits "ready" after each reconnect; a Cluster's sharded subscribers announce "subscribersReady".
  subscriber.on("ready", scheduleResync);
  subscriber.on("subscribersReady", scheduleResync);
  redis.on("ready", onReady);
  if (redis.status === "ready") wasReady = true;
  // A standalone or Sentinel connection closes; a Cluster reports each node's trouble.
  redis.on("close", onConnectionLost);
  redis.on("-node", onConnectionLost);
  redis.on("node error", onConnectionLost);
  // The clock before the first script says it: states written meanwhile carry it.
  void redis.time().then(
    ([seconds, micros]) => learnClock(Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)),
    () => {},
  );

  const deliveries = createRedisDeliveryStore({ redis, keys, scripts, store });

  return {
    now: () => Date.now() + offsetMs,
    deliveries,

    async register(reg, timeoutMs): Promise<RegisterResult> {
      const k = keys.trace(reg.trace_id);
      const template = {
        ...createInitialState(reg, 0, timeoutMs),
        created_at: NOW_PLACEHOLDER,
        updated_at: NOW_PLACEHOLDER,
        expires_at: DEADLINE_PLACEHOLDER,
      };
      const reply = await store("register", () =>
        scripts.register(
          [k.reg, k.state, k.poll],
          [registrationText(reg), JSON.stringify(template), Math.ceil(timeoutMs), retentionMs],
        ),
      );
      const [kind, text] = reply as [string, string | undefined];
      if (kind === "conflict" || text === undefined) return { kind: "conflict" };
      const state = JSON.parse(text) as BindState;
      const entry = channelOf(reg.trace_id);
      if (entry) entry.known = text;
      return kind === "created" ? { kind: "created", state } : { kind: "existing", state };
    },

    async reassert(reg, state, lastCallAgoMs) {
      const k = keys.trace(reg.trace_id);
      const retention = Math.max(resultTtlMs, Date.parse(state.expires_at) - (Date.now() + offsetMs) + resultTtlMs);
      const text = await store("reassert", () =>
        scripts.reassert(
          [k.reg, k.state, k.poll],
          [
            registrationText(reg),
            JSON.stringify(state),
            Math.ceil(retention),
            lastCallAgoMs === null ? "" : Math.max(0, Math.floor(lastCallAgoMs)),
            retentionMs,
          ],
        ),
      );
      if (typeof text !== "string") return null;
      const entry = channelOf(reg.trace_id);
      if (entry) entry.known = text;
      return JSON.parse(text) as BindState;
    },

    async getRegistration(traceId) {
      const text = await store("get registration", () => redis.get(keys.trace(traceId).reg));
      return text === null ? null : (JSON.parse(text) as BindRegistration);
    },

    async getState(traceId) {
      const text = await store("get state", () => redis.get(keys.trace(traceId).state));
      const entry = channelOf(traceId);
      if (entry && text !== null) entry.known = text;
      return text === null ? null : (JSON.parse(text) as BindState);
    },

    async updateState(traceId, mutate, updateOpts) {
      const k = keys.trace(traceId);
      const entry = channelOf(traceId);
      // Optimistic: swap from the text last seen; a lost race answers the stored text, so
      // the retry needs no read of its own. Each loss means another update succeeded.
      let text = entry?.known ?? (await store("get state", () => redis.get(k.state)));
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt += 1) {
        if (text === null) return null;
        const current = JSON.parse(text) as BindState;
        const next = mutate(current);
        if (next === current) return current;
        const nextText = JSON.stringify(next);
        const expected: string = text;
        const record = next.final ? (updateOpts?.deliveries?.(next) ?? null) : null;
        const reply = await store("update state", () =>
          scripts.updateState(
            [k.state, k.reg, k.deliveries],
            [
              expected,
              nextText,
              next.final ? "1" : "0",
              resultTtlMs,
              k.events,
              updateOpts?.notBeforeMs ?? "",
              record ? JSON.stringify(record) : "",
              deliveryRetentionMs,
            ],
          ),
        );
        const [code, stored] = reply as [number, string | undefined];
        if (code === 1) {
          if (entry) entry.known = nextText;
          return JSON.parse(nextText) as BindState;
        }
        if (code === -1) return null;
        if (code === 2) return current;
        text = stored ?? null;
        if (entry && text !== null) entry.known = text;
        // Spread competing writers a little so they do not collide again at once.
        if (attempt > 0) await delay(Math.random() * Math.min(20, 2 ** attempt));
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
          ready: store("subscribe", () => subscriber.ssubscribe(k.events)).then(() => undefined),
          known: null,
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
        await store("unsubscribe", () => dropChannel(subscribed.channel));
      };
    },

    async acquireLease(traceId, leaseMs): Promise<LeaseTake> {
      const k = keys.trace(traceId);
      const token = randomUUID();
      const reply = await store("acquire lease", () => scripts.acquireLease([k.reg, k.poll], [token, pxOf(leaseMs)]));
      const [code, ms] = reply as [number, number | undefined];
      if (code === 1) return { kind: "acquired", token };
      if (code === 2) return { kind: "held", ms: Math.max(0, ms ?? 0) };
      return { kind: "missing" };
    },

    async renewLease(traceId, token, leaseMs) {
      const k = keys.trace(traceId);
      return (await store("renew lease", () => scripts.renewLease([k.poll], [token, pxOf(leaseMs), k.events]))) === 1;
    },

    async releaseLease(traceId, token, minGapMs) {
      const k = keys.trace(traceId);
      await store("release lease", () => scripts.releaseLease([k.poll], [token, Math.ceil(minGapMs), k.events]));
    },

    async beginCall(traceId, token, call, carry): Promise<CallGate> {
      const quiet = quietUntil - Date.now();
      if (quiet > 0) return { kind: "wait", ms: quiet };
      const k = keys.trace(traceId);
      // The carried change is swapped from the text last seen; without one it waits for a write of its own.
      const entry = channelOf(traceId);
      const expected = carry ? (entry?.known ?? null) : null;
      let nextText = "";
      if (expected !== null && carry) {
        const current = JSON.parse(expected) as BindState;
        const next = carry(current);
        if (next !== current) nextText = JSON.stringify(next);
      }
      const reply = await store("begin call", () =>
        scripts.beginCall(
          [k.poll, k.state],
          [
            token,
            Math.ceil(call.minGapMs),
            pxOf(call.leaseMs),
            Math.floor(call.deadlineMs),
            nextText === "" ? "" : (expected ?? ""),
            nextText,
            k.events,
          ],
        ),
      );
      const [code, a, b, stored] = reply as [number, number | undefined, number | undefined, string | undefined];
      if (code === 1) {
        learnClock(a);
        if (b === 1 && entry) {
          entry.known = nextText;
          return { kind: "go", state: JSON.parse(nextText) as BindState };
        }
        if (b === 0 && entry && typeof stored === "string") entry.known = stored;
        return { kind: "go" };
      }
      if (code === 2) {
        learnClock(b);
        return { kind: "wait", ms: Math.max(1, a ?? 1) };
      }
      if (code === 3) {
        learnClock(a);
        return { kind: "expired" };
      }
      return { kind: "lost" };
    },

    async takeCallPermit(): Promise<Permit> {
      const reply = await store("take permit", () => scripts.takePermit([keys.upstream.budget], [paceMs]));
      const [ok, ms] = reply as [number, number | undefined];
      return ok === 1 || ms === undefined ? { kind: "go" } : { kind: "wait", ms };
    },

    async banUpstream(ms) {
      await store("ban upstream", () => scripts.banUpstream([keys.upstream.budget], [Math.ceil(ms)]));
    },

    async takeRegistration(key, perMinute): Promise<QuotaTake> {
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
      redis.off("ready", onReady);
      redis.off("close", onConnectionLost);
      redis.off("-node", onConnectionLost);
      redis.off("node error", onConnectionLost);
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

function toUnavailable(err: unknown, what: string): CoordinatorUnavailableError {
  if (err instanceof CoordinatorUnavailableError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new CoordinatorUnavailableError(`Redis ${what} failed: ${detail}`, { cause: err });
}

const STATUSES: ReadonlySet<string> = new Set(BIND_STATUSES);

/** Reads a state off the wire, or `null` when the text is not one of this trace's states. */
function parseState(text: string, traceId: string): BindState | null {
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

/** A message of a trace's channel (see redis-keys.ts), or `null` when it is not one. */
function parseTraceMessage(message: string, traceId: string): TraceEvent | null {
  if (message === "a") return { kind: "alive" };
  if (message === "r") return { kind: "released" };
  if (!message.startsWith("s")) return null;
  const state = parseState(message.slice(1), traceId);
  return state ? { kind: "state", state } : null;
}
