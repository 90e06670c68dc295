import type { Logger } from "../domain/logger.js";
import { type AttemptResult, type DeliveryRecord, retryDelayMs } from "../domain/webhook.js";
import type { WebhookSender } from "../webhook/sender.js";
import type { DeliveryStore } from "./deliveries.js";

export interface WebhookTimings {
  /** WEBHOOK_RETRY_MS: the first retry's wait; each next one about twice the previous. */
  readonly retryMs: number;
  /** WEBHOOK_MAX_AGE_MS: no attempt this long after the final. */
  readonly maxAgeMs: number;
  /** WEBHOOK_TIMEOUT_MS: an attempt's claim lasts this and some. */
  readonly timeoutMs: number;
  /** How often a bind with destinations that is not final yet is checked to be polled. */
  readonly checkMs: number;
}

export interface WebhookObserver {
  onAttempt?(outcome: AttemptResult["kind"], durationMs: number): void;
}

export interface WebhookDispatcherDeps {
  readonly store: DeliveryStore;
  readonly send: WebhookSender;
  readonly timings: WebhookTimings;
  /** Polls here a bind with destinations nobody polls (its instance died): it is wanted until final. */
  readonly adopt: (traceId: string) => Promise<void>;
  readonly logger: Logger;
  readonly observer?: WebhookObserver;
  readonly random?: () => number;
  /** How often the deployment's list is looked at for what is due. */
  readonly tickMs?: number;
  /** Attempts in flight at once from this instance. */
  readonly concurrency?: number;
}

/** An attempt's claim outlives its timeout by this much: the result must be settled under it. */
const CLAIM_SLACK_MS = 5_000;
/** Looks at one trace in a row at most this many times (one per destination and final, usually). */
const MAX_LOOKS_IN_A_ROW = 8;
/** Retries due within this long are looked at on a timer of their own; later ones at a tick. */
const RETRY_TIMER_HORIZON_MS = 60_000;
/** How long a graceful stop lets attempts in flight finish before it cuts them and hands them back. */
const STOP_GRACE_MS = 3_000;

/**
 * Sends the webhooks of the deployment's finals (SPEC §3): every instance looks at the
 * list of traces due, claims one attempt at a time per final, sends it signed, and
 * records the result — delivered, gone (410), or failed with the next retry scheduled
 * on the backoff, or given up past WEBHOOK_MAX_AGE_MS. A bind with destinations that is
 * not final yet is checked to be polled, and adopted when nobody polls it.
 *
 * @example const dispatcher = createWebhookDispatcher({ store: coordinator.deliveries, send, timings, adopt, logger }); dispatcher.start();
 */
export function createWebhookDispatcher(deps: WebhookDispatcherDeps) {
  const { store, timings, logger } = deps;
  const random = deps.random ?? Math.random;
  const tickMs = deps.tickMs ?? 1_000;
  const concurrency = deps.concurrency ?? 16;
  const claimMs = timings.timeoutMs + CLAIM_SLACK_MS;
  const inProgress = new Map<string, Promise<void>>();
  const inFlight = new Map<string, AbortController>();
  const retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  let timer: ReturnType<typeof setTimeout> | null = null;
  /** No new look is started (a stop has begun). */
  let closing = false;
  /** Looks under way end after their current step. */
  let stopped = false;
  let ticking = false;

  function resultOf(
    record: DeliveryRecord,
    destination: number,
    sent: Awaited<ReturnType<WebhookSender>>,
    nowMs: number,
  ): AttemptResult {
    if (sent.kind === "delivered") return { kind: "delivered" };
    if (sent.kind === "gone") return { kind: "gone" };
    const failedAttempts = (record.destinations[destination]?.attempts ?? 0) + 1;
    const retryAtMs = nowMs + retryDelayMs(failedAttempts, timings.retryMs, random);
    if (retryAtMs > record.finalAtMs + timings.maxAgeMs) return { kind: "gave_up", error: sent.error };
    return { kind: "failed", retryAtMs, error: sent.error };
  }

  /** One attempt, claimed: send, then record what it came to. */
  async function attempt(traceId: string, token: string, record: DeliveryRecord, destination: number): Promise<void> {
    const url = record.destinations[destination]?.url ?? "";
    const controller = new AbortController();
    inFlight.set(traceId, controller);
    const started = Date.now();
    let sent: Awaited<ReturnType<WebhookSender>>;
    try {
      sent = await deps.send(url, record, controller.signal);
    } finally {
      inFlight.delete(traceId);
    }
    if (controller.signal.aborted) {
      // Cut by a graceful stop: handed back untouched, another instance makes it.
      await store.release(traceId, token).catch(() => {});
      return;
    }
    const result = resultOf(record, destination, sent, Date.now());
    deps.observer?.onAttempt?.(result.kind, Date.now() - started);
    const log = {
      trace_id: traceId,
      webhook_id: record.id,
      destination: url,
      attempts: (record.destinations[destination]?.attempts ?? 0) + 1,
    };
    if (result.kind === "gave_up") {
      logger.error({ ...log, error: result.error }, "webhook given up: no delivery within WEBHOOK_MAX_AGE_MS");
    } else if (result.kind === "gone") {
      logger.info(log, "webhook destination answered 410 Gone: this final is not sent there again");
    } else if (result.kind === "failed") {
      logger.warn(
        { ...log, error: result.error, retry_in_ms: result.retryAtMs - Date.now() },
        "webhook attempt failed",
      );
    } else {
      logger.info(log, "webhook delivered");
    }
    await store.settle(traceId, token, record.id, destination, result);
  }

  /** Looks at one trace: attempts what is due, and says when to look next. */
  async function look(traceId: string, nowFor: () => number = Date.now): Promise<void> {
    for (let i = 0; i < MAX_LOOKS_IN_A_ROW && !stopped; i += 1) {
      const claim = await store.claim(traceId, nowFor(), claimMs);
      if (claim.kind === "deliver") {
        await attempt(traceId, claim.token, claim.record, claim.destination);
        continue;
      }
      if (claim.kind === "later") {
        await store.schedule(traceId, claim.atMs);
        lookAt(traceId, claim.atMs);
        return;
      }
      if (claim.kind === "open") {
        if (!claim.polled) {
          logger.info({ trace_id: traceId }, "a bind with webhook destinations has no poller: polling it here");
          await deps.adopt(traceId);
        }
        await store.schedule(traceId, Date.now() + timings.checkMs);
        return;
      }
      // Done — unless a new final's record came in between: look once more after dropping it.
      await store.schedule(traceId, null);
      const again = await store.claim(traceId, nowFor(), claimMs);
      if (again.kind === "done") return;
      if (again.kind === "deliver") await store.release(traceId, again.token);
      await store.schedule(traceId, Date.now());
      return;
    }
  }

  /** A retry due soon is looked at on time here, not at the next tick (the list still has it, for any instance). */
  function lookAt(traceId: string, atMs: number): void {
    const waitMs = atMs - Date.now();
    if (closing || waitMs > RETRY_TIMER_HORIZON_MS || retryTimers.has(traceId)) return;
    const retry = setTimeout(
      () => {
        retryTimers.delete(traceId);
        lookSoon(traceId);
      },
      Math.max(0, waitMs),
    );
    retry.unref?.();
    retryTimers.set(traceId, retry);
  }

  function lookSoon(traceId: string): void {
    if (closing || inProgress.has(traceId)) return;
    const run = look(traceId)
      .catch((err: unknown) => logger.warn({ err, trace_id: traceId }, "webhook look failed; it stays listed"))
      .finally(() => inProgress.delete(traceId));
    inProgress.set(traceId, run);
  }

  async function tick(): Promise<void> {
    if (ticking || closing) return;
    ticking = true;
    try {
      const room = concurrency - inProgress.size;
      if (room > 0) for (const traceId of await store.due(Date.now(), room)) lookSoon(traceId);
    } catch (err) {
      logger.warn({ err }, "could not read the webhooks due");
    } finally {
      ticking = false;
      if (!closing) {
        timer = setTimeout(() => void tick(), tickMs);
        timer.unref?.();
      }
    }
  }

  return {
    start(): void {
      void tick();
    },

    /** A final with destinations was just written here: look at its deliveries now. */
    kick(traceId: string): void {
      lookSoon(traceId);
    },

    /** Lists a bind with destinations, to be looked after until its deliveries are done. */
    track(traceId: string): Promise<void> {
      return store.track(traceId, Date.now() + timings.checkMs);
    },

    /**
     * Stops looking. Attempts in flight get a moment to finish, then are cut and handed
     * back; with `flushUntilMs` (a single instance in memory, whose deliveries end with
     * it) every delivery left is attempted at once until then, and those still
     * undelivered are returned.
     */
    async stop(flushUntilMs?: number): Promise<DeliveryRecord[]> {
      closing = true;
      if (timer) clearTimeout(timer);
      for (const retry of retryTimers.values()) clearTimeout(retry);
      retryTimers.clear();
      timer = null;
      const grace = new Promise<void>((resolve) => setTimeout(resolve, STOP_GRACE_MS).unref?.());
      await Promise.race([Promise.allSettled([...inProgress.values()]), grace]);
      if (flushUntilMs !== undefined) {
        while (Date.now() < flushUntilMs) {
          const due = await store.due(Number.MAX_SAFE_INTEGER, concurrency);
          if (due.length === 0) break;
          const rounds = due.map((traceId) =>
            look(traceId, () => Number.MAX_SAFE_INTEGER).catch((err: unknown) =>
              logger.warn({ err, trace_id: traceId }, "webhook look failed"),
            ),
          );
          const left = flushUntilMs - Date.now();
          await Promise.race([
            Promise.allSettled(rounds),
            new Promise((resolve) => setTimeout(resolve, Math.max(0, left))),
          ]);
        }
      }
      stopped = true;
      for (const controller of inFlight.values()) controller.abort(new Error("stopping"));
      await Promise.allSettled([...inProgress.values()]);
      return flushUntilMs === undefined ? [] : store.pendingRecords();
    },

    /** Looks at one trace now (the edge's alarm). */
    look,
  };
}

export type WebhookDispatcher = ReturnType<typeof createWebhookDispatcher>;
