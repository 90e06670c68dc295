import { ConfigError, type Env, list, read } from "./config-env.js";

/*
 * The Redis topology from the environment (SPEC §5): exactly one of REDIS_URL (one
 * standalone server), REDIS_CLUSTER_NODES (a Cluster's seed nodes) and REDIS_SENTINELS
 * with REDIS_SENTINEL_MASTER, with REDIS_USERNAME / REDIS_PASSWORD for the data nodes.
 * redis-connections.ts connects to what this describes.
 */

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
export function parseRedis(env: Env): RedisConfig | undefined {
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
export function freezeRedis(redis: RedisConfig | undefined): RedisConfig | undefined {
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
