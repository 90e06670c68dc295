import type { UpstreamInfo } from "../../src/domain/bind.js";
import type { CheckbindOutcome } from "../../src/domain/outcome.js";

/** What a checkbind answer said, as the TOP client reads it; `fields` override the defaults. */
export function upstreamInfo(fields: Partial<UpstreamInfo> = {}): UpstreamInfo {
  return { ret_code: 0, message: "", request_id: "r", eagleeye_id: "e", ...fields };
}

/** A success answer that is not bound yet. */
export const WAITING: CheckbindOutcome = { kind: "waiting", upstream: upstreamInfo() };
/** A success answer that says bound. */
export const BOUND: CheckbindOutcome = { kind: "bound", upstream: upstreamInfo() };
