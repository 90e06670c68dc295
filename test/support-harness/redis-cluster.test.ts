import { randomUUID } from "node:crypto";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RedisCluster, startRedisCluster } from "../support/redis-cluster.js";
import { queryNode } from "../support/redis-process.js";
import { waitUntil } from "../support/server.js";

const clients: Cluster[] = [];

/** A Cluster client, once it knows the slot map (and, with sharded subscribers, has them connected). */
async function connectClient(cluster: RedisCluster, shardedSubscribers: boolean): Promise<Cluster> {
  const client = new Cluster(cluster.nodes, { shardedSubscribers, redisOptions: { connectTimeout: 2_000 } });
  client.on("error", () => {});
  clients.push(client);
  await new Promise<void>((resolve) => client.once(shardedSubscribers ? "subscribersReady" : "ready", resolve));
  return client;
}

describe("startRedisCluster({ replicas: 1 })", () => {
  let cluster: RedisCluster;
  // A hash tag of its own, so the key and the channel share a slot.
  const key = `{harness-${randomUUID()}}:value`;
  const channel = key.replace(":value", ":channel");

  beforeAll(async () => {
    const started = performance.now();
    cluster = await startRedisCluster({ replicas: 1 });
    console.info(`replicated cluster up in ${Math.round(performance.now() - started)} ms`);
  }, 40_000);
  afterAll(async () => {
    for (const client of clients.splice(0)) client.disconnect();
    await cluster?.stop();
  });

  it("has three masters covering every slot, each followed by one replica", async () => {
    const nodes = await cluster.topology();
    const masters = nodes.filter((n) => n.role === "master");
    const replicas = nodes.filter((n) => n.role === "replica");
    expect(masters).toHaveLength(3);
    expect(masters.flatMap((m) => m.slots).reduce((sum, [a, b]) => sum + b - a + 1, 0)).toBe(16_384);
    expect(replicas.map((r) => r.masterPort).sort()).toEqual(masters.map((m) => m.port).sort());
    expect(cluster.nodes).toHaveLength(6);
  });

  it("replicates a write to the replica of the key's master", async () => {
    const client = await connectClient(cluster, false);
    await client.set(key, "replicated");
    const master = await cluster.masterFor(key);
    const replica = (await cluster.topology()).find((n) => n.masterPort === master.port);
    if (!replica) throw new Error(`no replica follows ${master.port}`);
    await waitUntil(
      async () => (await queryNode(replica.port, [["READONLY"], ["GET", key]]))?.[1] === "replicated",
      5_000,
      "the write on the replica",
    );
  });

  it("moves a killed master's slots to its replica; Cluster clients keep working", async () => {
    const client = await connectClient(cluster, false);
    const subscriber = await connectClient(cluster, true);
    const received: string[] = [];
    subscriber.on("smessage", (_channel: string, message: string) => received.push(message));
    await subscriber.ssubscribe(channel);
    await client.spublish(channel, "before");
    await waitUntil(() => received.includes("before"), 5_000, "the message before the failover");

    const master = await cluster.masterFor(key);
    const replica = (await cluster.topology()).find((n) => n.masterPort === master.port);
    const started = performance.now();
    await cluster.kill(master.port);
    const promoted = await cluster.waitForFailover(master.port);
    const tookMs = Math.round(performance.now() - started);
    console.info(`cluster failover took ${tookMs} ms`);
    expect(promoted.port).toBe(replica?.port);
    expect((await cluster.masterFor(key)).port).toBe(promoted.port);
    expect(tookMs).toBeLessThan(10_000);

    await waitUntil(async () => (await client.set(key, "after").catch(() => null)) === "OK", 10_000, "a write");
    expect(await client.get(key)).toBe("after");
    await waitUntil(
      async () => {
        await client.spublish(channel, "after").catch(() => 0);
        return received.includes("after");
      },
      10_000,
      "a sharded message after the failover",
      200,
    );

    const started2 = performance.now();
    const rejoined = await cluster.restart(master.port);
    console.info(`killed master rejoined in ${Math.round(performance.now() - started2)} ms`);
    expect(rejoined).toMatchObject({ role: "replica", masterPort: promoted.port, failed: false });
  });
});

describe("startRedisCluster()", () => {
  it("starts three masters and no replicas", async () => {
    const cluster = await startRedisCluster();
    try {
      const nodes = await cluster.topology();
      expect(nodes.map((n) => n.role)).toEqual(["master", "master", "master"]);
    } finally {
      await cluster.stop();
    }
  }, 30_000);
});
