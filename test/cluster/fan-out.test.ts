import { describe, expect, it } from "vitest";
import type { SimTraceReport } from "../../src/sim/gateway.js";
import { scriptBoundAfter } from "../../src/sim/scripts.js";
import {
  callStarts,
  finalEventsOf,
  type Gateway,
  gapsOf,
  type Instance,
  mean,
  openWatcher,
  useCluster,
  type Watcher,
} from "../support/cluster.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * 300 watchers of 30 traces spread over 3 instance processes
 * sharing one Redis cost the upstream one checkbind call per trace per interval —
 * counted at the gateway double — and every watcher gets exactly one final event.
 */

const APP_KEY = "23456789";
const APP_SECRET = "cluster-fan-out-secret";
const INTERVAL_MS = 1000;
const TRACES = 30;
const WATCHERS_PER_TRACE = 10;
const INSTANCES = 3;

let gateway: Gateway;
let instances: Instance[] = [];
const watchers: Watcher[] = [];

useCluster(
  {
    count: INSTANCES,
    appKey: APP_KEY,
    appSecret: APP_SECRET,
    intervalMs: INTERVAL_MS,
    env: {
      MAX_STREAMS: "1000",
    },
    watchers,
  },
  (cluster) => {
    ({ gateway, instances } = cluster);
  },
);

/** Binds finished, summed over the instances (the warm-up traces count too). */
async function finishedBinds(): Promise<number> {
  const counts = await Promise.all(instances.map((i) => i.metric("bindwatch_binds_finished_total")));
  return counts.reduce((sum, n) => sum + (Number.isNaN(n) ? 0 : n), 0);
}

describe("3 instances, 30 traces, 300 watchers", () => {
  it("poll each trace once per interval in single flight and fan out exactly one final event to every watcher", async () => {
    const finishedBefore = await finishedBinds();
    // Bound after 8, 9 or 10 pending polls: 9–11 calls per trace.
    const traces = Array.from({ length: TRACES }, (_, i) => ({ id: newTraceId("fan"), pending: 8 + (i % 3) }));
    await Promise.all(traces.map((t) => gateway.setScript(t.id, scriptBoundAfter(t.pending))));

    // Each trace registered on one instance (round robin), where polling starts at once, then
    // watched by ten watchers over the three instances (4/3/3, rotating). One trace after the
    // other, as clients arrive: 330 requests in one burst would starve the 2-core machine for
    // a few hundred milliseconds, and a call stamped before such a stall reaches the gateway
    // late, which the gateway would count as a short gap.
    for (const [i, t] of traces.entries()) {
      const posted = await postBind((instances[i % INSTANCES] as Instance).url, bindBody(t.id));
      expect(posted.status, t.id).toBe(201);
      await Promise.all(
        Array.from({ length: WATCHERS_PER_TRACE }, async (_, j) => {
          watchers.push(await openWatcher(instances[(i + j) % INSTANCES] as Instance, t.id));
        }),
      );
    }
    expect(watchers).toHaveLength(TRACES * WATCHERS_PER_TRACE);

    await waitUntil(() => watchers.every((w) => w.reader.ended), 40_000, "every stream to end", 50);

    // Each watcher attached while its trace was pending (the fan-out is live, not read back
    // from the stored result) and got exactly one final event, the last one, for its own trace.
    const wrong = watchers
      .map((w) => ({
        where: `${w.traceId} on ${w.instance.name}`,
        error: w.reader.error === null ? null : String(w.reader.error),
        first: w.reader.events[0]?.event,
        last: w.reader.events.at(-1)?.event,
        finals: finalEventsOf(w),
        traceId: w.traceId,
      }))
      .filter(
        (w) =>
          w.error !== null ||
          w.first !== "pending" ||
          w.last !== "bound" ||
          w.finals.length !== 1 ||
          w.finals[0]?.traceId !== w.traceId ||
          w.finals[0]?.status !== "bound",
      );
    expect(wrong).toEqual([]);

    // Nothing polls any more anywhere: the call log is complete.
    await waitUntil(
      async () => (await Promise.all(instances.map((i) => i.activePolls()))).every((n) => n === 0),
      10_000,
      "every lease to be released",
      50,
    );

    const reports = await Promise.all(traces.map((t) => gateway.getTrace(t.id)));
    const perTrace = traces.map((t, i) => {
      const report = reports[i] as SimTraceReport;
      const starts = callStarts(report);
      const gaps = gapsOf(starts);
      return {
        id: t.id,
        expectedCalls: t.pending + 1,
        callCount: report.callCount,
        maxInFlight: report.maxInFlight,
        minStartGapMs: report.minStartGapMs ?? Number.NaN,
        meanGapMs: mean(gaps),
        spanMs: (starts.at(-1) ?? 0) - (starts[0] ?? 0),
        gaps: gaps.join(" "),
      };
    });

    // Every call passed the gateway's checks; no trace got a call beyond the one that bound it.
    expect((await gateway.stats()).rejectedTotal).toBe(0);
    expect(perTrace.filter((t) => t.callCount !== t.expectedCalls)).toEqual([]);
    // Single flight across the three processes, and the 0.8 × interval floor between starts.
    expect(perTrace.filter((t) => t.maxInFlight !== 1)).toEqual([]);
    expect(perTrace.filter((t) => !(t.minStartGapMs >= 0.8 * INTERVAL_MS))).toEqual([]);

    // One call per trace per interval, within 5 %: the scheduler draws each gap uniformly
    // from [0.9, 1.1] × interval, so the mean gap must sit at the interval.
    const meanGap = mean(perTrace.map((t) => t.meanGapMs));
    const totalCalls = perTrace.reduce((n, t) => n + t.callCount, 0);
    const callsAtOnePerInterval = perTrace.reduce((n, t) => n + t.spanMs / INTERVAL_MS + 1, 0);
    console.info(
      `[fan-out] ${totalCalls} calls for ${TRACES} traces (${callsAtOnePerInterval.toFixed(1)} at exactly one per interval); ` +
        `mean gap ${meanGap.toFixed(1)} ms (per trace ${Math.min(...perTrace.map((t) => t.meanGapMs)).toFixed(0)}–` +
        `${Math.max(...perTrace.map((t) => t.meanGapMs)).toFixed(0)}), min gap ${Math.min(...perTrace.map((t) => t.minStartGapMs))} ms`,
    );
    expect(meanGap).toBeGreaterThanOrEqual(0.95 * INTERVAL_MS);
    expect(meanGap).toBeLessThanOrEqual(1.05 * INTERVAL_MS);
    expect(totalCalls / callsAtOnePerInterval).toBeGreaterThanOrEqual(0.95);
    expect(totalCalls / callsAtOnePerInterval).toBeLessThanOrEqual(1.05);

    // Each bind was finished once, by whichever instance made its last call.
    expect((await finishedBinds()) - finishedBefore).toBe(TRACES);

    // No instance died on the way.
    expect(instances.map((i) => i.exitInfo())).toEqual(instances.map(() => null));
  }, 60_000);
});
