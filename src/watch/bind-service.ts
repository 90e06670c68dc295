import { randomUUID } from "node:crypto";
import type { BindRegistration, BindState } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { silentLogger } from "../domain/logger.js";
import type { CheckbindOutcome } from "../domain/outcome.js";
import { encodeStateEvent } from "../domain/sse.js";
import { applyOutcome, createInitialState, deadlineOf, finishState } from "../domain/state.js";
import type { CheckbindClient } from "../top/client.js";
import { retryCheckbind } from "../top/retry.js";
import type { Coordinator, RegisterResult, Unsubscribe } from "./coordinator.js";
import { createPermitQueue } from "./permit-queue.js";
import { sleep } from "./sleep.js";

export interface WatchConfig {
  readonly pollIntervalMs: number;
  readonly pollLingerMs: number;
  readonly bindTimeoutMs: number;
  readonly resultTtlMs: number;
}

/** Hooks for metrics; every one optional. */
export interface ServiceObserver {
  onCall?(outcome: CheckbindOutcome["kind"], durationMs: number): void;
  onFinished?(status: BindState["status"]): void;
}

export interface BindServiceDeps {
  readonly coordinator: Coordinator;
  readonly client: CheckbindClient;
  readonly config: WatchConfig;
  readonly logger?: Logger;
  readonly observer?: ServiceObserver;
  readonly instanceId?: string;
  readonly random?: () => number;
}

/** Receives each new state of a watched trace with its SSE frame, encoded once for all watchers. */
export type WatchSink = (state: BindState, frame: Uint8Array) => void;

export interface Attachment {
  /** The state when the watcher attached. */
  readonly state: BindState;
  /** Detaches the watcher; safe to call more than once. */
  detach(): void;
}

/** A registration quota (REGISTRATIONS_PER_MINUTE) to count a new registration against. */
export interface RegistrationQuota {
  /** Whose quota: a digest of the API key, never the key itself. */
  readonly key: string;
  readonly perMinute: number;
}

export type RegisterOutcome = RegisterResult | { readonly kind: "rate_limited"; readonly retryAfterMs: number };

export interface ServiceStats {
  readonly hubs: number;
  readonly watchers: number;
  readonly drivers: number;
  readonly leases: number;
}

interface WatcherEntry {
  readonly sink: WatchSink;
  lastSent: number;
}

interface Driver {
  readonly controller: AbortController;
  /** Cuts the wait for the lease short: the holder released it. */
  wake: (() => void) | null;
  token: string | null;
  renewTimer: ReturnType<typeof setInterval> | null;
  done: Promise<void>;
}

interface Hub {
  readonly traceId: string;
  readonly watchers: Set<WatcherEntry>;
  /** The registration, once known here: re-asserted if the store loses it. */
  registration: BindRegistration | null;
  ready: Promise<void> | null;
  unsubscribe: Unsubscribe | null;
  last: BindState | null;
  frame: Uint8Array;
  lingerUntil: number;
  lingerTimer: ReturnType<typeof setTimeout> | null;
  interestTimer: ReturnType<typeof setInterval> | null;
  driver: Driver | null;
  restartTimer: ReturnType<typeof setTimeout> | null;
}

const encoder = new TextEncoder();
const EMPTY_FRAME = new Uint8Array(0);

class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
}

/**
 * The per-instance side of bindwatch: registers binds, attaches watchers to a
 * per-trace hub (one coordinator subscription per trace and instance), and runs
 * the poll driver of each trace this instance has interest in. Which instance
 * actually calls TOP is decided by the coordinator's lease, so the same code
 * is single flight alone in memory and across a Redis cluster.
 *
 * @example
 * const service = createBindService({ coordinator, client, config });
 * await service.register(reg);
 * const attachment = await service.attach(reg.trace_id, 0, (state, frame) => stream.write(frame));
 */
export function createBindService(deps: BindServiceDeps) {
  const { coordinator, client, config } = deps;
  const logger = deps.logger ?? silentLogger;
  const random = deps.random ?? Math.random;
  const instanceId = deps.instanceId ?? randomUUID();
  const interval = config.pollIntervalMs;
  // A dead poller is replaced within max(3 × interval, 5 s) (SPEC §4.4): its lease
  // lapses after leaseTtl and a competitor retries every leaseRetry.
  const takeoverMs = Math.max(3 * interval, 5_000);
  const leaseTtlMs = Math.floor(takeoverMs * 0.6);
  const leaseRetryMs = Math.max(50, Math.min(interval, Math.floor(takeoverMs * 0.15)));
  const interestTtlMs = leaseTtlMs;
  const minGapMs = Math.ceil(0.8 * interval);
  const gateSlackMs = Math.ceil(0.1 * interval);

  const hubs = new Map<string, Hub>();
  const permits = createPermitQueue(coordinator, logger);
  let stopping = false;

  function hubFor(traceId: string): Hub {
    let hub = hubs.get(traceId);
    if (!hub) {
      hub = {
        traceId,
        watchers: new Set(),
        registration: null,
        ready: null,
        unsubscribe: null,
        last: null,
        frame: EMPTY_FRAME,
        lingerUntil: 0,
        lingerTimer: null,
        interestTimer: null,
        driver: null,
        restartTimer: null,
      };
      hubs.set(traceId, hub);
    }
    return hub;
  }

  function subscribeHub(hub: Hub): Promise<void> {
    hub.ready ??= coordinator
      .subscribe(hub.traceId, (state) => {
        offer(hub, state);
        // A re-published state with no new version follows a lease release: compete now.
        hub.driver?.wake?.();
      })
      .then((unsubscribe) => {
        if (hubs.get(hub.traceId) !== hub) void unsubscribe();
        else hub.unsubscribe = unsubscribe;
      })
      .catch((err: unknown) => {
        hub.ready = null;
        throw err;
      });
    return hub.ready;
  }

  function hasLocalInterest(hub: Hub): boolean {
    return hub.watchers.size > 0 || hub.lingerUntil > Date.now();
  }

  /** Drops the hub once nothing local needs it: no watcher, no linger, no driver. */
  function collect(hub: Hub): void {
    if (hub.watchers.size > 0 || hub.driver || hub.lingerTimer || hub.restartTimer) return;
    if (hubs.get(hub.traceId) === hub) hubs.delete(hub.traceId);
    if (hub.interestTimer) clearInterval(hub.interestTimer);
    hub.interestTimer = null;
    const unsubscribe = hub.unsubscribe;
    hub.unsubscribe = null;
    if (unsubscribe)
      void unsubscribe().catch((err: unknown) => logger.warn({ err, trace_id: hub.traceId }, "unsubscribe failed"));
  }

  /** Takes a state seen anywhere (own poll, pub/sub, a read) and hands it to watchers once per version. */
  function offer(hub: Hub, state: BindState): void {
    if (hub.last && state.version <= hub.last.version) return;
    hub.last = state;
    hub.frame = encoder.encode(encodeStateEvent(state));
    for (const watcher of [...hub.watchers]) deliver(hub, watcher);
    if (state.final) {
      hub.driver?.controller.abort(new Error("final"));
      hub.lingerUntil = 0;
      if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
      hub.lingerTimer = null;
      collect(hub);
    }
  }

  function deliver(hub: Hub, watcher: WatcherEntry): void {
    const last = hub.last;
    if (!last || last.version <= watcher.lastSent) return;
    watcher.lastSent = last.version;
    try {
      watcher.sink(last, hub.frame);
    } catch (err) {
      logger.warn({ err, trace_id: hub.traceId }, "watcher sink threw");
    }
  }

  function announceInterest(traceId: string, untilMs: number): void {
    void coordinator
      .setInterest(traceId, instanceId, untilMs)
      .catch((err: unknown) => logger.warn({ err, trace_id: traceId }, "could not record interest"));
  }

  function startLinger(hub: Hub): void {
    const until = Date.now() + config.pollLingerMs;
    armLinger(hub, until);
    announceInterest(hub.traceId, until);
  }

  /** Keeps the hub (and its driver) wanted here until `untilMs`. */
  function armLinger(hub: Hub, untilMs: number): void {
    hub.lingerUntil = untilMs;
    if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
    hub.lingerTimer = setTimeout(
      () => {
        hub.lingerTimer = null;
        collect(hub);
      },
      untilMs - Date.now() + 1,
    );
  }

  /** Subscribes the hub, then reads the stored state (deadline applied): a change in between is not missed. */
  async function subscribeAndRead(hub: Hub): Promise<BindState | null> {
    try {
      await subscribeHub(hub);
      const stored = await coordinator.getState(hub.traceId);
      return stored ? await expireIfDue(hub.traceId, stored) : null;
    } catch (err) {
      collect(hub);
      throw err;
    }
  }

  /** Applies the deadline to a stored state that nobody moved past it (SPEC §2: → expired). */
  async function expireIfDue(traceId: string, state: BindState): Promise<BindState> {
    if (state.final || Date.now() < deadlineOf(state)) return state;
    const next = await coordinator.updateState(traceId, (s) =>
      !s.final && Date.now() >= deadlineOf(s) ? finishState(s, "expired", Date.now()) : s,
    );
    if (next?.final && next.version !== state.version) deps.observer?.onFinished?.(next.status);
    return next ?? state;
  }

  // ---- the poll driver -------------------------------------------------------

  function ensureDriver(hub: Hub): void {
    if (hub.driver || stopping || hub.last?.final) return;
    const driver: Driver = {
      controller: new AbortController(),
      wake: null,
      token: null,
      renewTimer: null,
      done: Promise.resolve(),
    };
    hub.driver = driver;
    driver.done = runDriver(hub, driver).finally(() => {
      if (driver.renewTimer) clearInterval(driver.renewTimer);
      driver.renewTimer = null;
      if (hub.driver === driver) hub.driver = null;
      const token = driver.token;
      driver.token = null;
      const released = token
        ? coordinator.releaseLease(hub.traceId, token).catch((err: unknown) => {
            logger.warn({ err, trace_id: hub.traceId }, "lease release failed");
          })
        : Promise.resolve();
      // A driver that stopped for a passing reason (lost lease, store outage) comes back while the trace is wanted here.
      if (!stopping && !hub.last?.final && hasLocalInterest(hub) && !hub.restartTimer) {
        hub.restartTimer = setTimeout(() => {
          hub.restartTimer = null;
          if (hasLocalInterest(hub)) ensureDriver(hub);
          else collect(hub);
        }, leaseRetryMs);
      }
      collect(hub);
      return released;
    });
  }

  async function runDriver(hub: Hub, driver: Driver): Promise<void> {
    const { traceId } = hub;
    const signal = driver.controller.signal;
    const log = { trace_id: traceId, instance: instanceId };
    while (!signal.aborted && !stopping) {
      try {
        const reg = await coordinator.getRegistration(traceId);
        const stored = reg ? await coordinator.getState(traceId) : null;
        if (!reg || !stored) {
          // The store lost a trace this instance still serves (Redis restarted empty):
          // put back the registration and the newest state seen, and go on polling.
          if (hub.registration && hub.last && !hub.last.final && hasLocalInterest(hub)) {
            // Counted as a call just made: whoever polls next keeps the spacing to calls before the loss.
            await coordinator.register(hub.registration, hub.last, Date.now());
            logger.warn(log, "trace missing from the store; re-asserted it");
            continue;
          }
          return;
        }
        hub.registration = reg;
        const state = await expireIfDue(traceId, stored);
        offer(hub, state);
        if (state.final) return;
        const wanted =
          hasLocalInterest(hub) || (driver.token !== null && (await coordinator.hasInterest(traceId, Date.now())));
        if (!wanted) return;

        if (!driver.token) {
          driver.token = await coordinator.acquireLease(traceId, leaseTtlMs);
          if (!driver.token) {
            await waitForLease(driver, signal);
            continue;
          }
          logger.debug(log, "poll lease acquired");
          startRenewal(hub, driver);
        }

        const outcome = await pollOnce(hub, driver, reg, deadlineOf(state));
        if (outcome === "deadline") continue;
        if (outcome.final) return;
        // Cadence is counted from the start of the last call so the cost stays one call per interval.
        const jittered = interval * (0.9 + 0.2 * random());
        await sleep(Math.max(minGapMs, jittered) - (Date.now() - outcome.startedAt), signal);
      } catch (err) {
        if (signal.aborted || stopping) return;
        if (err instanceof LeaseLostError) {
          logger.info(log, "poll lease lost");
          driver.token = null;
          continue;
        }
        logger.warn({ ...log, err }, "poll driver error; retrying");
        try {
          await sleep(leaseRetryMs, signal);
        } catch {
          return;
        }
      }
    }
  }

  /** Waits one retry period for another try at the lease, or less when its release is announced. */
  async function waitForLease(driver: Driver, signal: AbortSignal): Promise<void> {
    const woken = new AbortController();
    driver.wake = () => woken.abort();
    try {
      await sleep(leaseRetryMs, AbortSignal.any([signal, woken.signal]));
    } catch (err) {
      if (!woken.signal.aborted || signal.aborted) throw err;
    } finally {
      driver.wake = null;
    }
  }

  function startRenewal(hub: Hub, driver: Driver): void {
    if (driver.renewTimer) clearInterval(driver.renewTimer);
    driver.renewTimer = setInterval(
      () => {
        const token = driver.token;
        if (!token) return;
        coordinator.renewLease(hub.traceId, token, leaseTtlMs).then(
          (ok) => {
            if (!ok && driver.token === token) {
              driver.token = null;
              logger.warn({ trace_id: hub.traceId }, "poll lease lost on renewal");
            }
          },
          (err: unknown) => logger.warn({ err, trace_id: hub.traceId }, "lease renewal failed"),
        );
      },
      Math.floor(leaseTtlMs / 3),
    );
  }

  /**
   * One poll: calls TOP (retrying transient trouble with backoff) until an answer
   * that is not an error, applying each answer to the stored state.
   */
  async function pollOnce(
    hub: Hub,
    driver: Driver,
    reg: BindRegistration,
    deadline: number,
  ): Promise<{ final: boolean; startedAt: number } | "deadline"> {
    const { traceId } = hub;
    const deadlineController = new AbortController();
    const deadlineTimer = setTimeout(
      () => deadlineController.abort(new Error("deadline")),
      Math.max(0, deadline - Date.now()),
    );
    const signal = AbortSignal.any([driver.controller.signal, deadlineController.signal]);
    let startedAt = Date.now();

    const record = async (outcome: CheckbindOutcome, at: number) => {
      if (outcome.kind === "rate_limited") {
        await coordinator.banUpstream(at + outcome.banMs);
        logger.warn({ trace_id: traceId, ban_ms: outcome.banMs }, "TOP rate limit: upstream calls held off");
      }
      const next = await coordinator.updateState(traceId, (s) => applyOutcome(s, outcome, at));
      if (next) {
        offer(hub, next);
        if (next.final) deps.observer?.onFinished?.(next.status);
      }
      return next;
    };

    const attempt = async (): Promise<CheckbindOutcome> => {
      for (;;) {
        signal.throwIfAborted();
        const token = driver.token;
        if (!token) throw new LeaseLostError("lease lost");
        await permits.acquire(signal);
        const gate = await coordinator.beginCall(traceId, token, Date.now(), minGapMs);
        if (gate.kind === "lost") throw new LeaseLostError("lease lost");
        if (gate.kind === "wait") {
          // Aim past the floor by the same margin the normal cadence keeps (≥ 0.9 × interval),
          // so a call delayed on its way does not land at the gateway under 0.8 × interval.
          await sleep(gate.untilMs + gateSlackMs - Date.now(), signal);
          continue;
        }
        startedAt = Date.now();
        const outcome = await client.checkbind(reg, signal);
        deps.observer?.onCall?.(outcome.kind, Date.now() - startedAt);
        logger.debug({ trace_id: traceId, outcome: outcome.kind }, "checkbind answered");
        return outcome;
      }
    };

    try {
      const outcome = await retryCheckbind(attempt, {
        intervalMs: interval,
        signal,
        onRetry: async (retryable) => {
          await record(retryable, Date.now());
        },
      });
      const next = await record(outcome, Date.now());
      return { final: next?.final ?? true, startedAt };
    } catch (err) {
      if (deadlineController.signal.aborted && !driver.controller.signal.aborted) return "deadline";
      throw err;
    } finally {
      clearTimeout(deadlineTimer);
    }
  }

  // ---- the service API -------------------------------------------------------

  return {
    instanceId,

    /**
     * Registers a bind attempt (idempotent) and starts polling it for POLL_LINGER_MS.
     * With a quota, only a new registration counts: an identical repeat (the idempotent
     * 200) and a conflict do not, and a take lost to a concurrent identical POST is given back.
     */
    async register(reg: BindRegistration, quota?: RegistrationQuota): Promise<RegisterOutcome> {
      let taken = false;
      if (quota && !(await coordinator.getRegistration(reg.trace_id))) {
        const take = await coordinator.takeRegistration(quota.key, quota.perMinute);
        if (take.kind === "wait") return { kind: "rate_limited", retryAfterMs: take.retryAfterMs };
        taken = true;
      }
      const result = await coordinator.register(reg, createInitialState(reg, Date.now(), config.bindTimeoutMs));
      if (quota && taken && result.kind !== "created") await coordinator.refundRegistration(quota.key, quota.perMinute);
      if (result.kind === "conflict") return result;
      const hub = hubFor(reg.trace_id);
      hub.registration = reg;
      let state = result.state;
      try {
        await subscribeHub(hub);
        state = await expireIfDue(reg.trace_id, result.state);
        offer(hub, state);
      } catch (err) {
        collect(hub);
        throw err;
      }
      if (!state.final) {
        startLinger(hub);
        ensureDriver(hub);
      } else {
        collect(hub);
      }
      return { kind: result.kind, state };
    },

    /**
     * Polls a trace again that this instance lost track of while stored interest still
     * wants it until `untilMs` — e.g. a Durable Object evicted during the linger and
     * woken by its alarm. A no-op when a driver already runs or the trace is final.
     */
    async resume(traceId: string, untilMs: number): Promise<void> {
      const hub = hubFor(traceId);
      const state = await subscribeAndRead(hub);
      if (state) offer(hub, state);
      if (!state || hub.last?.final || (untilMs <= Date.now() && hub.watchers.size === 0)) {
        collect(hub);
        return;
      }
      if (untilMs > hub.lingerUntil) armLinger(hub, untilMs);
      ensureDriver(hub);
    },

    /** The stored state, with the deadline applied; `null` when unknown or forgotten. */
    async getState(traceId: string): Promise<BindState | null> {
      const state = await coordinator.getState(traceId);
      return state ? expireIfDue(traceId, state) : null;
    },

    /**
     * Attaches a watcher: `sink` gets every state with a version above `afterVersion`,
     * starting with the current one. Resolves to `null` for an unknown trace. A watcher
     * of a final trace gets the final state and is not kept.
     */
    async attach(traceId: string, afterVersion: number, sink: WatchSink): Promise<Attachment | null> {
      const hub = hubFor(traceId);
      const watcher: WatcherEntry = { sink, lastSent: afterVersion };
      const state = await subscribeAndRead(hub);
      if (!state) {
        collect(hub);
        return null;
      }
      offer(hub, state);
      const current = hub.last ?? state;
      if (current.final) {
        deliver(hub, watcher);
        collect(hub);
        return { state: current, detach() {} };
      }
      hub.watchers.add(watcher);
      deliver(hub, watcher);
      if (hub.watchers.size === 1) {
        if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
        hub.lingerTimer = null;
        announceInterest(traceId, Date.now() + interestTtlMs);
        if (hub.interestTimer) clearInterval(hub.interestTimer);
        hub.interestTimer = setInterval(
          () => announceInterest(traceId, Date.now() + interestTtlMs),
          Math.floor(interestTtlMs / 3),
        );
      }
      ensureDriver(hub);
      let attached = true;
      return {
        state: current,
        detach() {
          if (!attached) return;
          attached = false;
          hub.watchers.delete(watcher);
          if (hub.watchers.size > 0) return;
          if (hub.interestTimer) clearInterval(hub.interestTimer);
          hub.interestTimer = null;
          if (hub.last?.final) collect(hub);
          else startLinger(hub);
        },
      };
    },

    /**
     * Long-poll: the state once its version is above `afterVersion` or it is final,
     * else after `waitMs` whatever it is. `null` for an unknown trace.
     */
    async waitForChange(
      traceId: string,
      afterVersion: number,
      waitMs: number,
      signal?: AbortSignal,
    ): Promise<BindState | null> {
      const state = await this.getState(traceId);
      if (!state || state.final || state.version > afterVersion || waitMs <= 0 || signal?.aborted) return state;
      let resolveChange: (s: BindState) => void = () => {};
      const changed = new Promise<BindState>((resolve) => {
        resolveChange = resolve;
      });
      const attachment = await this.attach(traceId, afterVersion, (s) => resolveChange(s));
      if (!attachment) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      let onAbort: (() => void) | undefined;
      try {
        return await Promise.race([
          changed,
          new Promise<BindState>((resolve) => {
            const settle = () => resolve(hubs.get(traceId)?.last ?? attachment.state);
            timer = setTimeout(settle, waitMs);
            onAbort = settle;
            signal?.addEventListener("abort", onAbort, { once: true });
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        attachment.detach();
      }
    },

    /** Cancels a pending bind; watchers get the final `cancelled` event. `null` when unknown. */
    async cancel(traceId: string): Promise<BindState | null> {
      const before = await coordinator.getState(traceId);
      if (!before) return null;
      const next = await coordinator.updateState(traceId, (s) => finishState(s, "cancelled", Date.now()));
      if (next) {
        const hub = hubs.get(traceId);
        if (hub) offer(hub, next);
        if (next.final && !before.final) deps.observer?.onFinished?.(next.status);
      }
      return next;
    },

    stats(): ServiceStats {
      let watchers = 0;
      let drivers = 0;
      let leases = 0;
      for (const hub of hubs.values()) {
        watchers += hub.watchers.size;
        if (hub.driver) drivers += 1;
        if (hub.driver?.token) leases += 1;
      }
      return { hubs: hubs.size, watchers, drivers, leases };
    },

    /** Stops every driver and releases every lease so another instance takes over at once (SPEC §4.6). */
    async shutdown(): Promise<void> {
      stopping = true;
      const done: Promise<void>[] = [];
      for (const hub of hubs.values()) {
        if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
        if (hub.restartTimer) clearTimeout(hub.restartTimer);
        if (hub.interestTimer) clearInterval(hub.interestTimer);
        hub.lingerTimer = hub.restartTimer = hub.interestTimer = null;
        if (hub.driver) {
          hub.driver.controller.abort(new Error("shutdown"));
          done.push(hub.driver.done);
        }
      }
      await Promise.allSettled(done);
      for (const hub of [...hubs.values()]) {
        hub.watchers.clear();
        collect(hub);
      }
    },
  };
}

export type BindService = ReturnType<typeof createBindService>;
