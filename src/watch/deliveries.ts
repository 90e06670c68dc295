import { type AttemptResult, type DeliveryRecord, settleDestination } from "../domain/webhook.js";

/** What a trace's webhook deliveries need now. */
export type DeliveryClaim =
  /** An attempt at `destination` is due and claimed: nobody else makes it while the claim lasts. */
  | { readonly kind: "deliver"; readonly token: string; readonly record: DeliveryRecord; readonly destination: number }
  /** Nothing to do before `atMs` (the next retry), or someone else holds the claim. */
  | { readonly kind: "later"; readonly atMs: number }
  /** The trace is not final yet; `polled`: some instance holds its poll lease. */
  | { readonly kind: "open"; readonly polled: boolean }
  /** Nothing is left: delivered, given up, forgotten, or a final with no destination. */
  | { readonly kind: "done" };

/**
 * The webhook side of the coordinator (SPEC §3, Webhooks): the deliveries of every
 * final, stored with the final itself (one atomic write; a trace_id registered again
 * after its retention adds its own), and a deployment-wide list of
 * the traces to look after — binds with destinations that are not final yet (they are
 * polled to their end) and finals with deliveries left. Any instance may look; a claim
 * makes sure one attempt of a final is in flight at a time.
 *
 * Times here are instants of the caller's clock: a retry schedule may use instance
 * clocks (SPEC §3); what must not overlap is held by the claim's relative lifetime.
 */
export interface DeliveryStore {
  /** Looks after the trace from `atMs` on, unless it is looked after already (idempotent). */
  track(traceId: string, atMs: number): Promise<void>;
  /** The traces due for a look at `nowMs`, at most `limit`. */
  due(nowMs: number, limit: number): Promise<string[]>;
  /** What the trace's deliveries need at `nowMs`; a due attempt is claimed for `claimMs`. */
  claim(traceId: string, nowMs: number, claimMs: number): Promise<DeliveryClaim>;
  /**
   * Records an attempt's result at `destination` of the record `id` under the claim
   * `token`, and releases the claim; resolves to the record afterwards, or `null` when
   * the claim was lost meanwhile.
   */
  settle(
    traceId: string,
    token: string,
    id: string,
    destination: number,
    result: AttemptResult,
  ): Promise<DeliveryRecord | null>;
  /** Gives a claim back without an attempt recorded (a stop cut the attempt): it is made again. */
  release(traceId: string, token: string): Promise<void>;
  /** The next look at the trace at `atMs`, or never again (`null`). */
  schedule(traceId: string, atMs: number | null): Promise<void>;
  /** How many traces are looked after: binds with destinations not final yet, and finals with deliveries left. */
  tracked(): Promise<number>;
  /** Every record with deliveries left, of every trace looked after (what a stop could not deliver). */
  pendingRecords(): Promise<DeliveryRecord[]>;
}

/** The first attempt due among a trace's records, or when the next one is, or `null` when nothing is left. */
export function firstDue(
  records: readonly DeliveryRecord[],
  nowMs: number,
): { readonly record: DeliveryRecord; readonly destination: number } | { readonly atMs: number } | null {
  let later: number | null = null;
  for (const record of records) {
    for (const [destination, d] of record.destinations.entries()) {
      if (d.outcome !== null) continue;
      if (d.nextAtMs <= nowMs) return { record, destination };
      later = later === null ? d.nextAtMs : Math.min(later, d.nextAtMs);
    }
  }
  return later === null ? null : { atMs: later };
}

/** A trace's records once an attempt settled: the one record changed, the done ones dropped. */
export function afterAttempt(
  records: readonly DeliveryRecord[],
  id: string,
  destination: number,
  result: AttemptResult,
): { readonly records: DeliveryRecord[]; readonly settled: DeliveryRecord | null } {
  let settled: DeliveryRecord | null = null;
  const next = records.map((r) => {
    if (r.id !== id) return r;
    settled = settleDestination(r, destination, result);
    return settled;
  });
  return { records: next.filter((r) => r.destinations.some((d) => d.outcome === null)), settled };
}
