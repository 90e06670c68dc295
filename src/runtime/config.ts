import { DEFAULT_GATEWAY_URL } from "../top/client.js";
import { isSignMethod, type SignMethod } from "../top/sign.js";

/** Everything bindwatch reads from its environment (SPEC §5), parsed once and frozen. */
export interface Config {
  readonly port: number;
  readonly host: string;
  readonly top: {
    readonly gatewayUrl: string;
    readonly appKey: string | undefined;
    readonly appSecret: string | undefined;
    readonly signMethod: SignMethod;
    readonly session: string | undefined;
    readonly timeoutMs: number;
  };
  /** True in simulator mode (SPEC §6): the in-process gateway simulator answers instead of TOP. */
  readonly simulator: boolean;
  /** What `/healthz` and the first log line say: `simulator` or `live`. */
  readonly mode: "simulator" | "live";
  /** Production rules apply (SPEC §5): `NODE_ENV=production` on Node, always at the edge. */
  readonly production: boolean;
  /** `ALLOW_OPEN_ACCESS=true`: production may run without API_KEYS. */
  readonly allowOpenAccess: boolean;
  /** New registrations per API key and minute, deployment-wide; `undefined` for no limit. */
  readonly registrationsPerMinute: number | undefined;
  /**
   * The simulator's credentials as a TOP sandbox for other clients (SPEC §6), from
   * SIMULATOR_APP_KEY / SIMULATOR_APP_SECRET; each one unset is chosen at random by the runtime.
   */
  readonly sandbox: { readonly appKey: string | undefined; readonly appSecret: string | undefined };
  readonly redisUrl: string | undefined;
  readonly pollIntervalMs: number;
  readonly pollLingerMs: number;
  readonly bindTimeoutMs: number;
  readonly resultTtlMs: number;
  readonly heartbeatMs: number;
  readonly upstreamQps: number;
  readonly terminalRetCodes: ReadonlySet<number>;
  readonly apiKeys: readonly string[];
  readonly watchTokenSecret: string | undefined;
  readonly corsOrigins: readonly string[];
  readonly maxStreams: number;
  readonly logLevel: string;
}

/** A variable with a bad value, or a combination bindwatch refuses to run with; names the variables at fault. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** Every variable at fault, the first one in `variable`. */
  readonly variables: readonly string[];
  constructor(
    readonly variable: string,
    message: string,
    others: readonly string[] = [],
  ) {
    super(`${variable}: ${message}`);
    this.variables = [variable, ...others];
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

function read(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function flag(env: Env, name: string, values: readonly [on: string, off: string]): boolean | undefined {
  const raw = read(env, name)?.toLowerCase();
  if (raw === undefined) return undefined;
  if (raw === values[0]) return true;
  if (raw === values[1]) return false;
  throw new ConfigError(name, `must be ${values[0]} or ${values[1]}, got "${raw}"`);
}

function list(env: Env, name: string): string[] {
  return (read(env, name) ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function url(env: Env, name: string, fallback: string | undefined, protocols: readonly string[]): string | undefined {
  const raw = read(env, name) ?? fallback;
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, "is not a valid URL");
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(" or ")}, got ${parsed.protocol}`);
  }
  return raw;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** TOP app keys are short numbers; any short token of URL-safe characters will do for the sandbox. */
const SANDBOX_APP_KEY_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** Visible ASCII only, so the secret can be pasted into a shell, an SDK's config or a form as it is. */
const SANDBOX_APP_SECRET_PATTERN = /^[\x21-\x7e]{8,128}$/;

function sandboxCredentials(env: Env, simulator: boolean): Config["sandbox"] {
  const appKey = read(env, "SIMULATOR_APP_KEY");
  const appSecret = read(env, "SIMULATOR_APP_SECRET");
  for (const [name, value] of [
    ["SIMULATOR_APP_KEY", appKey],
    ["SIMULATOR_APP_SECRET", appSecret],
  ] as const) {
    if (value !== undefined && !simulator) {
      throw new ConfigError(
        name,
        "applies to simulator mode only (SIMULATOR=on, or no TOP credentials outside production)",
      );
    }
  }
  if (appKey !== undefined && !SANDBOX_APP_KEY_PATTERN.test(appKey)) {
    throw new ConfigError("SIMULATOR_APP_KEY", "must be 1–64 letters, digits, '.', '_' or '-'");
  }
  if (appSecret !== undefined && !SANDBOX_APP_SECRET_PATTERN.test(appSecret)) {
    throw new ConfigError("SIMULATOR_APP_SECRET", "must be 8–128 visible ASCII characters (no spaces)");
  }
  return { appKey, appSecret };
}

export interface ParseConfigOptions {
  /** Hold the configuration to the production rules of SPEC §5 whatever NODE_ENV says (the edge). */
  readonly production?: boolean;
}

/**
 * Simulator or live (SPEC §5, §6): `SIMULATOR=on` runs the simulator, and is refused
 * together with credentials (which of the two was meant cannot be told); without
 * `SIMULATOR`, credentials mean live and their absence means the simulator — outside
 * production only, where a missing secret must stop the process rather than let a
 * simulated device answer real users.
 */
function parseMode(env: Env, production: boolean): { simulator: boolean; appKey?: string; appSecret?: string } {
  const appKey = read(env, "TOP_APP_KEY");
  const appSecret = read(env, "TOP_APP_SECRET");
  const simulator = flag(env, "SIMULATOR", ["on", "off"]);
  if (simulator === true) {
    if (appKey !== undefined || appSecret !== undefined) {
      throw new ConfigError(
        "SIMULATOR",
        "SIMULATOR=on together with TOP_APP_KEY / TOP_APP_SECRET is ambiguous: unset the credentials for the simulator, or SIMULATOR for TOP",
        [appKey !== undefined ? "TOP_APP_KEY" : "TOP_APP_SECRET"],
      );
    }
    return { simulator: true };
  }
  const missing = [appKey === undefined ? "TOP_APP_KEY" : "", appSecret === undefined ? "TOP_APP_SECRET" : ""].filter(
    (name) => name !== "",
  );
  if (missing.length === 1) {
    throw new ConfigError(missing[0] as string, "set both TOP_APP_KEY and TOP_APP_SECRET, or neither");
  }
  if (missing.length === 0) return { simulator: false, appKey: appKey as string, appSecret: appSecret as string };
  if (simulator === false || production) {
    const why =
      simulator === false
        ? "SIMULATOR=off needs TOP credentials"
        : "in production bindwatch does not fall back to the simulator";
    throw new ConfigError(
      "TOP_APP_KEY",
      `TOP_APP_KEY and TOP_APP_SECRET are not set: ${why} (set both, or SIMULATOR=on to run the simulator on purpose)`,
      ["TOP_APP_SECRET"],
    );
  }
  return { simulator: true };
}

/**
 * Parses the environment into a frozen Config; a bad value, or a combination refused
 * in production (SPEC §5), throws a ConfigError that names the variables.
 * @example const config = parseConfig(process.env);
 */
export function parseConfig(env: Env, opts: ParseConfigOptions = {}): Config {
  const production = opts.production ?? read(env, "NODE_ENV") === "production";
  const { simulator, appKey, appSecret } = parseMode(env, production);
  const signMethod = read(env, "TOP_SIGN_METHOD") ?? "hmac-sha256";
  if (!isSignMethod(signMethod))
    throw new ConfigError("TOP_SIGN_METHOD", `must be md5, hmac or hmac-sha256, got "${signMethod}"`);

  const terminalRetCodes = new Set<number>();
  for (const item of list(env, "TERMINAL_RET_CODES")) {
    if (!/^-?\d+$/.test(item)) throw new ConfigError("TERMINAL_RET_CODES", `"${item}" is not an integer`);
    terminalRetCodes.add(Number(item));
  }
  const corsOrigins = list(env, "CORS_ORIGINS");
  for (const origin of corsOrigins) {
    if (origin === "*") continue;
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError("CORS_ORIGINS", `"${origin}" is not an origin`);
    }
    if (parsed.origin !== origin)
      throw new ConfigError("CORS_ORIGINS", `"${origin}" is not an exact origin (like https://app.example.com)`);
  }
  const logLevel = read(env, "LOG_LEVEL") ?? "info";
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError("LOG_LEVEL", `must be one of ${LOG_LEVELS.join(", ")}`);
  const watchTokenSecret = read(env, "WATCH_TOKEN_SECRET");
  if (watchTokenSecret !== undefined && watchTokenSecret.length < 16) {
    throw new ConfigError("WATCH_TOKEN_SECRET", "must be at least 16 characters");
  }
  const pollIntervalMs = integer(env, "POLL_INTERVAL_MS", 2000, 100, 600_000);
  const apiKeys = list(env, "API_KEYS");
  const allowOpenAccess = flag(env, "ALLOW_OPEN_ACCESS", ["true", "false"]) ?? false;
  if (production && apiKeys.length === 0 && !allowOpenAccess) {
    throw new ConfigError(
      "API_KEYS",
      "is not set: in production anyone could register binds and spend the deployment's UPSTREAM_QPS; set API_KEYS, or ALLOW_OPEN_ACCESS=true to run open on purpose",
      ["ALLOW_OPEN_ACCESS"],
    );
  }
  const perMinute = read(env, "REGISTRATIONS_PER_MINUTE");

  const config: Config = {
    port: integer(env, "PORT", 8787, 0, 65_535),
    host: read(env, "HOST") ?? "0.0.0.0",
    top: {
      gatewayUrl: url(env, "TOP_GATEWAY_URL", DEFAULT_GATEWAY_URL, ["https:", "http:"]) ?? DEFAULT_GATEWAY_URL,
      appKey,
      appSecret,
      signMethod,
      session: read(env, "TOP_SESSION"),
      timeoutMs: integer(env, "TOP_TIMEOUT_MS", 5000, 100, 120_000),
    },
    simulator,
    sandbox: sandboxCredentials(env, simulator),
    mode: simulator ? "simulator" : "live",
    production,
    allowOpenAccess,
    registrationsPerMinute:
      perMinute === undefined ? undefined : integer(env, "REGISTRATIONS_PER_MINUTE", 0, 1, 1_000_000),
    redisUrl: url(env, "REDIS_URL", undefined, ["redis:", "rediss:"]),
    pollIntervalMs,
    pollLingerMs: integer(env, "POLL_LINGER_MS", 30_000, 0, DAY_MS),
    bindTimeoutMs: integer(env, "BIND_TIMEOUT_MS", 180_000, 1000, DAY_MS),
    resultTtlMs: integer(env, "RESULT_TTL_MS", 600_000, 1000, 30 * DAY_MS),
    heartbeatMs: integer(env, "HEARTBEAT_MS", 15_000, 100, 600_000),
    upstreamQps: integer(env, "UPSTREAM_QPS", 40, 1, 100_000),
    terminalRetCodes,
    apiKeys,
    watchTokenSecret,
    corsOrigins,
    maxStreams: integer(env, "MAX_STREAMS", 15_000, 1, 1_000_000),
    logLevel,
  };
  return Object.freeze(config);
}
