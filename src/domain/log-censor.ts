/*
 * What a log line may not show, for every runtime's logger: secrets are censored, an
 * open_id is masked.
 */

/** Masks an open_id to its first and last two characters: enough to correlate, not to identify. */
export function maskOpenId(openId: string): string {
  if (openId.length <= 4) return "***";
  return `${openId.slice(0, 2)}***${openId.slice(-2)}`;
}

/**
 * Keys whose values never reach a log line, at any depth a logged object has (config
 * objects nest Redis credentials two levels down): TOP and API secrets, tokens,
 * signatures, Authorization headers, Redis and Sentinel passwords.
 */
const SECRET_KEYS = new Set([
  "app_secret",
  "appSecret",
  "secret",
  "token",
  "authorization",
  "api_key",
  "sign",
  "session",
  "password",
  "sentinelPassword",
]);
const CENSORED = "[redacted]";
/** Deeper than this, a logged object is not walked (none of bindwatch's is). */
const MAX_DEPTH = 4;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * `value` with every secret key censored and open_id masked (errors through `mapError`
 * when given, else left to the logger); the object itself when nothing in it needs to
 * change, so a line of plain fields (most lines) costs no copy. Used by the Node logger
 * (pino) and the Worker's console logger. Written here instead of pino's `redact`: its
 * redactor (@pinojs/redact) walks every configured path, wildcards included, on every
 * line, and that was 4 % of a registration's CPU (`npm run bench -- --only register --profile`).
 */
export function censorSecrets(value: unknown, mapError?: (err: Error) => unknown, depth = 0): unknown {
  if (mapError && value instanceof Error) return mapError(value);
  if (depth > MAX_DEPTH || !isPlainObject(value)) return value;
  let out: Record<string, unknown> | null = null;
  for (const key of Object.keys(value)) {
    const v = value[key];
    let next: unknown;
    if (SECRET_KEYS.has(key)) next = CENSORED;
    else if (key === "open_id" && typeof v === "string") next = maskOpenId(v);
    else next = censorSecrets(v, mapError, depth + 1);
    if (next !== v) {
      out ??= { ...value };
      out[key] = next;
    }
  }
  return out ?? value;
}
