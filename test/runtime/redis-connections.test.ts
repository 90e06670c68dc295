import { Cluster, Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { createRedisConnections } from "../../src/runtime/redis-connections.js";

/*
 * What each factory builds and what it says about itself, against ports nobody listens on:
 * the live behaviour is in test/watch (contract suites) and test/runtime/redis-readiness.
 */

const SECRET = "hunter2";

function connectionsFor(env: Record<string, string>) {
  const { redis } = parseConfig(env);
  if (!redis) throw new Error("no Redis configured");
  return createRedisConnections(redis);
}

describe("createRedisConnections", () => {
  it.each([
    [
      "standalone",
      { REDIS_URL: `redis://app:${SECRET}@127.0.0.1:1/2?password=${SECRET}` },
      { topology: "standalone", nodes: ["redis://127.0.0.1:1/2"], tls: false, auth: true },
      Redis,
    ],
    [
      "cluster",
      { REDIS_CLUSTER_NODES: "127.0.0.1:1,[::1]:2", REDIS_PASSWORD: SECRET },
      { topology: "cluster", nodes: ["127.0.0.1:1", "[::1]:2"], tls: false, auth: true },
      Cluster,
    ],
    [
      "sentinel",
      { REDIS_SENTINELS: `redis://:${SECRET}@127.0.0.1:1`, REDIS_SENTINEL_MASTER: "m", REDIS_PASSWORD: SECRET },
      { topology: "sentinel", nodes: ["127.0.0.1:1"], masterName: "m", tls: false, auth: true },
      Redis,
    ],
  ] as const)("%s: two connections of the topology's kind, described without credentials", async (_, env, described, kind) => {
    const connections = connectionsFor(env);
    try {
      expect(connections.redis).toBeInstanceOf(kind);
      expect(connections.subscriber).toBeInstanceOf(kind);
      expect(connections.subscriber).not.toBe(connections.redis);
      expect(connections.describe).toEqual(described);
      expect(JSON.stringify(connections.describe)).not.toContain(SECRET);
    } finally {
      await connections.close();
    }
  });

  it("builds the Cluster's subscriber with sharded subscribers and neither Cluster with an unbounded offline queue", async () => {
    const connections = connectionsFor({ REDIS_CLUSTER_NODES: "127.0.0.1:1" });
    try {
      const [redis, subscriber] = [connections.redis, connections.subscriber] as Cluster[];
      expect(subscriber?.options.shardedSubscribers).toBe(true);
      expect(redis?.options.enableOfflineQueue).toBe(false);
      expect(subscriber?.options.enableOfflineQueue).toBe(false);
      // Refused at once while the cluster is unreachable, not queued.
      await expect(redis?.get("k")).rejects.toThrow(/enableOfflineQueue/);
    } finally {
      await connections.close();
    }
  });
});
