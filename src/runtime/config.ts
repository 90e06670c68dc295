import { DEFAULT_GATEWAY_URL } from "../top/client.js";
import { isSignMethod, type SignMethod } from "../top/sign.js";
import { webhookKeyOf } from "../webhook/message.js";
import { ConfigError, type Env, exactOrigin, flag, integer, list, read, url } from "./config-env.js";
import { freezeRedis, parseRedis, type RedisConfig } from "./redis-config.js";

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
  /** The Redis deployment the instances coordinate through; `undefined` runs in memory, one instance. */
  readonly redis: RedisConfig | undefined;
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
  /** Webhooks to the backend (SPEC §3); `undefined` when neither WEBHOOK_URL nor WEBHOOK_ALLOWED_ORIGINS is set. */
  readonly webhooks: WebhookConfig | undefined;
  /** TLS_CERT_FILE / TLS_KEY_FILE: Node serves HTTPS, HTTP/2 and HTTP/1.1, itself; `undefined` for plain HTTP. */
  readonly tls: TlsConfig | undefined;
}

/** PEM files of the certificate (its chain after it) and its private key. */
export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface WebhookConfig {
  /** WEBHOOK_URL: every bind's final goes there. */
  readonly url: string | undefined;
  /** The signing key: the base64-decoded part of WEBHOOK_SECRET (never logged). */
  readonly key: Buffer;
  /** WEBHOOK_ALLOWED_ORIGINS: the exact origins a bind's callback_url may use. */
  readonly allowedOrigins: readonly string[];
  readonly timeoutMs: number;
  readonly retryMs: number;
  readonly maxAgeMs: number;
}

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * WEBHOOK_* (SPEC §3, §5): webhooks are on with WEBHOOK_URL or WEBHOOK_ALLOWED_ORIGINS,
 * and then need WEBHOOK_SECRET (`whsec_` + base64, as Standard Webhooks has it).
 */
function parseWebhooks(env: Env): WebhookConfig | undefined {
  const url = read(env, "WEBHOOK_URL");
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError("WEBHOOK_URL", "is not a valid URL");
    }
    if (!["http:", "https:"].includes(parsed.protocol)) {
      throw new ConfigError("WEBHOOK_URL", `must use http: or https:, got ${parsed.protocol}`);
    }
  }
  const allowedOrigins = list(env, "WEBHOOK_ALLOWED_ORIGINS").map((o) => exactOrigin(o, "WEBHOOK_ALLOWED_ORIGINS"));
  const secret = read(env, "WEBHOOK_SECRET");
  const key = secret === undefined ? undefined : webhookKeyOf(secret);
  if (secret !== undefined && !key) {
    throw new ConfigError("WEBHOOK_SECRET", "must be whsec_ followed by base64 (as Standard Webhooks secrets are)");
  }
  const timeoutMs = integer(env, "WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000);
  const retryMs = integer(env, "WEBHOOK_RETRY_MS", 5_000, 100, 60 * 60 * 1000);
  const maxAgeMs = integer(env, "WEBHOOK_MAX_AGE_MS", DAY_MS, 1_000, 30 * DAY_MS);
  if (url === undefined && allowedOrigins.length === 0) return undefined;
  if (!key) {
    throw new ConfigError(
      "WEBHOOK_SECRET",
      "is not set: webhooks are configured (WEBHOOK_URL or WEBHOOK_ALLOWED_ORIGINS) and every delivery is signed",
    );
  }
  return Object.freeze({ url, key, allowedOrigins: Object.freeze(allowedOrigins), timeoutMs, retryMs, maxAgeMs });
}

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

/** Both TLS files or neither: one alone would serve plain HTTP while the operator meant HTTPS. */
function parseTls(env: Env): TlsConfig | undefined {
  const certFile = read(env, "TLS_CERT_FILE");
  const keyFile = read(env, "TLS_KEY_FILE");
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined) throw new ConfigError("TLS_CERT_FILE", "must be set with TLS_KEY_FILE (both or neither)");
  if (keyFile === undefined) throw new ConfigError("TLS_KEY_FILE", "must be set with TLS_CERT_FILE (both or neither)");
  return Object.freeze({ certFile, keyFile });
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
  for (const origin of corsOrigins) if (origin !== "*") exactOrigin(origin, "CORS_ORIGINS");
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
    redis: freezeRedis(parseRedis(env)),
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
    webhooks: parseWebhooks(env),
    tls: parseTls(env),
    maxStreams: integer(env, "MAX_STREAMS", 15_000, 1, 1_000_000),
    logLevel,
  };
  return Object.freeze(config);
}
