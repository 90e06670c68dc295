/**
 * The deployment-wide call budget (UPSTREAM_QPS) as one number: the earliest time the
 * next call may start. Each call moves it one interval on, so calls are paced evenly
 * (no burst: no second ever holds more than UPSTREAM_QPS); a TOP rate-limit ban moves it
 * to the ban's end. The in-memory, Redis (Lua) and Durable Object budgets share this rule.
 */
export type PaceTake =
  | { readonly ok: true; readonly nextAtMs: number }
  | { readonly ok: false; readonly nextAtMs: number; readonly waitMs: number };

/** One call out of a budget of one every `intervalMs` (1000 / UPSTREAM_QPS). */
export function takePace(nextAtMs: number, nowMs: number, intervalMs: number): PaceTake {
  if (nextAtMs > nowMs) return { ok: false, nextAtMs, waitMs: Math.ceil(nextAtMs - nowMs) };
  return { ok: true, nextAtMs: nowMs + intervalMs };
}

/** No call before `banMs` from now; a ban never shortens a longer one. */
export function banPace(nextAtMs: number, nowMs: number, banMs: number): number {
  return Math.max(nextAtMs, nowMs + banMs);
}
