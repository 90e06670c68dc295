import { describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import {
  finalEventsOf,
  findLeaseHolder,
  type Gateway,
  gapsOf,
  type Instance,
  openWatcher,
  useCluster,
  type Watcher,
  waitForCallAfter,
} from "../support/cluster.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * SPEC §4.4: the instance polling a trace is killed with
 * SIGKILL — no release, no goodbye — and another instance with watchers resumes within
 * max(3 × interval, 5 s), still in single flight and never closer than 0.8 × interval.
 */

const APP_KEY = "34567890";
const APP_SECRET = "cluster-failover-secret";
const INTERVAL_MS = 1000;
const TAKEOVER_MS = Math.max(3 * INTERVAL_MS, 5_000);

let gateway: Gateway;
let instances: Instance[] = [];
const watchers: Watcher[] = [];

useCluster(
  {
    count: 3,
    appKey: APP_KEY,
    appSecret: APP_SECRET,
    intervalMs: INTERVAL_MS,
    watchers,
  },
  (cluster) => {
    ({ gateway, instances } = cluster);
  },
);

describe("kill -9 of the lease holder mid-watch", () => {
  it("another instance with watchers resumes within max(3 × interval, 5 s), in single flight", async () => {
    const traceId = newTraceId("failover");
    await gateway.setScript(traceId, scriptNever());
    expect((await postBind((instances[0] as Instance).url, bindBody(traceId))).status).toBe(201);

    const holder = await findLeaseHolder(instances);
    const survivors = instances.filter((i) => i !== holder);
    for (const instance of survivors) {
      for (let n = 0; n < 3; n += 1) watchers.push(await openWatcher(instance, traceId));
    }
    await waitUntil(
      () => watchers.every((w) => w.reader.events.length >= 1),
      5_000,
      "the current state on every watcher",
    );
    // Still the same holder now that the survivors want the trace too (their drivers wait for the lease).
    expect(await findLeaseHolder(instances)).toBe(holder);

    // Kill right after one of its calls started, so no call of the dead instance can still be on its way.
    const before = Math.max(2, (await gateway.getTrace(traceId)).callCount);
    await waitUntil(
      async () => (await gateway.getTrace(traceId)).callCount > before,
      5_000,
      "a new call by the holder",
    );
    holder.child.kill("SIGKILL");
    const killedAt = Date.now();
    expect((await holder.exited).signal).toBe("SIGKILL");

    const next = await waitForCallAfter(
      gateway,
      traceId,
      killedAt,
      TAKEOVER_MS + 2_000,
      "the first call after the kill",
    );
    const takeoverMs = next.startedAt - killedAt;
    const newHolder = await findLeaseHolder(survivors);

    // Bind after one more pending poll by the new holder; every watcher (all on survivors) gets it.
    await gateway.setScript(traceId, scriptBoundAfter(1));
    await waitUntil(() => watchers.every((w) => w.reader.ended), 10_000, "every stream to end", 20);
    await waitUntil(
      async () => (await Promise.all(survivors.map((i) => i.activePolls()))).every((n) => n === 0),
      10_000,
      "the lease to be released",
    );

    const report = await gateway.getTrace(traceId);
    const gaps = gapsOf(report.calls.map((c) => c.startedAt));
    console.info(
      `[failover] ${holder.name} killed; first call after it ${takeoverMs} ms later by ${newHolder.name} ` +
        `(bound ${TAKEOVER_MS} ms); ${report.callCount} calls, gap across the kill ` +
        `${next.startedAt - (report.calls[next.seq - 2]?.startedAt ?? Number.NaN)} ms, min gap ${report.minStartGapMs} ms`,
    );
    expect(takeoverMs).toBeLessThanOrEqual(TAKEOVER_MS);
    expect(report.maxInFlight).toBe(1);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
    expect(report.calls.at(-1)?.outcome).toBe("bound");
    expect(watchers.map((w) => ({ error: w.reader.error, finals: finalEventsOf(w) }))).toEqual(
      watchers.map(() => ({ error: null, finals: [{ event: "bound", traceId, status: "bound" }] })),
    );
    expect(survivors.map((i) => i.exitInfo())).toEqual([null, null]);
  }, 60_000);
});
