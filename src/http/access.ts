// node:crypto: available on Node and, under nodejs_compat, on workerd.
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/** Compares two secrets in constant time (hashing first makes the lengths equal). */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a, "utf8").digest();
  const y = createHash("sha256").update(b, "utf8").digest();
  return timingSafeEqual(x, y);
}

/** True when `presented` equals one of the keys; every key is compared so timing reveals nothing. */
export function matchesAnyKey(presented: string, keys: readonly string[]): boolean {
  let ok = false;
  for (const key of keys) ok = constantTimeEqual(presented, key) || ok;
  return ok;
}

/** The credential of `Authorization: Bearer <credential>`, or null. */
export function bearerOf(header: string | undefined): string | null {
  const m = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header ?? "");
  return m?.[1] ?? null;
}

function signature(secret: string, traceId: string, expiresSec: number): string {
  return createHmac("sha256", secret).update(`bw1\n${traceId}\n${expiresSec}`, "utf8").digest("base64url");
}

/**
 * A watch token: `<expiry, base-36 seconds>.<HMAC-SHA256 over trace_id and expiry>`,
 * URL-safe and short. It opens the watch endpoints of one trace until it expires.
 * @example const token = createWatchToken(secret, "trace-1", Date.now() + 600_000);
 */
export function createWatchToken(secret: string, traceId: string, expiresAtMs: number): string {
  const expiresSec = Math.ceil(expiresAtMs / 1000);
  return `${expiresSec.toString(36)}.${signature(secret, traceId, expiresSec)}`;
}

export type TokenCheck = { ok: true } | { ok: false; reason: "malformed" | "expired" | "invalid" };

export function verifyWatchToken(secret: string, traceId: string, token: string, nowMs: number): TokenCheck {
  const m = /^([0-9a-z]{1,10})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m?.[1] || !m[2]) return { ok: false, reason: "malformed" };
  const expiresSec = Number.parseInt(m[1], 36);
  if (!constantTimeEqual(m[2], signature(secret, traceId, expiresSec))) return { ok: false, reason: "invalid" };
  if (expiresSec * 1000 <= nowMs) return { ok: false, reason: "expired" };
  return { ok: true };
}

/** Drops the query string of a URL or path before it is logged: watch tokens travel there (SPEC §7). */
export function redactUrl(url: string): string {
  const i = url.indexOf("?");
  return i === -1 ? url : `${url.slice(0, i)}?[redacted]`;
}

/**
 * Whose registration quota a POST counts against: a digest of its API key (the key itself
 * is never stored), or one shared quota for open access.
 * @example quotaKeyOf("key-1") // "k:…" (16 characters of SHA-256)
 */
export function quotaKeyOf(apiKey: string | null): string {
  if (apiKey === null) return "open";
  return `k:${createHash("sha256").update(apiKey, "utf8").digest("base64url").slice(0, 16)}`;
}
