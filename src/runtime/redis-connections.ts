import { setTimeout as delay } from "node:timers/promises";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import type {
  ClusterRedisConfig,
  RedisAddress,
  RedisAuth,
  RedisConfig,
  SentinelRedisConfig,
  StandaloneRedisConfig,
} from "./redis-config.js";

/*
 * The two connections the Redis coordinator takes — commands, and pub/sub — for each of
 * the three topologies of SPEC §5. Every one fails a call within seconds while Redis is
 * unreachable (the API answers 503) and reconnects by itself, following failovers.
 */

export interface RedisConnectionOptions {
  /** Receives connection errors (refused, reset, …) instead of an unhandled 'error' event. */
  readonly onError?: (err: Error, connection: "command" | "subscriber") => void;
  /** Shown in CLIENT LIST; the subscriber gets `-sub` appended. */
  readonly connectionName?: string;
}

/** The topology as a log line may show it: addresses and flags, never credentials. */
export interface RedisTopologyDescription {
  readonly topology: RedisConfig["mode"];
  /** The URL (standalone, without credentials), the seed nodes (Cluster) or the sentinels, as `host:port`. */
  readonly nodes: readonly string[];
  /** The master's name (Sentinel). */
  readonly masterName?: string;
  readonly tls: boolean;
  /** Whether the data nodes get AUTH. */
  readonly auth: boolean;
}

export interface RedisConnections {
  /** The command connection. */
  readonly redis: Redis | Cluster;
  /** The pub/sub connection (a Cluster's is built with `shardedSubscribers: true`). */
  readonly subscriber: Redis | Cluster;
  readonly describe: RedisTopologyDescription;
  /** Quits both connections (the coordinator never does). */
  close(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 2_000;
const COMMAND_TIMEOUT_MS = 2_000;
/** How long `close()` lets QUIT drain replies before it drops the sockets. */
const QUIT_TIMEOUT_MS = 1_000;
/** Reconnect after 100 ms, 200 ms, … at most every 2 s, forever. */
const reconnectDelay = (attempt: number): number => Math.min(attempt * 100, 2_000);

/**
 * What the standalone and the Sentinel connections share: one connection to one server.
 *
 * - `enableOfflineQueue: true`: a command issued during a reconnect waits for it
 *   instead of failing, so a blip (failover, restart) is absorbed and start-up does
 *   not race the first connect; how long it may wait is bounded by the next two.
 * - `maxRetriesPerRequest: 1`: queued commands are failed after the second failed
 *   reconnection attempt instead of waiting forever.
 * - `commandTimeout` / `connectTimeout`: a hung or black-holed server fails a call
 *   within seconds. ioredis 5.9 arms `commandTimeout` before it queues a command
 *   offline (lib/Redis.ts `sendCommand`), so it bounds the wait for a connection too.
 *   A command that timed out may still run later from the queue; every script is
 *   safe to apply late (compare-and-set, token compare).
 * - `retryStrategy`: reconnect after 100 ms, 200 ms, … at most every 2 s, forever.
 */
const ONE_SERVER = {
  lazyConnect: false,
  enableOfflineQueue: true,
  maxRetriesPerRequest: 1,
  connectTimeout: CONNECT_TIMEOUT_MS,
  commandTimeout: COMMAND_TIMEOUT_MS,
  enableReadyCheck: true,
  retryStrategy: reconnectDelay,
} satisfies RedisOptions;

/**
 * The command connection of one server (standalone, Sentinel) batches: with
 * `enableAutoPipelining`, the commands issued in one turn of the event loop (the
 * continuations of the replies one socket read brought, say) go out in one write and their
 * replies come back in one read. Registration under load spends a third to a half less of
 * redis-server's CPU and as much of bindwatch's as in memory (`npm run bench -- --only register`).
 * A turn's commands wait while the previous turn's batch is out (lib/autoPipelining.ts),
 * and `commandTimeout` is armed when a batch is sent: against a hung server a command
 * fails within two timeouts rather than one.
 * Not on a Cluster: there ioredis splits a turn's commands by the node group that serves
 * each one's first key and redirects a batch as a whole on MOVED or ASK (lib/Pipeline.ts);
 * the Cluster's failover handling described below was tested without batching.
 */
const COMMANDS = { enableAutoPipelining: true } satisfies RedisOptions;

function authOptions(auth: RedisAuth): Pick<RedisOptions, "username" | "password"> {
  return {
    ...(auth.username === undefined ? {} : { username: auth.username }),
    ...(auth.password === undefined ? {} : { password: auth.password }),
  };
}

function hostPort(address: RedisAddress): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * The command and subscriber connections for one standalone Redis (`REDIS_URL`).
 * @example const { redis, subscriber, close } = createStandaloneConnections(config.redis, { onError: (err) => log.warn({ err }, "redis") });
 */
export function createStandaloneConnections(
  config: StandaloneRedisConfig,
  opts: RedisConnectionOptions = {},
): RedisConnections {
  const name = opts.connectionName ?? "bindwatch";
  const common = { ...ONE_SERVER, ...authOptions(config.auth) };
  const redis = new Redis(config.url, { ...common, ...COMMANDS, connectionName: name });
  const subscriber = new Redis(config.url, { ...common, connectionName: `${name}-sub`, autoResubscribe: true });
  return pair(redis, subscriber, opts, {
    topology: "standalone",
    // ioredis reads options from the query too (`?password=…`): the log shows none of it.
    nodes: [config.url.replace(/\?.*$/, "")],
    tls: config.url.startsWith("rediss:"),
    auth: config.auth.password !== undefined,
  });
}

/**
 * The command and subscriber connections for a Redis Cluster (`REDIS_CLUSTER_NODES`), both
 * `Cluster` clients that find every node from the seeds and follow slot moves and failovers.
 *
 * - The subscriber has `shardedSubscribers: true` (states are sent with SPUBLISH). ioredis
 *   keeps one subscriber connection per master (lib/cluster/ClusterSubscriberGroup.ts); they
 *   never reconnect on their own: one that ends makes the Cluster refresh its slot map, and
 *   the group then starts a connection to each master it lacks, sends SSUBSCRIBE again for
 *   every channel of that master's slots, and emits "subscribersReady" (which the coordinator
 *   answers by re-reading its traces). So it loops until the promoted replica serves, and
 *   without a backoff: a failed connection also ends, and an ending one refreshes at once
 *   (the 100 ms–2 s backoff of "subscriberConnectFailed" runs beside it). While a master is
 *   down that is dozens of attempts a second, each an 'error' event (node-server logs a
 *   few). When no node answers, the client reconnects from the seeds (redis/ioredis#2060).
 * - `enableOfflineQueue: false` on the Cluster itself: its own queue (used while it is not
 *   ready: at start-up, and after losing every node) has no bound at all, neither
 *   `commandTimeout` nor `maxRetriesPerRequest` reaches it (redis/ioredis#1604), so a
 *   command would wait for as long as the cluster is away. Refused at once instead, it
 *   becomes a 503 like a standalone Redis that is down; `/readyz` says when to come back.
 * - `redisOptions` are every node connection's: credentials, TLS and the timeouts. The
 *   Cluster gives node connections `retryStrategy: null` and an offline queue of their own
 *   (lib/cluster/ConnectionPool.ts): a lost node is not reconnected to but retried through
 *   the slot map, `retryDelayOnFailover` (100 ms) up to `maxRedirections` (16) times, so
 *   `maxRetriesPerRequest` means nothing here. The sharded subscribers take only host,
 *   port, credentials, TLS and name from them (lib/cluster/ShardedSubscriber.ts): their
 *   connect timeout stays ioredis's 10 s.
 * - `clusterRetryStrategy`: reconnect from the seeds after 100 ms, 200 ms, … at most every 2 s.
 *
 * @example const { redis, subscriber } = createClusterConnections(config.redis, { onError: (err) => log.warn({ err }, "redis") });
 */
export function createClusterConnections(
  config: ClusterRedisConfig,
  opts: RedisConnectionOptions = {},
): RedisConnections {
  const name = opts.connectionName ?? "bindwatch";
  const nodes = config.nodes.map(({ host, port }) => ({ host, port }));
  const redisOptions: RedisOptions = {
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    ...authOptions(config.auth),
    ...(config.tls ? { tls: {} } : {}),
  };
  const common: ClusterOptions = {
    enableOfflineQueue: false,
    enableReadyCheck: true,
    clusterRetryStrategy: reconnectDelay,
  };
  const redis = new Cluster(nodes, { ...common, redisOptions: { ...redisOptions, connectionName: name } });
  const subscriber = new Cluster(nodes, {
    ...common,
    shardedSubscribers: true,
    redisOptions: { ...redisOptions, connectionName: `${name}-sub` },
  });
  return pair(redis, subscriber, opts, {
    topology: "cluster",
    nodes: config.nodes.map(hostPort),
    tls: config.tls,
    auth: config.auth.password !== undefined,
  });
}

/**
 * The command and subscriber connections for a master watched by Sentinel (`REDIS_SENTINELS`
 * + `REDIS_SENTINEL_MASTER`): each asks the sentinels where the master is, checks with INFO
 * that the server it reached is a master (`role: "master"`), and asks again whenever its
 * connection drops, so it follows a failover by itself; the subscriber re-subscribes then.
 *
 * - `failoverDetector: true`: each connection also subscribes to `+switch-master` on the
 *   sentinels and reconnects when a failover is announced, even if the old master's socket
 *   stays open, as when it hangs or is cut off (redis/ioredis#1314, PR #1328). Sentinel also
 *   disconnects a demoted master's clients, which covers the ordinary case.
 * - `reconnectOnError`: a `READONLY` reply means the server was demoted under this
 *   connection; reconnect (asking the sentinels again) and fail that one command (ioredis
 *   README, "Reconnect on Error").
 * - `sentinelRetryStrategy`: while no sentinel answers, ask again after 100 ms, … at most 2 s;
 *   `sentinelCommandTimeout` bounds each question. Commands meanwhile fail by `commandTimeout`.
 * - The rest as for one server (ONE_SERVER above). `tls` (rediss:// sentinels) applies to
 *   the sentinels and the data nodes alike.
 *
 * @example const { redis, subscriber } = createSentinelConnections(config.redis, { onError: (err) => log.warn({ err }, "redis") });
 */
export function createSentinelConnections(
  config: SentinelRedisConfig,
  opts: RedisConnectionOptions = {},
): RedisConnections {
  const name = opts.connectionName ?? "bindwatch";
  const common: RedisOptions = {
    ...ONE_SERVER,
    sentinels: config.sentinels.map(({ host, port }) => ({ host, port })),
    name: config.masterName,
    role: "master",
    ...authOptions(config.auth),
    ...(config.sentinelAuth.username === undefined ? {} : { sentinelUsername: config.sentinelAuth.username }),
    ...(config.sentinelAuth.password === undefined ? {} : { sentinelPassword: config.sentinelAuth.password }),
    ...(config.tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
    failoverDetector: true,
    sentinelRetryStrategy: reconnectDelay,
    sentinelCommandTimeout: COMMAND_TIMEOUT_MS,
    // The failover detector's own sentinel connections: a sentinel that went away is tried again this often.
    sentinelReconnectStrategy: () => 5_000,
    reconnectOnError: (err: Error) => err.message.startsWith("READONLY"),
  };
  const redis = new Redis({ ...common, ...COMMANDS, connectionName: name });
  const subscriber = new Redis({ ...common, connectionName: `${name}-sub`, autoResubscribe: true });
  let closing = false;
  reconnectWhenEnded(redis, () => closing);
  reconnectWhenEnded(subscriber, () => closing);
  return pair(
    redis,
    subscriber,
    opts,
    {
      topology: "sentinel",
      nodes: config.sentinels.map(hostPort),
      masterName: config.masterName,
      tls: config.tls,
      auth: config.auth.password !== undefined,
    },
    () => {
      closing = true;
    },
  );
}

/**
 * Connects a Sentinel client again when ioredis ended it on its own.
 *
 * Works around ioredis 5.9 (lib/connectors/SentinelConnector/index.ts `connect`, and
 * lib/Redis.ts `connect`): the failover detector of the connection that was lost calls
 * `connector.disconnect()` when `+switch-master` arrives; if the client is reconnecting
 * at that moment and waiting for a sentinel's answer, `connectToNext` throws "Connection is
 * closed." and `Redis.connect` sets the status to "end" — no retry, every later command
 * refused — although nobody closed the client (redis/ioredis#1683 reports the symptom).
 * A failover is exactly when that happens. So an "end" that `close()` did not ask for
 * starts a connect again, on the same backoff as a reconnect.
 */
function reconnectWhenEnded(client: Redis, closing: () => boolean): void {
  let attempt = 0;
  client.on("ready", () => {
    attempt = 0;
  });
  client.on("end", () => {
    if (closing()) return;
    attempt += 1;
    setTimeout(() => {
      if (closing() || client.status !== "end") return;
      // A connect that fails ends the client again, which comes back here.
      client.connect().catch(() => {});
    }, reconnectDelay(attempt)).unref();
  });
}

/**
 * The connections for whichever topology `config` names.
 * @example const connections = createRedisConnections(config.redis, { onError: (err) => log.warn({ err }, "redis") });
 */
export function createRedisConnections(config: RedisConfig, opts: RedisConnectionOptions = {}): RedisConnections {
  switch (config.mode) {
    case "standalone":
      return createStandaloneConnections(config, opts);
    case "cluster":
      return createClusterConnections(config, opts);
    case "sentinel":
      return createSentinelConnections(config, opts);
  }
}

function pair(
  redis: Redis | Cluster,
  subscriber: Redis | Cluster,
  opts: RedisConnectionOptions,
  describe: RedisTopologyDescription,
  /** Told before the connections are closed (they must not be reconnected then). */
  onClose?: () => void,
): RedisConnections {
  // Without a listener an 'error' event would crash the process; ioredis keeps reconnecting anyway.
  redis.on("error", (err: Error) => opts.onError?.(err, "command"));
  subscriber.on("error", (err: Error) => opts.onError?.(err, "subscriber"));
  return {
    redis,
    subscriber,
    describe: Object.freeze({ ...describe, nodes: Object.freeze([...describe.nodes]) }),
    async close() {
      onClose?.();
      await Promise.allSettled([quit(redis), quit(subscriber)]);
    },
  };
}

/**
 * QUIT when connected (lets replies drain, for a bounded while), then drop what is left
 * and stop reconnecting.
 */
async function quit(client: Redis | Cluster): Promise<void> {
  if (client.status === "ready") {
    const quitted = await Promise.race([
      client.quit().then(
        () => true,
        () => false,
      ),
      delay(QUIT_TIMEOUT_MS, false, { ref: false }),
    ]);
    // A Cluster that quitted has closed every node. A Redis has closed its socket only:
    // QUIT never reaches SentinelConnector.disconnect(), which is what closes the failover
    // detector's connections to the sentinels (ioredis lib/connectors/SentinelConnector).
    if (quitted && client.isCluster) return;
  }
  client.disconnect();
}
