import { describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import {
  callStarts,
  type Deployment,
  finalEventsOf,
  gapsOf,
  type Instance,
  openWatcher,
  readyEverywhere,
  type Watcher,
} from "../support/cluster.js";
import { FAILOVER_TOPOLOGIES, type FailoverStore, useFailoverDeployment } from "../support/redis-failover.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * Redis failover (SPEC §4.9): three instances on a Redis Cluster of three masters with
 * a replica each, and on a Sentinel deployment (a master, a replica, three sentinels).
 * Each trace is registered on one instance and watched on the two others; its master is
 * killed (-9) mid-watch and a replica takes over without the master's last second of
 * writes (its replication link was cut first: test/support/redis-failover.ts).
 * Every watcher still gets its final, no two calls of a trace overlap, the spacing
 * holds (measured at the gateway double), and every instance is ready again.
 */

const INTERVAL_MS = 500;
const TRACES = 9;

describe.each(FAILOVER_TOPOLOGIES)("a failover of $name", (topology) => {
  let store: FailoverStore;
  let deployment: Deployment;
  const watchers: Watcher[] = [];
  useFailoverDeployment(
    topology,
    {
      count: 3,
      appKey: "failover-app-key",
      appSecret: "failover-app-secret-0123456789",
      intervalMs: INTERVAL_MS,
      env: { BIND_TIMEOUT_MS: "120000", MAX_STREAMS: "1000" },
      watchers,
    },
    (started, running) => {
      store = started;
      deployment = running;
    },
  );

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
    await store.failOver(traceIds[0] as string);
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
