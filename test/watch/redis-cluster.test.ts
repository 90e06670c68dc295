import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { createRedisCoordinator } from "../../src/watch/redis-coordinator.js";
import { redisContractSubject } from "../support/redis-contract.js";
import { type RedisCluster, startRedisCluster } from "../support/redis-server.js";
import { describeCoordinatorContract } from "./coordinator-contract.js";

interface ClusterPair {
  readonly redis: Cluster;
  readonly subscriber: Cluster;
}

let cluster: RedisCluster;
const pairs: ClusterPair[] = [];

function connect(nodes: RedisCluster["nodes"], shardedSubscribers: boolean): Promise<Cluster> {
  const client = new Cluster(nodes, {
    shardedSubscribers,
    redisOptions: { maxRetriesPerRequest: 1, connectTimeout: 2_000 },
  });
  client.on("error", () => {});
  // A sharded subscriber routes SSUBSCRIBE by the slot map, so it is used once that is known.
  const event = shardedSubscribers ? "subscribersReady" : "ready";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cluster client not ${event} in time`)), 20_000);
    client.once(event, () => {
      clearTimeout(timer);
      resolve(client);
    });
  });
}

beforeAll(async () => {
  cluster = await startRedisCluster();
  for (let i = 0; i < 2; i += 1) {
    pairs.push({ redis: await connect(cluster.nodes, false), subscriber: await connect(cluster.nodes, true) });
  }
}, 90_000);

afterAll(async () => {
  for (const { redis, subscriber } of pairs) {
    redis.disconnect();
    subscriber.disconnect();
  }
  await cluster?.stop();
}, 30_000);

describeCoordinatorContract(
  "Redis Cluster (3 masters, sharded pub/sub)",
  async (options) => {
    const [first, other] = pairs;
    if (!first || !other) throw new Error("cluster clients are not connected");
    return redisContractSubject(first, other, options);
  },
  { sharedByInstances: true },
);

describe("Redis Cluster coordinator", () => {
  it("re-reads subscribed traces after its sharded subscribers reconnect", async () => {
    const [writerPair] = pairs;
    if (!writerPair) throw new Error("cluster clients are not connected");
    const subscriber = await connect(cluster.nodes, true);
    const prefix = `bwtest:${randomUUID()}:`;
    const options = { retentionMs: 120_000, resultTtlMs: 60_000, upstreamQps: 5 };
    const watcher = createRedisCoordinator({ redis: writerPair.redis, subscriber, prefix, ...options });
    const writer = createRedisCoordinator({
      redis: writerPair.redis,
      subscriber: writerPair.subscriber,
      prefix,
      ...options,
    });
    try {
      const reg = { trace_id: `trace-${randomUUID()}`, open_id: "o", product_key: "p", user_type: "ilop" };
      const created = await writer.register(reg, 180_000);
      expect(created.kind).toBe("created");
      const received: BindState[] = [];
      await watcher.subscribe(reg.trace_id, (e) => {
        if (e.kind === "state") received.push(e.state);
      });

      // Drop every pub/sub connection of the cluster, then change the state at once.
      await Promise.all(writerPair.redis.nodes("master").map((node) => node.call("CLIENT", "KILL", "TYPE", "pubsub")));
      const next = await writer.updateState(reg.trace_id, (s) => ({
        ...s,
        version: s.version + 1,
        error: { code: "upstream_unavailable", message: "down" },
      }));
      const deadline = Date.now() + 20_000;
      while (received.at(-1)?.version !== next?.version) {
        if (Date.now() > deadline) throw new Error("the state changed during the reconnect never arrived");
        await delay(20);
      }
      expect(received.at(-1)).toEqual(next);
    } finally {
      await watcher.close();
      await writer.close();
      subscriber.disconnect();
    }
  });
});
