import { type DestinationStream, type Logger as PinoLogger, pino, destination as pinoDestination } from "pino";
import pretty from "pino-pretty";

/** Masks an open_id to its first and last two characters: enough to correlate, not to identify. */
export function maskOpenId(openId: string): string {
  if (openId.length <= 4) return "***";
  return `${openId.slice(0, 2)}***${openId.slice(-2)}`;
}

/**
 * Keys whose values never reach a line, at any depth a logged object has (config objects
 * nest Redis credentials two levels down): TOP and API secrets, tokens, signatures,
 * Authorization headers, Redis and Sentinel passwords.
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
 * `value` with every secret key censored and open_id masked; the object itself when
 * nothing in it needs to change, so a line of plain fields (most lines) costs no copy.
 * Written here instead of pino's `redact`: its redactor (@pinojs/redact) walks every
 * configured path, wildcards included, on every line, and that was 4 % of a registration's
 * CPU (`npm run bench -- --only register --profile`).
 */
function censor(value: unknown, depth: number): unknown {
  if (depth > MAX_DEPTH || !isPlainObject(value)) return value;
  let out: Record<string, unknown> | null = null;
  for (const key of Object.keys(value)) {
    const v = value[key];
    let next: unknown;
    if (SECRET_KEYS.has(key)) next = CENSORED;
    else if (key === "open_id" && typeof v === "string") next = maskOpenId(v);
    else next = censor(v, depth + 1);
    if (next !== v) {
      out ??= { ...value };
      out[key] = next;
    }
  }
  return out ?? value;
}

export interface LoggerOptions {
  /** Where the lines go; stdout by default. */
  readonly destination?: DestinationStream;
  /** Lines for a person (pino-pretty) instead of JSON: for a terminal, as `npm start` by hand. */
  readonly pretty?: boolean;
}

/**
 * Structured JSON logs (or pino-pretty's lines for a terminal). Secrets never reach a
 * line: known secret-bearing keys are censored wherever they appear (`censor`), and
 * open_id is masked.
 * @example const logger = createLogger("info", { pretty: process.stdout.isTTY === true });
 */
export function createLogger(level: string, opts: LoggerOptions = {}): PinoLogger {
  const options = {
    level,
    base: { service: "bindwatch" },
    formatters: {
      log: (obj: Record<string, unknown>) => censor(obj, 0) as Record<string, unknown>,
    },
  };
  // JSON lines go out in writes of up to 4 KiB, at the latest 100 ms after they are logged:
  // one write(2) per line, synchronous, was a tenth of a registration's CPU under load
  // (`npm run bench -- --only register --profile`). pino flushes the buffer synchronously
  // on process exit (lib/tools.js, buildSafeSonicBoom), so the lines before process.exit
  // are kept; a kill -9 may lose the last 100 ms.
  if (opts.destination) return pino(options, opts.destination);
  if (opts.pretty) {
    return pino(
      options,
      pretty({ sync: true, colorize: true, ignore: "pid,hostname,service", translateTime: "SYS:HH:MM:ss.l" }),
    );
  }
  return pino(options, pinoDestination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 100 }));
}
