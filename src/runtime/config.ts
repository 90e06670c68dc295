import { DEFAULT_GATEWAY_URL } from "../top/client.js";
import { isSignMethod, type SignMethod } from "../top/sign.js";
import { webhookKeyOf } from "../webhook/message.js";

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

/** One node as `host:port` (an IPv6 host without its brackets). */
export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

/** AUTH credentials; neither set means no AUTH. A username never comes without a password. */
export interface RedisAuth {
  readonly username?: string;
  readonly password?: string;
}

/** `REDIS_URL`: one standalone Redis. `url` carries no credentials (they are in `auth`) and may carry a database. */
export interface StandaloneRedisConfig {
  readonly mode: "standalone";
  readonly url: string;
  readonly auth: RedisAuth;
}

/** `REDIS_CLUSTER_NODES`: the seed nodes of a Redis Cluster; `auth` and `tls` hold for every node it discovers. */
export interface ClusterRedisConfig {
  readonly mode: "cluster";
  readonly nodes: readonly RedisAddress[];
  readonly tls: boolean;
  readonly auth: RedisAuth;
}

/**
 * `REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`: the sentinels to ask for the master named
 * `masterName`. `sentinelAuth` is the sentinels' own (from their URLs), `auth` the data
 * nodes' (REDIS_USERNAME / REDIS_PASSWORD); `tls` (rediss:// sentinels) holds for both.
 */
export interface SentinelRedisConfig {
  readonly mode: "sentinel";
  readonly sentinels: readonly RedisAddress[];
  readonly masterName: string;
  readonly tls: boolean;
  readonly sentinelAuth: RedisAuth;
  readonly auth: RedisAuth;
}

/** One Redis topology (SPEC §5): exactly one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS. */
export type RedisConfig = StandaloneRedisConfig | ClusterRedisConfig | SentinelRedisConfig;

/** A variable with a bad value, or a combination bindwatch refuses to run with; names the variables at fault. */
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

/** An exact origin (`https://app.example.com`), or a ConfigError naming `name`. */
function exactOrigin(origin: string, name: string): string {
  let parsed: URL;
  try {
    parsed = new URL(origin);
  } catch {
    throw new ConfigError(name, `"${origin}" is not an origin`);
  }
  if (parsed.origin !== origin || !["http:", "https:"].includes(parsed.protocol)) {
    throw new ConfigError(name, `"${origin}" is not an exact origin (like https://app.example.com)`);
  }
  return origin;
}

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

const REDIS_TOPOLOGIES = ["REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS"] as const;
const REDIS_PORT = 6379;
const SENTINEL_PORT = 26379;

/** `host:port`, the host a name, an IPv4 address or a bracketed IPv6 address. */
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/@[\]]+)):(\d+)$/;

/** An item as an error message may show it: credentials (before an `@`) and the query (`?password=…`) masked. */
function shown(item: string): string {
  return `"${item.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^@]*@/i, "$1***@").replace(/\?.*$/, "?***")}"`;
}

function checkPort(name: string, item: string, digits: string): number {
  const port = Number(digits);
  if (!/^\d{1,5}$/.test(digits) || port < 1 || port > 65_535) {
    throw new ConfigError(name, `${shown(item)}: the port must be between 1 and 65535, got ${digits}`);
  }
  return port;
}

interface ParsedRedisUrl {
  readonly url: URL;
  readonly address: RedisAddress;
  readonly tls: boolean;
  readonly auth: RedisAuth;
}

/** A `redis://` or `rediss://` URL, its credentials decoded; the port checked before URL would refuse it. */
function parseRedisUrl(name: string, item: string, defaultPort: number): ParsedRedisUrl {
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(item)?.[1] ?? "";
  const port = /(?:^|[^:]):(\d*)$/.exec(authority.slice(authority.lastIndexOf("@") + 1))?.[1];
  if (port !== undefined && port !== "") checkPort(name, item, port);
  let url: URL;
  try {
    url = new URL(item);
  } catch {
    throw new ConfigError(name, `${shown(item)} is not a valid URL`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new ConfigError(name, `${shown(item)} must use redis: or rediss:, got ${url.protocol}`);
  }
  if (url.hostname === "") throw new ConfigError(name, `${shown(item)} names no host`);
  let username: string;
  let password: string;
  try {
    username = decodeURIComponent(url.username);
    password = decodeURIComponent(url.password);
  } catch {
    throw new ConfigError(name, `${shown(item)}: the credentials are not valid percent-encoding`);
  }
  return {
    url,
    address: { host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: url.port === "" ? defaultPort : Number(url.port) },
    tls: url.protocol === "rediss:",
    auth: { ...(username === "" ? {} : { username }), ...(password === "" ? {} : { password }) },
  };
}

/** One item of a node list: `host:port`, or a URL that takes no database (except 0, for a Cluster) and no query. */
function parseRedisNode(name: string, item: string, defaultPort: number, what: string): Omit<ParsedRedisUrl, "url"> {
  if (!item.includes("://")) {
    const match = HOST_PORT.exec(item);
    if (!match) throw new ConfigError(name, `${shown(item)} is not host:port or a redis:// / rediss:// URL`);
    const host = (match[1] ?? match[2]) as string;
    return { address: { host, port: checkPort(name, item, match[3] as string) }, tls: false, auth: {} };
  }
  const { url, ...node } = parseRedisUrl(name, item, defaultPort);
  const databases = what === "cluster node" ? ["", "/", "/0"] : ["", "/"];
  if (!databases.includes(url.pathname)) {
    throw new ConfigError(
      name,
      `${shown(item)}: a ${what} URL takes no database${what === "cluster node" ? " (a Redis Cluster has only database 0)" : ""}`,
    );
  }
  if (url.search !== "" || url.hash !== "") throw new ConfigError(name, `${shown(item)}: a ${what} URL takes no query`);
  return node;
}

/** The items of a node list, which must name at least one node and agree on TLS and on credentials. */
function parseRedisNodes(env: Env, name: string, defaultPort: number, what: string) {
  const items = list(env, name);
  if (items.length === 0) throw new ConfigError(name, `lists no ${what}`);
  const nodes = items.map((item) => parseRedisNode(name, item, defaultPort, what));
  const tls = new Set(nodes.map((n) => n.tls));
  if (tls.size > 1) {
    throw new ConfigError(name, `mixes rediss:// (TLS) and plain ${what}s: list them all with rediss:// or none`);
  }
  const withAuth = nodes.filter((n) => n.auth.password !== undefined || n.auth.username !== undefined);
  const [first] = withAuth;
  for (const other of withAuth) {
    if (other.auth.username !== first?.auth.username || other.auth.password !== first?.auth.password) {
      throw new ConfigError(name, `its URLs carry different credentials: every ${what} takes the same ones`);
    }
  }
  // A node listed twice is one node.
  const addresses = [...new Map(nodes.map((n) => [`${n.address.host}:${n.address.port}`, n.address])).values()];
  return { addresses, tls: tls.has(true), auth: first?.auth ?? {} };
}

/**
 * The data nodes' credentials: those of the URLs, completed by REDIS_USERNAME / REDIS_PASSWORD
 * where the URLs have none. A value given in both places must be the same (which one was meant
 * could not be told); a username needs a password (Redis AUTH takes both or the password alone).
 */
function mergeRedisAuth(env: Env, fromUrls: RedisAuth, source: string): RedisAuth {
  const username = read(env, "REDIS_USERNAME");
  const password = read(env, "REDIS_PASSWORD");
  for (const [variable, value, inUrl] of [
    ["REDIS_USERNAME", username, fromUrls.username],
    ["REDIS_PASSWORD", password, fromUrls.password],
  ] as const) {
    if (value !== undefined && inUrl !== undefined && value !== inUrl) {
      throw new ConfigError(variable, `differs from the one in ${source}: set it in one place`, [source]);
    }
  }
  const merged = { username: fromUrls.username ?? username, password: fromUrls.password ?? password };
  if (merged.username !== undefined && merged.password === undefined) {
    throw new ConfigError(
      fromUrls.username === undefined ? "REDIS_USERNAME" : source,
      "a Redis username needs a password (REDIS_PASSWORD or in the URL)",
    );
  }
  return {
    ...(merged.username === undefined ? {} : { username: merged.username }),
    ...(merged.password === undefined ? {} : { password: merged.password }),
  };
}

/**
 * The Redis topology (SPEC §5): none (in memory), `REDIS_URL`, `REDIS_CLUSTER_NODES`, or
 * `REDIS_SENTINELS` with `REDIS_SENTINEL_MASTER`; more than one of the three is refused, and
 * so are a master name or credentials with nothing to apply them to.
 */
function parseRedis(env: Env): RedisConfig | undefined {
  const chosen = REDIS_TOPOLOGIES.filter((name) => read(env, name) !== undefined);
  if (chosen.length > 1) {
    throw new ConfigError(
      chosen[0] as string,
      `${chosen.join(", ")} are set together: bindwatch uses one Redis topology, so set only one of ${REDIS_TOPOLOGIES.join(", ")}`,
      chosen.slice(1),
    );
  }
  const masterName = read(env, "REDIS_SENTINEL_MASTER");
  const [topology] = chosen;
  if (masterName !== undefined && topology !== "REDIS_SENTINELS") {
    throw new ConfigError("REDIS_SENTINEL_MASTER", "is set without REDIS_SENTINELS, where it would mean nothing", [
      "REDIS_SENTINELS",
    ]);
  }
  switch (topology) {
    case undefined: {
      const stray = ["REDIS_USERNAME", "REDIS_PASSWORD"].find((name) => read(env, name) !== undefined);
      if (stray !== undefined) {
        throw new ConfigError(stray, `is set without ${REDIS_TOPOLOGIES.join(", ")}: there is no Redis to use it with`);
      }
      return undefined;
    }
    case "REDIS_URL": {
      const { url, auth } = parseRedisUrl(topology, read(env, topology) as string, REDIS_PORT);
      url.username = "";
      url.password = "";
      return { mode: "standalone", url: url.toString(), auth: mergeRedisAuth(env, auth, topology) };
    }
    case "REDIS_CLUSTER_NODES": {
      const { addresses, tls, auth } = parseRedisNodes(env, topology, REDIS_PORT, "cluster node");
      return { mode: "cluster", nodes: addresses, tls, auth: mergeRedisAuth(env, auth, topology) };
    }
    case "REDIS_SENTINELS": {
      const { addresses, tls, auth } = parseRedisNodes(env, topology, SENTINEL_PORT, "sentinel");
      if (masterName === undefined) {
        throw new ConfigError(
          "REDIS_SENTINEL_MASTER",
          "is required with REDIS_SENTINELS: the name the sentinels monitor",
          ["REDIS_SENTINELS"],
        );
      }
      if (/[\s\p{Cc}]/u.test(masterName)) {
        throw new ConfigError("REDIS_SENTINEL_MASTER", "must not contain spaces or control characters");
      }
      return {
        mode: "sentinel",
        sentinels: addresses,
        masterName,
        tls,
        sentinelAuth: auth,
        auth: mergeRedisAuth(env, {}, topology),
      };
    }
  }
}

/** Freezes the Redis configuration through its lists and nodes. */
function freezeRedis(redis: RedisConfig | undefined): RedisConfig | undefined {
  if (redis === undefined) return undefined;
  const freezeAll = (nodes: readonly RedisAddress[]) => {
    for (const node of nodes) Object.freeze(node);
    Object.freeze(nodes);
  };
  Object.freeze(redis.auth);
  if (redis.mode === "cluster") freezeAll(redis.nodes);
  if (redis.mode === "sentinel") {
    Object.freeze(redis.sentinelAuth);
    freezeAll(redis.sentinels);
  }
  return Object.freeze(redis);
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
