import { randomUUID } from "node:crypto";
import { afterEach, describe, it } from "vitest";
import { startRedisCluster } from "../support/redis-cluster.js";
import { startRedisSentinel } from "../support/redis-sentinel.js";
import { startRedisServer } from "../support/redis-server.js";
import { startTestServer, type TestServer, waitUntil } from "../support/server.js";

/*
 * `/readyz` on each Redis topology (SPEC §3 Operations): 200 once the server reaches its
 * Redis and a command goes through, 503 while that Redis is unreachable.
 */

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
}, 20_000);

async function start(env: Record<string, string>): Promise<TestServer> {
  const server = await startTestServer(env);
  cleanups.push(() => server.stop());
  return server;
}

async function readyz(server: TestServer): Promise<number> {
  const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(5_000) });
  await res.arrayBuffer();
  return res.status;
}

async function waitForReadyz(server: TestServer, status: number, timeoutMs: number, what: string): Promise<void> {
  await waitUntil(async () => (await readyz(server)) === status, timeoutMs, `/readyz ${status} ${what}`, 50);
}

describe("/readyz on each Redis topology", () => {
  it("standalone: 200 with Redis, 503 once it is gone", async () => {
    const redis = await startRedisServer();
    cleanups.push(() => redis.stop());
    const server = await start({ REDIS_URL: redis.url });
    await waitForReadyz(server, 200, 5_000, "with Redis up");
    await redis.stop();
    await waitForReadyz(server, 503, 5_000, "with Redis stopped");
  });

  it("Cluster: 200 with the cluster, 503 once every node is stopped", async () => {
    const cluster = await startRedisCluster();
    cleanups.push(() => cluster.stop());
    const server = await start({ REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",") });
    await waitForReadyz(server, 200, 10_000, "with the cluster up");
    await cluster.stop();
    await waitForReadyz(server, 503, 5_000, "with every node stopped");
  }, 40_000);

  it("Sentinel: 200 with a master, 503 while it is dead and not yet replaced, 200 after the failover", async () => {
    const password = `pw-${randomUUID()}`;
    const sentinel = await startRedisSentinel({ password });
    cleanups.push(() => sentinel.stop());
    const server = await start(sentinel.env);
    await waitForReadyz(server, 200, 10_000, "with the master up");
    await sentinel.killMaster();
    await waitForReadyz(server, 503, 5_000, "with the master killed");
    await sentinel.waitForFailover();
    await waitForReadyz(server, 200, 15_000, "after the failover");
  }, 40_000);
});
