import type { BindState } from "./bind.js";

/**
 * Server-Sent Events framing (WHATWG HTML §9.2). Each state is encoded once and
 * the same text is written to every stream that watches the trace.
 */
export function encodeStateEvent(state: BindState): string {
  // JSON.stringify never emits a raw newline, so one data line always suffices.
  return `event: ${state.status}\nid: ${state.version}\ndata: ${JSON.stringify(state)}\n\n`;
}

export function encodeRetry(ms: number): string {
  return `retry: ${Math.max(0, Math.floor(ms))}\n\n`;
}

/** A comment line: keeps proxies from closing an idle stream, ignored by EventSource. */
export const PING_FRAME = ": ping\n\n";

/** Parses a Last-Event-ID value; anything that is not a non-negative integer counts as absent. */
export function parseEventId(raw: string | null | undefined): number | null {
  if (raw === null || raw === undefined) return null;
  const trimmed = raw.trim();
  if (!/^\d{1,15}$/.test(trimmed)) return null;
  return Number(trimmed);
}
