import { describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever, scriptSlow } from "../../src/sim/scripts.js";
import {
  callStarts,
  type Deployment,
  finalEventsOf,
  gapsOf,
  type Instance,
  openWatcher,
  readMetric,
  readyEverywhere,
  type Watcher,
  waitForCallAfter,
} from "../support/cluster.js";
import { FAILOVER_TOPOLOGIES, type FailoverStore, useFailoverDeployment } from "../support/redis-failover.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * The fence of SPEC §4.9. Instance A holds a trace's lease and is mid-call (the double
 * holds its answer) when the master dies; the lease and the call's start went to the
 * master alone, so the promoted replica has the trace with no holder. A watcher then
 * opens on instance B, which takes the lease at once: only the quiet period after a lost
 * connection keeps B from calling TOP while A's call still runs.
 */

/** Takeover 15 s: the lease is 9 s, A's call is cut 8.7 s after its start at the latest. */
const INTERVAL_MS = 5_000;
/** How long the double holds A's call: past the failover and B's lease, within A's guard. */
const SLOW_MS = 8_000;

async function activePolls(instance: Instance): Promise<number> {
  return readMetric(await (await fetch(`${instance.url}/metrics`)).text(), "bindwatch_active_polls");
}

describe.each(FAILOVER_TOPOLOGIES)("the fence after a failover of $name", (topology) => {
  let store: FailoverStore;
  let deployment: Deployment;
  const watchers: Watcher[] = [];
  useFailoverDeployment(
    topology,
    {
      count: 2,
      appKey: "fence-app-key",
      appSecret: "fence-app-secret-0123456789",
      intervalMs: INTERVAL_MS,
      env: { BIND_TIMEOUT_MS: "120000", TOP_TIMEOUT_MS: "10000" },
      watchers,
    },
    (started, running) => {
      store = started;
      deployment = running;
    },
  );

  it("lets no instance call while a call begun before the failover may still run", async () => {
    const { gateway, instances } = deployment;
    const [a, b] = instances as [Instance, Instance];
    const traceId = newTraceId("fence");
    await gateway.setScript(traceId, scriptNever());
    expect((await postBind(a.url, bindBody(traceId))).status).toBe(201);
    // The registration's own poll, then its lease let go once the linger is over; the replica has it all.
    const first = await waitForCallAfter(gateway, traceId, 0, 10_000, "the registration's poll");
    await waitUntil(async () => (await activePolls(a)) === 0, 10_000, "A to let its poll go", 50);
    await store.replicated(traceId);
    // Past the spacing, A's next call starts as soon as a watcher wants it.
    await waitUntil(() => Date.now() >= first.startedAt + INTERVAL_MS, INTERVAL_MS + 1_000, "the spacing", 50);

    await gateway.setScript(traceId, scriptSlow(SLOW_MS, 1, { kind: "pending" }));
    let held = 0;
    await store.failOver(traceId, async () => {
      watchers.push(await openWatcher(a, traceId));
      const call = await waitForCallAfter(gateway, traceId, first.startedAt, 1_500, "A's held call");
      held = call.startedAt;
    });
    const failedOverAt = Date.now();
    await waitUntil(() => readyEverywhere(instances), 30_000, "every instance ready again", 100);
    const readyAt = Date.now();
    // B has no sign of A's lease: the new master lacks it.
    watchers.push(await openWatcher(b, traceId));
    const next = await waitForCallAfter(gateway, traceId, held, 30_000, "the first call after the failover");

    const report = await gateway.getTrace(traceId);
    const heldCall = report.calls.find((c) => c.startedAt === held);
    console.info(
      `${topology.name}: A's call ${heldCall?.endedAt === null ? "still running" : `ended ${(heldCall?.endedAt ?? 0) - held} ms after its start`}; ` +
        `failed over at +${failedOverAt - held} ms, ready at +${readyAt - held} ms; the next began ${next.startedAt - held} ms after it`,
    );
    expect(report.maxInFlight).toBe(1);
    expect(heldCall?.endedAt).not.toBeNull();
    expect(next.startedAt).toBeGreaterThanOrEqual(heldCall?.endedAt ?? Number.POSITIVE_INFINITY);

    await gateway.setScript(traceId, scriptBoundAfter(0));
    await waitUntil(() => watchers.every((w) => w.reader.ended), 40_000, "every watcher's final", 50);
    const after = await gateway.getTrace(traceId);
    expect(after.maxInFlight).toBe(1);
    expect(Math.min(...gapsOf(callStarts(after)))).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
    for (const w of watchers) {
      expect(finalEventsOf(w), `on ${w.instance.name}`).toEqual([{ event: "bound", traceId, status: "bound" }]);
    }
  }, 150_000);
});
