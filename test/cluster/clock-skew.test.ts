import { describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
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
import { skewedClockEnv } from "../support/faketime.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * One clock for the deployment (SPEC §4.7): three instances on one Redis whose wall
 * clocks disagree — one right, one 30 s ahead, one 30 s behind (libfaketime) — with
 * watchers of every trace on all three. Measured at the gateway double, on the real
 * clock: never two calls of a trace at once, never two closer than 0.8 × interval, one
 * call per trace per interval; and every watcher gets the final the gateway gave, or
 * `expired` exactly when the deadline (on the Redis clock) passed — never early.
 */

const INTERVAL_MS = 1000;
const SKEWS_S = [0, 30, -30] as const;
const BIND_TIMEOUT_MS = 9_000;
const BOUND_TRACES = 9;
const POLLS_BEFORE_BOUND = 5;
const NEVER_TRACES = 3;

let gateway: Gateway;
let instances: Instance[] = [];
const watchers: Watcher[] = [];

useCluster(
  {
    count: SKEWS_S.length,
    appKey: "skew-app-key",
    appSecret: "skew-app-secret-0123456789",
    intervalMs: INTERVAL_MS,
    env: { BIND_TIMEOUT_MS: String(BIND_TIMEOUT_MS), MAX_STREAMS: "1000" },
    instanceEnv: (i) => skewedClockEnv(SKEWS_S[i] ?? 0),
    watchers,
  },
  (cluster) => {
    ({ gateway, instances } = cluster);
  },
);

describe("instances whose clocks are 30 s apart (libfaketime)", () => {
  it("poll in single flight at one call per interval, and every watcher gets the right final at the right time", async () => {
    // The premise: the instances' clocks really disagree by about a minute.
    const clocks = await Promise.all(
      instances.map(async (i) => Date.parse((await fetch(`${i.url}/healthz`)).headers.get("date") ?? "")),
    );
    expect(Math.max(...clocks) - Math.min(...clocks)).toBeGreaterThan(55_000);

    const traces: { traceId: string; outcome: "bound" | "expired"; registeredAt: number; state: BindState }[] = [];
    for (let t = 0; t < BOUND_TRACES + NEVER_TRACES; t += 1) {
      const outcome = t < BOUND_TRACES ? "bound" : "expired";
      const traceId = newTraceId(`skew-${outcome}`);
      await gateway.setScript(traceId, outcome === "bound" ? scriptBoundAfter(POLLS_BEFORE_BOUND) : scriptNever());
      const registrar = instances[t % instances.length] as Instance;
      const registeredAt = Date.now();
      const posted = await postBind(registrar.url, bindBody(traceId));
      expect(posted.status).toBe(201);
      traces.push({ traceId, outcome, registeredAt, state: posted.json.state as BindState });
      for (const instance of instances) watchers.push(await openWatcher(instance, traceId));
    }

    // created_at and expires_at come from the Redis clock, whichever instance registered.
    for (const { state, registeredAt } of traces) {
      expect(Math.abs(Date.parse(state.created_at) - registeredAt)).toBeLessThan(2_000);
      expect(Date.parse(state.expires_at) - Date.parse(state.created_at)).toBe(BIND_TIMEOUT_MS);
    }

    await waitUntil(
      () => watchers.every((w) => w.reader.ended),
      BIND_TIMEOUT_MS + 20_000,
      "every watcher to get its final",
      50,
    );

    const reports = await Promise.all(traces.map((t) => gateway.getTrace(t.traceId)));
    const allGaps: number[] = [];
    for (const [i, trace] of traces.entries()) {
      const report = reports[i];
      if (!report) throw new Error("no report");
      expect(report.maxInFlight, trace.traceId).toBe(1);
      const gaps = gapsOf(callStarts(report));
      allGaps.push(...gaps);
      expect(Math.min(...gaps), trace.traceId).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
      if (trace.outcome === "bound") expect(report.callCount, trace.traceId).toBe(POLLS_BEFORE_BOUND + 1);

      const finals = watchers.filter((w) => w.traceId === trace.traceId).map(finalEventsOf);
      expect(finals, trace.traceId).toEqual(
        Array(instances.length).fill([{ event: trace.outcome, traceId: trace.traceId, status: trace.outcome }]),
      );
      if (trace.outcome === "expired") {
        // Never before the deadline, and soon after it: the deadline is Redis's, not an instance's.
        for (const w of watchers.filter((x) => x.traceId === trace.traceId)) {
          const at = w.reader.events.at(-1)?.at ?? 0;
          const arrived = w.openedAt + at;
          expect(arrived - trace.registeredAt, `${trace.traceId} on ${w.instance.name}`).toBeGreaterThanOrEqual(
            BIND_TIMEOUT_MS - 100,
          );
          expect(arrived - trace.registeredAt).toBeLessThan(BIND_TIMEOUT_MS + 3 * INTERVAL_MS);
        }
      }
    }
    const perInterval = INTERVAL_MS / mean(allGaps);
    console.info(
      `clock skew ±30 s: ${allGaps.length + traces.length} calls, ${perInterval.toFixed(3)} calls per trace per interval, ` +
        `min gap ${Math.min(...allGaps)} ms, max in flight ${Math.max(...reports.map((r) => r.maxInFlight))}`,
    );
    expect(perInterval).toBeGreaterThan(0.95);
    expect(perInterval).toBeLessThan(1.05);
  }, 60_000);
});
