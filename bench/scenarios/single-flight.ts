import { type Bench, POLL_INTERVAL_MS, registerBinds } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { NAIVE } from "../lib/paths.js";
import { type SummaryRow, verdict } from "../lib/report.js";
import { runHelper, type ServerProcess, sleep } from "../lib/spawn.js";
import { fmt, fmtInt, mean, ratio } from "../lib/stats.js";

/*
 * Single flight: 3 instances on one Redis, --watchers streams over --traces traces, every
 * trace watched on every instance, the TOP double answering `pending` forever. Counts
 * checkbind calls per trace per poll interval at the double, the most calls a trace had
 * in flight at once and the smallest gap between two calls of a trace. The baseline is
 * the naive design (bench/naive-poller.ts): one poll loop per watcher.
 */

export interface SingleFlightResult {
  readonly perTraceInterval: number;
  readonly maxPerTraceInterval: number;
  readonly minPerTraceInterval: number;
  readonly maxInFlight: number;
  readonly minGapMs: number;
  readonly windowMs: number;
  readonly attached: number;
  readonly naivePerTraceInterval: number;
  readonly naiveExpected: number;
  readonly naiveCalls: number;
  readonly naiveWindowMs: number;
}

export async function runSingleFlight(bench: Bench): Promise<SingleFlightResult> {
  const { watchers, traces, sfIntervals } = bench.options.sizes;
  const { sim } = bench.gateway;
  logSection(`Single flight: 3 instances on one Redis, ${fmtInt(watchers)} watchers over ${traces} traces`);
  const t0 = Date.now();
  const redis = await bench.startRedis();
  const instances: ServerProcess[] = [];
  for (let i = 0; i < 3; i += 1) {
    // The deployment-wide budget is raised so it does not cap T/interval calls per second.
    instances.push(await bench.startBindwatch({ REDIS_URL: redis.url, UPSTREAM_QPS: "1000" }));
  }
  const prefix = bench.uniqueName("sf");
  const traceIds = Array.from({ length: traces }, (_, i) => `${prefix}-${i}`);
  const first = instances[0];
  if (!first) throw new Error("no instance");
  await registerBinds(first.url, traceIds);
  // Watcher i watches trace i mod T on instance ⌊i/T⌋ mod 3: every trace has watchers on every instance.
  const targets = Array.from({ length: watchers }, (_, i) => {
    const instance = instances[Math.floor(i / traces) % instances.length] ?? first;
    return `${instance.url}/v1/binds/${traceIds[i % traces]}/events`;
  });
  const { pool, ready } = await bench.openPool(targets, "\nevent: bound\n", "\nevent: pending\n");
  log(`   ${fmtInt(ready.ready)} watchers attached (${ready.failed} failed) in ${fmt(ready.ms / 1000, 1)} s`);
  await sleep(2 * POLL_INTERVAL_MS);
  const countsA = traceIds.map((id) => sim.getTrace(id).callCount);
  const tA = Date.now();
  await sleep(sfIntervals * POLL_INTERVAL_MS);
  const countsB = traceIds.map((id) => sim.getTrace(id).callCount);
  const windowMs = Date.now() - tA;
  const intervals = windowMs / POLL_INTERVAL_MS;
  const perTrace = traceIds.map((_, i) => ((countsB[i] ?? 0) - (countsA[i] ?? 0)) / intervals);
  const reports = traceIds.map((id) => sim.getTrace(id));
  const maxInFlight = Math.max(...reports.map((r) => r.maxInFlight));
  const minGapMs = Math.min(...reports.map((r) => r.minStartGapMs ?? Number.POSITIVE_INFINITY));
  const attached = (await pool.report(false)).open;
  await pool.close();
  for (const instance of instances) await instance.stop();
  await redis.stop();
  log(
    `   bindwatch: ${fmt(mean(perTrace), 3)} checkbind calls per trace per interval over ${fmt(intervals, 1)} intervals ` +
      `(per trace min ${fmt(Math.min(...perTrace), 2)}, max ${fmt(Math.max(...perTrace), 2)}); ` +
      `max in flight per trace ${maxInFlight}; smallest gap between a trace's calls ${fmtInt(minGapMs)} ms (≥ ${0.8 * POLL_INTERVAL_MS} required)`,
  );
  const naive = await measureNaive(bench);
  logScenarioDone("single flight", t0);
  return {
    perTraceInterval: mean(perTrace),
    maxPerTraceInterval: Math.max(...perTrace),
    minPerTraceInterval: Math.min(...perTrace),
    maxInFlight,
    minGapMs,
    windowMs,
    attached,
    ...naive,
  };
}

export function singleFlightRows(sf: SingleFlightResult, bench: Bench): SummaryRow[] {
  const { watchers, traces } = bench.options.sizes;
  return [
    [
      `Checkbind calls per trace per interval (3 instances, ${fmtInt(watchers)} watchers / ${traces} traces)`,
      `${fmt(sf.perTraceInterval, 3)} (max in flight ${sf.maxInFlight})`,
      `naive ${fmt(sf.naivePerTraceInterval, 2)} (design ${fmt(sf.naiveExpected, 2)})`,
      ratio(sf.perTraceInterval, sf.naivePerTraceInterval),
      "1.00, within 5 %",
      verdict(Math.abs(sf.perTraceInterval - 1) <= 0.05 && sf.maxInFlight <= 1),
    ],
  ];
}

/**
 * The naive design: one poll loop per watcher, against the same gateway double. Its cost per
 * trace depends only on watchers per trace (W/T), so it runs on at most 10 of the traces with the
 * same watchers per trace: the machine then keeps up with it, and the figure is the design's.
 */
async function measureNaive(
  bench: Bench,
): Promise<Pick<SingleFlightResult, "naivePerTraceInterval" | "naiveExpected" | "naiveCalls" | "naiveWindowMs">> {
  const { watchers, traces, naiveIntervals } = bench.options.sizes;
  const { sim } = bench.gateway;
  const naivePrefix = bench.uniqueName("naive");
  const naiveTraceCount = Math.min(traces, 10);
  const naiveWatchers = Math.max(naiveTraceCount, Math.round((watchers * naiveTraceCount) / traces));
  const naiveTraces = Array.from({ length: naiveTraceCount }, (_, i) => `${naivePrefix}-${i}`);
  const lead = POLL_INTERVAL_MS + 500; // every loop has started (random phase within the first interval)
  const naiveWindow = naiveIntervals * POLL_INTERVAL_MS;
  log(
    `   naive: ${fmtInt(naiveWatchers)} poll loops over ${naiveTraceCount} traces (${fmt(naiveWatchers / naiveTraceCount, 1)} watchers per trace) for ${fmt((lead + naiveWindow) / 1000, 1)} s…`,
  );
  const naiveRun = runHelper<{ calls: number; outcomes: Record<string, number> }>(
    NAIVE,
    {
      GATEWAY_URL: bench.gateway.url,
      APP_KEY: bench.gateway.appKey,
      APP_SECRET: bench.gateway.appSecret,
      WATCHERS: String(naiveWatchers),
      TRACES: String(naiveTraceCount),
      TRACE_PREFIX: naivePrefix,
      POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
      DURATION_MS: String(lead + naiveWindow + 1_000),
    },
    lead + naiveWindow + 30_000,
  );
  await sleep(lead);
  const nA = naiveTraces.map((id) => sim.getTrace(id).callCount);
  const nTA = Date.now();
  await sleep(naiveWindow);
  const nB = naiveTraces.map((id) => sim.getTrace(id).callCount);
  const naiveWindowMs = Date.now() - nTA;
  const naive = await naiveRun;
  const naiveCalls = naiveTraces.reduce((n, _, i) => n + (nB[i] ?? 0) - (nA[i] ?? 0), 0);
  const naivePer = naiveCalls / naiveTraceCount / (naiveWindowMs / POLL_INTERVAL_MS);
  const naiveExpected = naiveWatchers / naiveTraceCount;
  log(
    `   naive: ${fmt(naivePer, 2)} calls per trace per interval (design: W/T = ${fmt(naiveExpected, 2)}); ` +
      `${fmtInt(naive.calls)} calls in all, ${fmtInt(naiveCalls / (naiveWindowMs / 1000))} calls/s in the window`,
  );
  return { naivePerTraceInterval: naivePer, naiveExpected, naiveCalls, naiveWindowMs };
}
