import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scriptBoundAfter } from "../../src/sim/scripts.js";
import {
  ensureBuilt,
  finalEventsOf,
  type Gateway,
  type Instance,
  killAll,
  openWatcher,
  readyEverywhere,
  startGateway,
  startInstance,
  type Watcher,
} from "../support/cluster.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { startRedisSentinel } from "../support/redis-sentinel.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * Instance processes (`npm start`'s entry) configured for a Redis Cluster
 * (REDIS_CLUSTER_NODES) or for Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_MASTER,
 * REDIS_PASSWORD) share their state: a trace registered on one is watched to its final
 * event on the other.
 */

const APP_KEY = "67890123";
const APP_SECRET = "cluster-topologies-secret";
const INTERVAL_MS = 300;
/** Long enough for the stream to open first: its final event then comes through pub/sub. */
const PENDING_POLLS = 5;

let gateway: Gateway;
const instances: Instance[] = [];
const watchers: Watcher[] = [];
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  ensureBuilt();
  gateway = await startGateway({ appKey: APP_KEY, appSecret: APP_SECRET });
}, 60_000);

afterAll(async () => {
  for (const w of watchers.splice(0)) w.reader.close();
  await killAll(instances);
  await gateway?.close();
  for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => {});
}, 30_000);

function logsOf(instance: Instance): Record<string, unknown>[] {
  return instance.lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** Two instances on `env`, once both answer `/readyz` with 200. */
async function startPair(prefix: string, env: Record<string, string>): Promise<[Instance, Instance]> {
  const common = {
    TOP_APP_KEY: APP_KEY,
    TOP_APP_SECRET: APP_SECRET,
    TOP_GATEWAY_URL: gateway.url,
    POLL_INTERVAL_MS: String(INTERVAL_MS),
    POLL_LINGER_MS: "1000",
    UPSTREAM_QPS: "1000",
    ...env,
  };
  const pair = await Promise.all([startInstance(`${prefix}-a`, common), startInstance(`${prefix}-b`, common)]);
  instances.push(...pair);
  await waitForReady(pair, `both ${prefix} instances`);
  return pair;
}

/** `/readyz` 200 on every one of `pair`. */
async function waitForReady(pair: readonly Instance[], what: string): Promise<void> {
  await waitUntil(() => readyEverywhere(pair), 15_000, `/readyz 200 on ${what}`, 50);
}

/**
 * Registers a trace on `a` and watches it on `b` until its final event. Right after a
 * failover a call may still meet the old topology (503): registering and opening the
 * stream are tried again until they go through, as a client would.
 */
async function expectSharedState(a: Instance, b: Instance, traceId = newTraceId("topology")): Promise<void> {
  await gateway.setScript(traceId, scriptBoundAfter(PENDING_POLLS));
  await waitUntil(
    async () => [200, 201].includes((await postBind(a.url, bindBody(traceId))).status),
    10_000,
    `the registration of ${traceId} on ${a.name}`,
    100,
  );
  const watcher = await waitUntil(
    () => openWatcher(b, traceId).catch(() => null),
    10_000,
    `a stream on ${b.name}`,
    100,
  );
  watchers.push(watcher);
  await waitUntil(() => finalEventsOf(watcher).length > 0, 15_000, `the final event of ${traceId} on ${b.name}`);
  expect(finalEventsOf(watcher)).toEqual([{ event: "bound", traceId, status: "bound" }]);
  expect(watcher.reader.events[0]?.event).toBe("pending");
  // One deployment-wide poller: the gateway saw the calls of one trace, not one set per instance.
  expect((await gateway.getTrace(traceId)).callCount).toBe(PENDING_POLLS + 1);
}

describe("instances given REDIS_CLUSTER_NODES", () => {
  it("share state through the Redis Cluster, and again once a master failed over", async () => {
    const cluster = await startRedisCluster({ replicas: 1 });
    cleanups.push(() => cluster.stop());
    const [a, b] = await startPair("cluster", {
      REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `redis://${n.host}:${n.port}`).join(","),
    });
    const announced = logsOf(a).find((log) => log.msg === "coordinating through a Redis Cluster");
    expect(announced?.redis).toMatchObject({
      topology: "cluster",
      nodes: cluster.nodes.map((n) => `${n.host}:${n.port}`),
    });
    await expectSharedState(a, b);

    // The master of the next trace's slot dies; its replica takes over, and both instances follow.
    const traceId = newTraceId("topology");
    const master = await cluster.masterFor(`{${traceId}}`);
    await cluster.kill(master.port);
    await cluster.waitForFailover(master.port);
    await waitForReady([a, b], "both instances after the failover");
    await expectSharedState(a, b, traceId);
    // The dead master's sharded subscriber failed dozens of times a second; a few lines say so.
    for (const instance of [a, b]) {
      const errors = logsOf(instance).filter((log) => log.msg === "redis connection error");
      expect(errors.length, instance.name).toBeLessThanOrEqual(6);
    }
  }, 40_000);
});

describe("instances given REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_PASSWORD", () => {
  it("share state through the master the sentinels name, and never log the password", async () => {
    const password = `pw-${randomUUID()}`;
    const sentinel = await startRedisSentinel({ password });
    cleanups.push(() => sentinel.stop());
    const [a, b] = await startPair("sentinel", sentinel.env);
    const announced = logsOf(a).find((log) => log.msg === "coordinating through Redis Sentinel");
    expect(announced?.redis).toMatchObject({ topology: "sentinel", masterName: sentinel.name, auth: true });
    await expectSharedState(b, a);
    for (const instance of [a, b]) {
      expect(instance.lines.join("\n")).not.toContain(password);
      expect(instance.stderr()).not.toContain(password);
    }
  }, 40_000);
});
