import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { parseConfig } from "../../src/runtime/config.js";
import { createRedisConnections, type RedisConnections } from "../../src/runtime/redis-connections.js";
import { createRedisCoordinator } from "../../src/watch/redis-coordinator.js";
import { redisContractSubject } from "../support/redis-contract.js";
import { queryNode } from "../support/redis-process.js";
import { type RedisSentinel, startRedisSentinel } from "../support/redis-sentinel.js";
import { waitUntil } from "../support/server.js";
import { describeCoordinatorContract } from "./coordinator-contract.js";

/*
 * The coordinator contract on a password-protected Sentinel deployment, through the same
 * path as production: the environment parsed by parseConfig, the connections made by
 * createRedisConnections.
 */

const PASSWORD = `pw-${randomUUID()}`;
const OPTIONS = { retentionMs: 120_000, resultTtlMs: 60_000, upstreamQps: 5 };

let sentinel: RedisSentinel;
const pairs: RedisConnections[] = [];

/** Connections as bindwatch makes them from REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_PASSWORD. */
async function connect(name: string): Promise<RedisConnections> {
  const config = parseConfig(sentinel.env);
  if (config.redis?.mode !== "sentinel") throw new Error("expected the Sentinel topology");
  const connections = createRedisConnections(config.redis, { connectionName: name });
  pairs.push(connections);
  await waitUntil(
    () => connections.redis.status === "ready" && connections.subscriber.status === "ready",
    10_000,
    `${name} connected to the master`,
  );
  return connections;
}

beforeAll(async () => {
  sentinel = await startRedisSentinel({ password: PASSWORD });
  await connect("bindwatch-test-a");
  await connect("bindwatch-test-b");
}, 40_000);

afterAll(async () => {
  await Promise.all(pairs.map((p) => p.close()));
  await sentinel?.stop();
}, 20_000);

describeCoordinatorContract(
  "Redis Sentinel (a master, a replica, three sentinels, a password)",
  async (options) => {
    const [first, other] = pairs;
    if (!first || !other) throw new Error("sentinel clients are not connected");
    return redisContractSubject(first, other, options);
  },
  { sharedByInstances: true },
);

describe("Sentinel connections", () => {
  /** Subscribed clients of each sentinel: the failover detectors' `+switch-master` connections. */
  async function sentinelSubscribers(): Promise<number[]> {
    const lists = await Promise.all(sentinel.sentinels.map((s) => queryNode(s.port, [["CLIENT", "LIST"]])));
    return lists.map(
      (reply) =>
        String(reply?.[0] ?? "")
          .split("\n")
          .filter((line) => / sub=[1-9]/.test(line)).length,
    );
  }

  it("listen for +switch-master on the sentinels, and close() leaves no connection to them", async () => {
    const before = await sentinelSubscribers();
    const connections = await connect("bindwatch-test-close");
    // Two connections, each with its failover detector on every sentinel.
    await waitUntil(
      async () => (await sentinelSubscribers()).every((n, i) => n === (before[i] ?? 0) + 2),
      5_000,
      "the failover detectors",
    );
    await connections.close();
    pairs.splice(pairs.indexOf(connections), 1);
    await waitUntil(
      async () => (await sentinelSubscribers()).every((n, i) => n === before[i]),
      5_000,
      "the sentinels to see the failover detectors go",
    );
  });
});

// Last: it fails the master over.
describe("Redis Sentinel coordinator across a failover", () => {
  it("is not ready while the master is gone, then serves from the promoted replica and delivers its changes", async () => {
    const [writerPair] = pairs;
    if (!writerPair) throw new Error("sentinel clients are not connected");
    const watcherPair = await connect("bindwatch-test-watcher");
    const prefix = `bwtest:${randomUUID()}:`;
    const writer = createRedisCoordinator({ ...writerPair, prefix, ...OPTIONS });
    const watcher = createRedisCoordinator({ ...watcherPair, prefix, ...OPTIONS });
    try {
      const reg = { trace_id: `trace-${randomUUID()}`, open_id: "o", product_key: "p", user_type: "ilop" };
      expect((await writer.register(reg, 180_000)).kind).toBe("created");
      // Replication is asynchronous: have the replica hold the registration before its master dies.
      expect(await writerPair.redis.call("WAIT", "1", "5000")).toBe(1);
      const received: BindState[] = [];
      await watcher.subscribe(reg.trace_id, (e) => {
        if (e.kind === "state") received.push(e.state);
      });
      expect(await watcher.isReady()).toBe(true);

      const old = await sentinel.killMaster();
      await waitUntil(async () => !(await writer.isReady()) && !(await watcher.isReady()), 5_000, "not ready");
      const promoted = await sentinel.waitForFailover();
      expect(promoted.port).not.toBe(old.port);
      await waitUntil(async () => (await writer.isReady()) && (await watcher.isReady()), 15_000, "ready again");

      const next = await waitUntil(
        () =>
          writer
            .updateState(reg.trace_id, (s) => ({
              ...s,
              version: s.version + 1,
              error: { code: "upstream_unavailable", message: "after the failover" },
            }))
            .catch(() => null),
        10_000,
        "a write on the promoted master",
      );
      await waitUntil(() => received.at(-1)?.version === next.version, 10_000, "the change on the watcher");
      expect(received.at(-1)).toEqual(next);
    } finally {
      await watcher.close();
      await writer.close();
    }
  }, 40_000);
});
