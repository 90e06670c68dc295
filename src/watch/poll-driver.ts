import type { BindRegistration, BindState } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import type { CheckbindOutcome } from "../domain/outcome.js";
import { applyOutcome, deadlineOf, finishState } from "../domain/state.js";
import type { CheckbindClient } from "../top/client.js";
import { retryCheckbind } from "../top/retry.js";
import type { Coordinator, UpdateOptions } from "./coordinator.js";
import type { Hub, HubDriver, HubRegistry } from "./hub.js";
import type { PermitQueue } from "./permit-queue.js";
import { sleep } from "./sleep.js";

/**
 * How a trace is polled, derived from POLL_INTERVAL_MS. A dead poller is replaced within
 * max(3 × interval, 5 s) (SPEC §4.4): its lease lapses after `leaseMs`, and an instance
 * waiting for it tries once the poller has been silent `silenceMs`.
 */
export interface PollTimings {
  readonly intervalMs: number;
  /** Consecutive calls start at least this far apart (SPEC §4.1). */
  readonly minGapMs: number;
  readonly leaseMs: number;
  /** The lease is renewed when no call has extended it for this long. */
  readonly renewAfterMs: number;
  /** A call still in flight this long after the lease was last extended is cut: another may take over. */
  readonly guardMs: number;
  /** An instance waiting for the lease tries once its holder has been silent this long. */
  readonly silenceMs: number;
  /** A driver stopped by a passing fault tries again after this long. */
  readonly retryMs: number;
  /** A call the gate held is aimed this far past the floor, the margin the cadence keeps. */
  readonly gateSlackMs: number;
}

/** Within this long a dead poller is replaced (SPEC §4.4): max(3 × interval, 5 s). */
export function takeoverMs(intervalMs: number): number {
  return Math.max(3 * intervalMs, 5_000);
}

export function pollTimings(intervalMs: number): PollTimings {
  const takeover = takeoverMs(intervalMs);
  const leaseMs = Math.floor(takeover * 0.6);
  return {
    intervalMs,
    minGapMs: Math.ceil(0.8 * intervalMs),
    leaseMs,
    // Past the next call of the normal cadence (≤ 1.1 × interval ≤ 0.62 × leaseMs): no renewal in steady state.
    renewAfterMs: Math.floor(leaseMs * 0.75),
    guardMs: leaseMs - 300,
    silenceMs: leaseMs + 250,
    retryMs: Math.max(50, Math.min(intervalMs, Math.floor(takeover * 0.15))),
    gateSlackMs: Math.ceil(0.1 * intervalMs),
  };
}

export interface PollObserver {
  onCall?(outcome: CheckbindOutcome["kind"], durationMs: number): void;
}

export interface DriverEnv {
  readonly coordinator: Coordinator;
  readonly client: CheckbindClient;
  readonly logger: Logger;
  readonly observer: PollObserver | undefined;
  readonly timings: PollTimings;
  readonly random: () => number;
  readonly permits: PermitQueue;
  readonly hubs: HubRegistry;
  readonly instanceId: string;
  /** Whether this instance wants the trace polled now (watchers, linger, webhook destinations). */
  wanted(hub: Hub): boolean;
  /** The webhook deliveries of the trace's final, written with it (`undefined`: it has no destination). */
  deliveriesOf(hub: Hub): UpdateOptions["deliveries"];
  /** A final state was written here. */
  finalWritten(hub: Hub, state: BindState): void;
  /** The instance is shutting down: drivers stop and are not restarted. */
  stopping(): boolean;
}

class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
}

/** The gate says the deadline has passed on the store's clock. */
class DeadlinePassedError extends Error {
  override readonly name = "DeadlinePassedError";
}

interface Lease {
  readonly token: string;
  /** When (this instance's clock) the lease was last extended, counted from the request's sending. */
  extendedAt: number;
}

/**
 * Runs the poll of one trace on this instance while it is wanted here: competes for
 * the trace's lease, and while it holds it calls TOP once per interval through the
 * deployment's budget and call gate, writing each answer to the stored state. Which
 * instance polls is the coordinator's lease, so the same code is single flight alone in
 * memory and across a cluster.
 *
 * The poll is built once its first permit comes: until then the trace holds only its
 * place in the permit queue, with no lease and no channel subscription. Past
 * UPSTREAM_QPS most registered traces wait there, and building every poll at once (its
 * lease, timers and retry machinery, waiting on an AbortSignal) was a third of a
 * registration's CPU (`npm run bench -- --only register`).
 */
export function startDriver(hub: Hub, env: DriverEnv): HubDriver {
  let running: HubDriver | null = null;
  let stopped = false;
  let settle: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    settle = resolve;
  });
  // Started in a microtask, as a waiter of a promise would be: not inside the code that handed the permit on.
  const leave = env.permits.enqueue(() =>
    queueMicrotask(() => {
      if (stopped) {
        env.permits.handOn();
        return;
      }
      running = runDriver(hub, env);
      running.done.then(settle, settle);
    }),
  );
  return {
    done,
    stop(reason) {
      stopped = true;
      if (running) {
        running.stop(reason);
        return;
      }
      leave();
      settle();
    },
    wake() {
      running?.wake();
    },
    holdsLease: () => running?.holdsLease() ?? false,
  };
}

/** The poll of startDriver, with its first permit in hand. */
function runDriver(hub: Hub, env: DriverEnv): HubDriver {
  const { coordinator, logger, timings } = env;
  const { traceId } = hub;
  const log = { trace_id: traceId, instance: env.instanceId };
  const controller = new AbortController();
  const signal = controller.signal;
  let lease: Lease | null = null;
  /** Aborts the call in flight: the lease can no longer be vouched for. */
  let callGuard: AbortController | null = null;
  let renewTimer: ReturnType<typeof setTimeout> | null = null;
  let waking: (() => void) | null = null;
  let lastCallStartedAt: number | null = null;
  /** True while this poll waits its turn for the call budget. */
  let awaitingPermit = false;
  /**
   * Answers that made no new version and are not written yet: the next call's gate writes
   * them in the same step (one write a call, SPEC §8), or the next write that must go at once.
   */
  let carried: { readonly outcome: CheckbindOutcome; readonly at: number }[] = [];
  const withCarried = (state: BindState): BindState =>
    carried.reduce((s, c) => applyOutcome(s, c.outcome, c.at), state);

  // ---- the lease --------------------------------------------------------------

  function dropLease(why: string): void {
    if (!lease) return;
    lease = null;
    if (renewTimer) clearTimeout(renewTimer);
    renewTimer = null;
    callGuard?.abort(new LeaseLostError(why));
    logger.info({ ...log, why }, "poll lease lost");
  }

  function extended(at: number): void {
    if (!lease) return;
    lease.extendedAt = at;
    armRenewal();
  }

  /** Renews the lease when no call extended it for renewAfterMs; past guardMs unrenewed, gives it up. */
  function armRenewal(): void {
    if (renewTimer) clearTimeout(renewTimer);
    const held = lease;
    if (!held) return;
    const due = held.extendedAt + timings.renewAfterMs - Date.now();
    renewTimer = setTimeout(
      () => {
        renewTimer = null;
        if (lease !== held) return;
        if (awaitingPermit) {
          // Past UPSTREAM_QPS a poll may wait far longer than a lease for its turn: it lets
          // the lease go rather than renew it all that time (one renewal every renewAfterMs
          // for every waiting poll was most of an instance's work past the budget), and
          // takes it again with its permit. No call is in flight while a permit is awaited.
          lease = null;
          coordinator.releaseLease(traceId, held.token, timings.minGapMs).catch((err: unknown) => {
            logger.warn({ ...log, err }, "lease release failed");
          });
          logger.debug(log, "poll lease let go while waiting for the budget");
          return;
        }
        if (Date.now() - held.extendedAt >= timings.guardMs) {
          dropLease("not renewed in time");
          return;
        }
        const sentAt = Date.now();
        coordinator.renewLease(traceId, held.token, timings.leaseMs).then(
          (ok) => {
            if (lease !== held) return;
            if (ok) extended(sentAt);
            else dropLease("taken over");
          },
          (err: unknown) => {
            if (lease !== held) return;
            logger.warn({ ...log, err }, "lease renewal failed");
            // Try again soon; past guardMs the lease is given up.
            renewTimer = setTimeout(armRenewal, Math.min(500, timings.guardMs / 4));
          },
        );
      },
      Math.max(0, due),
    );
  }

  /**
   * Waits for a chance at the lease: its release is announced (`wake`), or its holder has
   * been silent for silenceMs — counted from the last sign of life on the channel, or from
   * the holder's last extension as `heldMs` tells it — and its lease has lapsed.
   */
  async function waitForLease(heldMs: number): Promise<void> {
    const woken = new AbortController();
    waking = () => woken.abort();
    const wait = AbortSignal.any([signal, woken.signal]);
    const extendedAt = Date.now() - (timings.leaseMs - heldMs);
    try {
      for (;;) {
        const due = Math.max(hub.lastSignAt, extendedAt) + timings.silenceMs - Date.now();
        if (due <= 0) return;
        await sleep(due, wait);
      }
    } catch (err) {
      if (!woken.signal.aborted || signal.aborted) throw err;
    } finally {
      waking = null;
    }
  }

  // ---- one poll -----------------------------------------------------------------

  async function registrationOf(): Promise<BindRegistration | null> {
    hub.registration ??= await coordinator.getRegistration(traceId);
    return hub.registration;
  }

  /** Writes `mutate` over the carried answers, at once; they are written with it. */
  async function writeNow(
    mutate: (state: BindState) => BindState,
    opts?: { readonly notBeforeMs?: number },
  ): Promise<BindState | null> {
    const pending = carried;
    const deliveries = env.deliveriesOf(hub);
    const next = await coordinator.updateState(
      traceId,
      (s) => mutate(pending.reduce((acc, c) => applyOutcome(acc, c.outcome, c.at), s)),
      { ...opts, ...(deliveries ? { deliveries } : {}) },
    );
    if (next && carried === pending && !(opts?.notBeforeMs !== undefined && next.final === false)) carried = [];
    return next;
  }

  /**
   * Applies an answer: at once when it changes what watchers see (a new version), else
   * carried to the next call's gate, which writes it with the call's start.
   */
  async function record(outcome: CheckbindOutcome): Promise<BindState | null> {
    if (outcome.kind === "rate_limited") {
      await coordinator.banUpstream(outcome.banMs);
      logger.warn({ ...log, ban_ms: outcome.banMs }, "TOP rate limit: upstream calls held off");
    }
    const at = coordinator.now();
    const seen = hub.last;
    if (seen) {
      const preview = applyOutcome(withCarried(seen), outcome, at);
      if (preview.version === seen.version && !preview.final) {
        carried = [...carried, { outcome, at }];
        return seen;
      }
    }
    const before = hub.last;
    const next = await writeNow((s) => applyOutcome(s, outcome, at));
    if (next) {
      env.hubs.offer(hub, next);
      if (next.final && !before?.final) env.finalWritten(hub, next);
    }
    return next;
  }

  /** Ends the trace as `expired`, once the store's clock has passed its deadline. */
  async function expire(state: BindState): Promise<BindState | null> {
    const next = await writeNow((s) => finishState(s, "expired", coordinator.now()), {
      notBeforeMs: deadlineOf(state),
    });
    if (next) {
      env.hubs.offer(hub, next);
      if (next.final && next.version !== state.version) env.finalWritten(hub, next);
    }
    return next;
  }

  /**
   * One poll: calls TOP (retrying transient trouble with backoff) until an answer that is
   * not an error, applying each answer to the stored state. "expired" when the gate says
   * the deadline has passed on the store's clock.
   */
  async function pollOnce(reg: BindRegistration, state: BindState): Promise<{ startedAt: number } | "expired"> {
    let startedAt = Date.now();
    // The first permit is waited for before the retry machinery is set up (see run()).
    let permitted = true;
    const attempt = async (): Promise<CheckbindOutcome> => {
      for (;;) {
        signal.throwIfAborted();
        const held = lease;
        if (!held) throw new LeaseLostError("lease lost");
        if (permitted) permitted = false;
        else await takePermit();
        if (lease !== held) {
          env.permits.handOn();
          throw new LeaseLostError("lease let go while waiting for the budget");
        }
        const sentAt = Date.now();
        const pending = carried;
        const gate = await coordinator.beginCall(
          traceId,
          held.token,
          { minGapMs: timings.minGapMs, leaseMs: timings.leaseMs, deadlineMs: deadlineOf(state) },
          pending.length > 0 ? (s) => pending.reduce((acc, c) => applyOutcome(acc, c.outcome, c.at), s) : undefined,
        );
        if (gate.kind === "go" && gate.state && carried === pending) carried = [];
        if (gate.kind === "lost") {
          dropLease("the gate does not know this holder");
          throw new LeaseLostError("lease lost");
        }
        if (gate.kind === "expired") throw new DeadlinePassedError("deadline");
        if (gate.kind === "wait") {
          // Aim past the floor by the margin the normal cadence keeps (≥ 0.9 × interval), so
          // a call delayed on its way does not land at the gateway under 0.8 × interval.
          await sleep(gate.ms + timings.gateSlackMs, signal);
          continue;
        }
        extended(sentAt);
        startedAt = Date.now();
        lastCallStartedAt = startedAt;
        callGuard = new AbortController();
        try {
          const outcome = await env.client.checkbind(reg, AbortSignal.any([signal, callGuard.signal]));
          env.observer?.onCall?.(outcome.kind, Date.now() - startedAt);
          logger.debug({ ...log, outcome: outcome.kind }, "checkbind answered");
          return outcome;
        } catch (err) {
          if (callGuard.signal.aborted) throw callGuard.signal.reason;
          throw err;
        } finally {
          callGuard = null;
        }
      }
    };

    // A backoff or a held gate must not outlast the deadline: wake then and ask the gate.
    // One controller stopped by the driver's signal or the deadline, linked by hand: every
    // registration starts a poll, and AbortSignal.any was a tenth of a registration's CPU.
    const pollStop = new AbortController();
    const onStop = () => pollStop.abort(signal.reason);
    signal.addEventListener("abort", onStop, { once: true });
    const deadlineTimer = setTimeout(
      () => pollStop.abort(new DeadlinePassedError("deadline")),
      Math.max(0, deadlineOf(state) - coordinator.now()),
    );
    try {
      const outcome = await retryCheckbind(attempt, {
        intervalMs: timings.intervalMs,
        signal: pollStop.signal,
        onRetry: async (retryable) => {
          await record(retryable);
        },
      });
      await record(outcome);
      return { startedAt };
    } catch (err) {
      if (err instanceof DeadlinePassedError || (pollStop.signal.aborted && !signal.aborted)) return "expired";
      throw err;
    } finally {
      clearTimeout(deadlineTimer);
      signal.removeEventListener("abort", onStop);
    }
  }

  // ---- the loop -------------------------------------------------------------------

  /** The store lost a trace this instance still serves: put it back as last seen here, and go on. */
  async function reassert(): Promise<boolean> {
    const reg = hub.registration;
    const last = hub.last;
    if (!reg || !last || last.final || !env.wanted(hub)) return false;
    const ago = lastCallStartedAt === null ? null : Date.now() - lastCallStartedAt;
    const stored = await coordinator.reassert(reg, last, ago);
    if (stored) env.hubs.offer(hub, stored);
    logger.warn(log, "trace missing from the store; re-asserted it");
    return stored !== null;
  }

  /** Waits this poll's turn for the call budget (SPEC §4.5). */
  async function takePermit(): Promise<void> {
    awaitingPermit = true;
    try {
      await env.permits.acquire(signal);
    } finally {
      awaitingPermit = false;
    }
  }

  /**
   * Subscribes the trace's channel if nothing here has (a registration waits for its first
   * permit without one), then reads the stored state: nothing published between is missed.
   */
  async function subscribed(): Promise<void> {
    if (hub.ready) return hub.ready;
    await env.hubs.subscribe(hub);
    const stored = await coordinator.getState(traceId);
    if (stored) env.hubs.offer(hub, stored);
  }

  /** The state to poll from, or null when the trace needs no more polling here. */
  const pollable = (): BindState | null => {
    const state = hub.last;
    return state && !state.final && env.wanted(hub) ? state : null;
  };

  /** The permit startDriver waited for, used by the first pass of the loop. */
  let permitInHand = true;

  async function run(): Promise<void> {
    while (!signal.aborted && !env.stopping()) {
      try {
        if (permitInHand) permitInHand = false;
        else {
          if (!pollable()) return;
          // Past UPSTREAM_QPS polls queue for the budget; one waits here with nothing set up but
          // its place in the queue, and no lease unless it held one for less than renewAfterMs
          // (the permit wait never woke at the deadline, inside or out). The lease comes with
          // the permit.
          await takePermit();
        }
        await subscribed();
        const state = pollable();
        if (!state) {
          env.permits.handOn();
          return;
        }
        if (!lease) {
          const take = await coordinator.acquireLease(traceId, timings.leaseMs);
          if (take.kind === "missing") {
            env.permits.handOn();
            if (await reassert()) continue;
            return;
          }
          if (take.kind === "held") {
            // Another instance polls it: the permit goes to the next poll in line here.
            env.permits.handOn();
            await waitForLease(take.ms);
            continue;
          }
          lease = { token: take.token, extendedAt: Date.now() };
          armRenewal();
          logger.debug(log, "poll lease acquired");
        }
        const reg = await registrationOf();
        if (!reg) {
          env.permits.handOn();
          if (await reassert()) continue;
          return;
        }
        const polled = await pollOnce(reg, state);
        if (polled === "expired") {
          const ended = await expire(state);
          if (ended === null && !(await reassert())) return;
          continue;
        }
        if (hub.last?.final) return;
        // Cadence is counted from the start of the last call so the cost stays one call per interval.
        const jittered = timings.intervalMs * (0.9 + 0.2 * env.random());
        await sleep(Math.max(timings.minGapMs, jittered) - (Date.now() - polled.startedAt), signal);
      } catch (err) {
        if (signal.aborted || env.stopping()) return;
        if (err instanceof LeaseLostError) {
          dropLease(err.message);
          continue;
        }
        logger.warn({ ...log, err }, "poll driver error; retrying");
        try {
          await sleep(timings.retryMs, signal);
        } catch {
          return;
        }
      }
    }
  }

  const done = run().finally(async () => {
    if (renewTimer) clearTimeout(renewTimer);
    renewTimer = null;
    // Answers still carried are written before the poll ends here.
    if (carried.length > 0) {
      await writeNow((s) => s).catch((err: unknown) =>
        logger.warn({ ...log, err }, "could not write the last answers"),
      );
    }
    const held = lease;
    lease = null;
    if (!held) return;
    await coordinator.releaseLease(traceId, held.token, timings.minGapMs).catch((err: unknown) => {
      logger.warn({ ...log, err }, "lease release failed");
    });
  });

  return {
    done,
    stop(reason) {
      controller.abort(reason);
    },
    wake() {
      waking?.();
    },
    holdsLease: () => lease !== null,
  };
}
