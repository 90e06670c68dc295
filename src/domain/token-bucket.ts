/**
 * A token bucket as plain data, so the in-memory, Redis (Lua) and Durable Object
 * budgets share one rule: `ratePerSec` tokens per second, at most `capacity` saved.
 */
export interface BucketState {
  readonly tokens: number;
  readonly updatedMs: number;
}

export type BucketTake =
  | { readonly ok: true; readonly bucket: BucketState }
  | { readonly ok: false; readonly bucket: BucketState; readonly retryAtMs: number };

export function takeToken(prev: BucketState | null, nowMs: number, ratePerSec: number, capacity: number): BucketTake {
  const start = prev ?? { tokens: capacity, updatedMs: nowMs };
  const elapsed = Math.max(0, nowMs - start.updatedMs);
  const tokens = Math.min(capacity, start.tokens + (elapsed * ratePerSec) / 1000);
  if (tokens >= 1) return { ok: true, bucket: { tokens: tokens - 1, updatedMs: nowMs } };
  const retryAtMs = nowMs + Math.ceil(((1 - tokens) * 1000) / ratePerSec);
  return { ok: false, bucket: { tokens, updatedMs: nowMs }, retryAtMs };
}

/** Puts one token back (a take that turned out not to be needed), never above `capacity`. */
export function returnToken(
  prev: BucketState | null,
  nowMs: number,
  ratePerSec: number,
  capacity: number,
): BucketState {
  const start = prev ?? { tokens: capacity, updatedMs: nowMs };
  const elapsed = Math.max(0, nowMs - start.updatedMs);
  return {
    tokens: Math.min(capacity, start.tokens + (elapsed * ratePerSec) / 1000 + 1),
    updatedMs: Math.max(nowMs, start.updatedMs),
  };
}

/**
 * A registration quota as a bucket: `perMinute` tokens at most, refilled at `perMinute`
 * a minute; a refused take says how long until the next token.
 */
export function takeQuota(
  prev: BucketState | null,
  nowMs: number,
  perMinute: number,
): { readonly bucket: BucketState; readonly retryAfterMs: number | null } {
  const take = takeToken(prev, nowMs, perMinute / 60, perMinute);
  return { bucket: take.bucket, retryAfterMs: take.ok ? null : take.retryAtMs - nowMs };
}
