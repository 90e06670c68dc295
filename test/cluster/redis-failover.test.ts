import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/gateway.js";
import {
  callStarts,
  type Deployment,
  finalEventsOf,
  gapsOf,
  type Instance,
  openWatcher,
  startDeployment,
  type Watcher,
} from "../support/cluster.js";
import { type RedisCluster, startRedisCluster } from "../support/redis-cluster.js";
import { type RedisSentinel, startRedisSentinel } from "../support/redis-sentinel.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * Redis failover (SPEC §4.9): three instances on a Redis Cluster of three masters with
 * a replica each, and on a Sentinel deployment (a master, a replica, three sentinels).
 * Each trace is registered on one instance and watched on the two others; its master is
 * killed (-9) mid-watch and a replica takes over, possibly without the last writes.
 * Every watcher still gets its final, no two calls of a trace overlap, the spacing
 * holds (measured at the gateway double), and every instance is ready again.
 */

const INTERVAL_MS = 500;
const TRACES = 9;
/** How long the replica is stalled before and after its master dies. */
const LAG_MS = 2_000;

interface Topology {
  readonly name: string;
  start(): Promise<{ storeEnv: Record<string, string>; stop(): Promise<void> }>;
  /** Kills the master that holds `traceId`'s keys and resolves once a replica has taken over. */
  failOver(traceId: string): Promise<void>;
}

let redisCluster: RedisCluster | undefined;
let sentinel: RedisSentinel | undefined;

const TOPOLOGIES: readonly Topology[] = [
  {
    name: "Redis Cluster, 3 masters with a replica each",
    async start() {
      const cluster = await startRedisCluster({ replicas: 1 });
      redisCluster = cluster;
      return {
        storeEnv: { REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",") },
        stop: () => cluster.stop(),
      };
    },
    async failOver(traceId) {
      const cluster = redisCluster as RedisCluster;
      const master = await cluster.masterFor(`bw:{${traceId}}:state`);
      const replica = (await cluster.topology()).find((n) => n.role === "replica" && n.masterPort === master.port);
      if (!replica) throw new Error(`no replica of ${master.port}`);
      await withLaggingReplica(replica.port, () => cluster.kill(master.port));
      await cluster.waitForFailover(master.port);
    },
  },
  {
    name: "Sentinel, a master, a replica and 3 sentinels",
    async start() {
      const deployment = await startRedisSentinel({ password: "sentinel-data-password" });
      sentinel = deployment;
      return {
        storeEnv: {
          REDIS_SENTINELS: deployment.sentinels.map((s) => `${s.host}:${s.port}`).join(","),
          REDIS_SENTINEL_MASTER: deployment.name,
          REDIS_PASSWORD: "sentinel-data-password",
        },
        stop: () => deployment.stop(),
      };
    },
    async failOver() {
      const deployment = sentinel as RedisSentinel;
      const master = await deployment.masterAddress();
      const replica = deployment.dataPorts.find((port) => port !== master.port);
      if (replica === undefined) throw new Error("no replica");
      await withLaggingReplica(replica, () => deployment.killMaster().then(() => undefined), deployment.password);
      await deployment.waitForFailover();
    },
  },
];

/**
 * Stalls the replica (DEBUG SLEEP) so it misses the master's last writes — the leases and
 * call starts of the moment — then kills the master: the replica that takes over lacks
 * them, as asynchronous replication allows.
 */
async function withLaggingReplica(replicaPort: number, kill: () => Promise<void>, password?: string): Promise<void> {
  const replica = new Redis({
    host: "127.0.0.1",
    port: replicaPort,
    ...(password ? { password } : {}),
    lazyConnect: true,
  });
  replica.on("error", () => {});
  try {
    await replica.connect();
    const sleeping = replica.call("DEBUG", "SLEEP", String(LAG_MS / 1000));
    // Long enough for every trace to write a call start the replica never gets.
    await new Promise((resolve) => setTimeout(resolve, LAG_MS / 2));
    await kill();
    await sleeping;
  } finally {
    replica.disconnect();
  }
}

async function readyEverywhere(instances: readonly Instance[]): Promise<boolean> {
  const answers = await Promise.all(
    instances.map((i) =>
      fetch(`${i.url}/readyz`, { signal: AbortSignal.timeout(3_000) }).then(
        (r) => r.status,
        () => 0,
      ),
    ),
  );
  return answers.every((status) => status === 200);
}

describe.each(TOPOLOGIES)("a failover of $name", (topology) => {
  let store: Awaited<ReturnType<Topology["start"]>>;
  let deployment: Deployment;
  const watchers: Watcher[] = [];

  beforeAll(async () => {
    store = await topology.start();
    deployment = await startDeployment({
      count: 3,
      appKey: "failover-app-key",
      appSecret: "failover-app-secret-0123456789",
      intervalMs: INTERVAL_MS,
      storeEnv: store.storeEnv,
      env: { BIND_TIMEOUT_MS: "120000", MAX_STREAMS: "1000" },
    });
  }, 120_000);

  afterAll(async () => {
    await deployment?.stop(watchers.splice(0));
    await store?.stop();
  });

  it("loses no final, never overlaps or crowds two calls of a trace, and every instance is ready again", async () => {
    const { gateway, instances } = deployment;
    const traceIds: string[] = [];
    for (let t = 0; t < TRACES; t += 1) {
      const traceId = newTraceId("failover");
      traceIds.push(traceId);
      await gateway.setScript(traceId, scriptNever());
      const registrar = instances[t % instances.length] as Instance;
      expect((await postBind(registrar.url, bindBody(traceId))).status).toBe(201);
      for (const instance of instances) {
        if (instance !== registrar) watchers.push(await openWatcher(instance, traceId));
      }
    }
    // Polling runs before the master dies.
    await waitUntil(
      async () => (await Promise.all(traceIds.map((id) => gateway.getTrace(id)))).every((r) => r.callCount >= 2),
      15_000,
      "every trace to be polled",
      50,
    );

    const killedAt = Date.now();
    await topology.failOver(traceIds[0] as string);
    await waitUntil(() => readyEverywhere(instances), 30_000, "every instance ready again", 100).catch(
      async (err: unknown) => {
        // Which instance stayed unready, and what its Redis connections said meanwhile.
        for (const i of instances) {
          const status = await fetch(`${i.url}/readyz`).then(
            (r) => r.status,
            () => 0,
          );
          const redisLines = i.lines.filter((l) => /redis|store/i.test(l)).slice(-15);
          console.error(`${i.name}: /readyz ${status}\n${redisLines.join("\n")}`);
        }
        throw err;
      },
    );
    const readyAt = Date.now();
    // Polling resumes on the promoted master: a call of every trace after the failover.
    await waitUntil(
      async () =>
        (await Promise.all(traceIds.map((id) => gateway.getTrace(id)))).every((r) =>
          r.calls.some((c) => c.startedAt > readyAt),
        ),
      30_000,
      "every trace polled again after the failover",
      100,
    );
    for (const id of traceIds) await gateway.setScript(id, scriptBoundAfter(0));
    await waitUntil(() => watchers.every((w) => w.reader.ended), 30_000, "every watcher's final", 50);

    const reports = await Promise.all(traceIds.map((id) => gateway.getTrace(id)));
    const gaps = reports.flatMap((r) => gapsOf(callStarts(r)));
    console.info(
      `${topology.name}: failover to ready in ${readyAt - killedAt} ms; ${reports.reduce((n, r) => n + r.callCount, 0)} calls, ` +
        `max in flight ${Math.max(...reports.map((r) => r.maxInFlight))}, min gap ${Math.min(...gaps)} ms`,
    );
    for (const report of reports) expect(report.maxInFlight, report.traceId).toBe(1);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
    for (const w of watchers) {
      expect(finalEventsOf(w), `${w.traceId} on ${w.instance.name}`).toEqual([
        { event: "bound", traceId: w.traceId, status: "bound" },
      ]);
    }
    expect(await readyEverywhere(instances)).toBe(true);
  }, 120_000);
});
