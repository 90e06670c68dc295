import { Redis } from "ioredis";

export interface RedisConnectionOptions {
  /** Receives connection errors (refused, reset, …) instead of an unhandled 'error' event. */
  readonly onError?: (err: Error, connection: "command" | "subscriber") => void;
  /** Shown in CLIENT LIST; the subscriber gets `-sub` appended. */
  readonly connectionName?: string;
}

export interface RedisConnections {
  readonly redis: Redis;
  readonly subscriber: Redis;
  /** Quits both connections (the coordinator never does). */
  close(): Promise<void>;
}

/**
 * The command and subscriber connections for one standalone Redis URL, set up to fail
 * fast while Redis is down (the API answers 503) and to reconnect by themselves.
 *
 * - `enableOfflineQueue: true`: a command issued during a reconnect waits for it
 *   instead of failing, so a blip (failover, restart) is absorbed and start-up does
 *   not race the first connect; how long it may wait is bounded by the next two.
 * - `maxRetriesPerRequest: 1`: queued commands are failed after the second failed
 *   reconnection attempt instead of waiting forever.
 * - `commandTimeout` / `connectTimeout`: a hung or black-holed server fails a call
 *   within seconds. A command that timed out may still run later from the queue;
 *   every script is safe to apply late (compare-and-set, token compare).
 * - `retryStrategy`: reconnect after 100 ms, 200 ms, … at most every 2 s, forever.
 *
 * Cluster URLs are not handled here: build `new Cluster(nodes, { shardedSubscribers: true, … })`.
 *
 * @example const { redis, subscriber, close } = createRedisConnections("redis://127.0.0.1:6379", { onError: (err) => log.warn({ err }, "redis") });
 */
export function createRedisConnections(url: string, opts: RedisConnectionOptions = {}): RedisConnections {
  const name = opts.connectionName ?? "bindwatch";
  const common = {
    lazyConnect: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    enableReadyCheck: true,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
  };
  const redis = new Redis(url, { ...common, connectionName: name });
  const subscriber = new Redis(url, { ...common, connectionName: `${name}-sub`, autoResubscribe: true });
  // Without a listener an 'error' event would crash the process; ioredis keeps reconnecting anyway.
  redis.on("error", (err: Error) => opts.onError?.(err, "command"));
  subscriber.on("error", (err: Error) => opts.onError?.(err, "subscriber"));
  return {
    redis,
    subscriber,
    async close() {
      await Promise.allSettled([quit(redis), quit(subscriber)]);
    },
  };
}

/** QUIT when connected (lets replies drain), else drop the socket and stop reconnecting. */
async function quit(client: Redis): Promise<void> {
  if (client.status === "ready") {
    try {
      await client.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  client.disconnect();
}
