import type { UpstreamInfo } from "./bind.js";

/**
 * What one checkbind exchange meant, after the classification table of SPEC §2.
 * The TOP client produces these; the scheduler turns them into state changes.
 */
export type CheckbindOutcome =
  /** success, result and ret_value both true */
  | { readonly kind: "bound"; readonly upstream: UpstreamInfo }
  /** success, not bound yet (ret_value not true, or result false with a non-terminal ret_code) */
  | { readonly kind: "waiting"; readonly upstream: UpstreamInfo }
  /** success, result false with a ret_code listed in TERMINAL_RET_CODES */
  | { readonly kind: "failed"; readonly upstream: UpstreamInfo }
  /** error_response that says the request itself is wrong */
  | { readonly kind: "rejected"; readonly message: string; readonly requestId: string }
  /** error_response codes 4–8: the app key is banned for `banMs` */
  | { readonly kind: "rate_limited"; readonly banMs: number; readonly message: string; readonly requestId: string }
  /** upstream fault, HTTP trouble, timeout or an unreadable body: retry with backoff */
  | { readonly kind: "transient"; readonly message: string; readonly requestId: string };

export type CheckbindOutcomeKind = CheckbindOutcome["kind"];

/** Outcomes after which another call must wait for backoff or a ban. */
export function isRetryableOutcome(
  outcome: CheckbindOutcome,
): outcome is Extract<CheckbindOutcome, { kind: "transient" | "rate_limited" }> {
  return outcome.kind === "transient" || outcome.kind === "rate_limited";
}
