import type { BindRegistration, BindState, FinalStatus } from "./bind.js";

/*
 * Telling the backend (SPEC §3, Webhooks): each final state of a bind is POSTed to its
 * webhook destinations, following the Standard Webhooks specification, until each
 * confirms, answers 410, or WEBHOOK_MAX_AGE_MS has passed since the final.
 */

export type WebhookEventType = `bind.${FinalStatus}`;

/** One destination's deliveries of one final. */
export interface DestinationState {
  readonly url: string;
  /** Attempts made so far. */
  readonly attempts: number;
  /** The next attempt is due then (ms; an instance's clock: a retry schedule may use it). */
  readonly nextAtMs: number;
  /** `null` while it is still to be delivered. */
  readonly outcome: null | "delivered" | "gone" | "gave_up";
  /** What the last failed attempt got, for logs. */
  readonly lastError?: string;
}

/** Everything stored about the webhook deliveries of one final, written with the final itself. */
export interface DeliveryRecord {
  /** `webhook-id`: one per final of one registration, the same on every attempt and destination. */
  readonly id: string;
  readonly type: WebhookEventType;
  /** The JSON payload, byte for byte the same on every attempt. */
  readonly body: string;
  readonly traceId: string;
  /** When the final was written (ms): deliveries are given up WEBHOOK_MAX_AGE_MS after it. */
  readonly finalAtMs: number;
  readonly destinations: readonly DestinationState[];
}

/** What one attempt came to. */
export type AttemptResult =
  | { readonly kind: "delivered" }
  /** 410 Gone: this destination wants no more of it. */
  | { readonly kind: "gone" }
  | { readonly kind: "failed"; readonly retryAtMs: number; readonly error: string }
  /** Failed, and the next retry would come past WEBHOOK_MAX_AGE_MS. */
  | { readonly kind: "gave_up"; readonly error: string };

/** The destinations of a bind's finals: WEBHOOK_URL for every bind, and its own `callback_url`; each once. */
export function destinationsOf(reg: BindRegistration, webhookUrl: string | undefined): string[] {
  const urls = [webhookUrl, reg.callback_url].filter((u): u is string => u !== undefined && u !== "");
  return [...new Set(urls)];
}

export function webhookTypeOf(state: BindState): WebhookEventType {
  if (state.status === "pending") throw new TypeError("a pending state has no webhook");
  return `bind.${state.status}`;
}

/** Retries back off from WEBHOOK_RETRY_MS, doubling, each with at most ±20 % jitter, never more than an hour. */
export const MAX_RETRY_DELAY_MS = 60 * 60 * 1000;

/**
 * The wait before the next attempt after `failedAttempts` failed ones (1 for the first
 * retry): `firstMs`, then about twice the previous each time, ±20 % jitter, capped.
 * @example retryDelayMs(1, 5_000, () => 0.5) // 5000
 */
export function retryDelayMs(failedAttempts: number, firstMs: number, random: () => number): number {
  const base = Math.min(MAX_RETRY_DELAY_MS, firstMs * 2 ** Math.max(0, failedAttempts - 1));
  return Math.min(MAX_RETRY_DELAY_MS, Math.round(base * (0.8 + 0.4 * random())));
}

/** The record of a fresh final: every destination due at once. */
export function newDeliveryRecord(opts: {
  readonly id: string;
  readonly state: BindState;
  readonly body: string;
  readonly destinations: readonly string[];
  readonly nowMs: number;
}): DeliveryRecord {
  return {
    id: opts.id,
    type: webhookTypeOf(opts.state),
    body: opts.body,
    traceId: opts.state.trace_id,
    finalAtMs: opts.nowMs,
    destinations: opts.destinations.map((url) => ({ url, attempts: 0, nextAtMs: opts.nowMs, outcome: null })),
  };
}

/** The record after an attempt at destination `index`. */
export function settleDestination(record: DeliveryRecord, index: number, result: AttemptResult): DeliveryRecord {
  return {
    ...record,
    destinations: record.destinations.map((d, i): DestinationState => {
      if (i !== index) return d;
      const attempts = d.attempts + 1;
      if (result.kind === "failed") {
        return { url: d.url, attempts, nextAtMs: result.retryAtMs, outcome: null, lastError: result.error };
      }
      const base = { url: d.url, attempts, nextAtMs: d.nextAtMs };
      return result.kind === "gave_up"
        ? { ...base, outcome: "gave_up", lastError: result.error }
        : { ...base, outcome: result.kind };
    }),
  };
}
