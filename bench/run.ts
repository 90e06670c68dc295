import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBench } from "./lib/bench.js";
import { createCleanup, killChildrenOnExit } from "./lib/cleanup.js";
import { writeCurveCharts } from "./lib/curve-charts.js";
import { startGateway } from "./lib/gateway.js";
import { log, logSection } from "./lib/log.js";
import { medianSummary } from "./lib/median.js";
import { BenchOptionError, type BenchOptions, checkDescriptorLimits, HELP, parseBenchOptions } from "./lib/options.js";
import { DEFAULT_CHARTS_DIR, ENTRY } from "./lib/paths.js";
import { loadAverage1 } from "./lib/proc.js";
import { describeMachine, type SummaryRow, summaryTable } from "./lib/report.js";
import { killAllChildren } from "./lib/spawn.js";
import { fmt } from "./lib/stats.js";
import { ensureNchan } from "./nchan.js";
import { capacityRows, runCapacity } from "./scenarios/capacity.js";
import { curvesReport, runCurves } from "./scenarios/curves.js";
import { fanoutRows, runFanout } from "./scenarios/fan-out.js";
import { redisCostRows, runRedisCost } from "./scenarios/redis-cost.js";
import { registrationRows, runRegistration } from "./scenarios/registration.js";
import { runSingleFlight, singleFlightRows } from "./scenarios/single-flight.js";

/*
 * `npm run bench`: bindwatch under load from separate client processes on loopback,
 * every figure beside a baseline measured in the same run. See docs/benchmarks.md.
 * One module per scenario in bench/scenarios/, sharing bench/lib/:
 *
 *   capacity      N streams on one instance at the default heartbeat vs a raw node:http SSE server
 *   singleflight  3 instances on one Redis, W watchers over T traces vs the naive design
 *   rediscost     Redis commands and round trips per checkbind call with 1, 3 and 6 instances
 *   fanout        TOP answers `bound` → N watchers (1 and 3 instances) vs Nchan (and raw node:http)
 *   register      POST /v1/binds per second, in memory and with Redis, vs raw node:http
 *   curves        fan-out and registration at growing sizes; writes SVG charts (only with --only)
 *
 * Every load loop is bounded in count and time; every child is stopped at the end.
 */

let options: BenchOptions;
try {
  options = parseBenchOptions(process.argv.slice(2));
  if (!options.help) checkDescriptorLimits(options.sizes);
} catch (err) {
  if (!(err instanceof BenchOptionError)) throw err;
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(2);
}
if (options.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}

const startedAt = Date.now();
const cleanup = createCleanup();
// A bound on the whole bench: 15 minutes a run, 20 more for the curves.
killChildrenOnExit({ limitMs: (15 * options.runs + (options.scenarios.has("curves") ? 20 : 0)) * 60_000, log });
const gateway = await startGateway();

async function main(): Promise<void> {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run npm run build first`);
  const { scenarios, sizes } = options;
  const load0 = loadAverage1();
  const machine = describeMachine();
  log(`bindwatch bench — ${new Date().toISOString()}`);
  log(`options: ${JSON.stringify({ ...sizes, quick: options.quick, only: [...scenarios] })}`);
  log(
    `load average (1 min) at the start: ${fmt(load0, 2)}${load0 > 1 ? "  ⚠ the machine is busy; figures will be noisy" : ""}`,
  );

  const needsNchan = scenarios.has("fanout") || scenarios.has("capacity") || scenarios.has("curves");
  const nchan =
    needsNchan && options.nchan ? ensureNchan({ install: options.install, log: (line) => log(`   ${line}`) }) : null;
  if (nchan) {
    log(
      nchan.ok
        ? `Nchan baseline: ${nchan.version}${nchan.installed ? " (installed now)" : ""}`
        : `Nchan baseline SKIPPED: ${nchan.reason}`,
    );
  }
  const bench = createBench({ options, gateway, nchan, cleanup });

  // Every scenario runs --runs times; each figure's summary row is its median run's.
  const rowsOfRuns: SummaryRow[][] = [];
  for (let run = 1; run <= options.runs; run += 1) {
    if (options.runs > 1) logSection(`Run ${run} of ${options.runs}`);
    const capacity = scenarios.has("capacity") ? await runCapacity(bench) : null;
    const singleFlight = scenarios.has("singleflight") ? await runSingleFlight(bench) : null;
    const redisCost = scenarios.has("rediscost") ? await runRedisCost(bench) : null;
    const fanout = scenarios.has("fanout") ? await runFanout(bench) : null;
    const registration = scenarios.has("register") ? await runRegistration(bench) : null;
    const rows: SummaryRow[] = [
      ...(capacity ? capacityRows(capacity, bench, fanout?.find((r) => r.label === "Nchan")?.perStream ?? null) : []),
      ...(singleFlight ? singleFlightRows(singleFlight, bench) : []),
      ...(redisCost ? redisCostRows(redisCost) : []),
      ...(fanout ? fanoutRows(fanout) : []),
      ...(registration ? registrationRows(registration) : []),
    ];
    if (options.runs > 1 && rows.length > 0) log(`\n${summaryTable(rows)}`);
    rowsOfRuns.push(rows);
  }
  const rows = medianSummary(rowsOfRuns);
  const curves = scenarios.has("curves") ? await runCurves(bench, `${machine.cpu}, Node ${machine.node}`) : null;

  const load1 = loadAverage1();
  const report = [
    `## Benchmark results (${new Date().toISOString().slice(0, 10)})`,
    ...(options.runs > 1 && rows.length
      ? [
          "",
          `Median of ${options.runs} runs: each row is the run whose ratio is the median, with that run's baseline; the ratios of all runs in brackets.`,
        ]
      : []),
    ...(rows.length ? ["", summaryTable(rows)] : []),
    ...(curves ? ["", curvesReport(curves)] : []),
    "",
    `Machine: ${machine.cpu}; ${machine.memory}; ${machine.os}; Node ${machine.node}; Redis ${machine.redis}` +
      `${nchan?.ok ? `; ${nchan.version}` : ""}. Load average ${fmt(load0, 2)} at the start, ${fmt(load1, 2)} at the end; ` +
      `run took ${fmt((Date.now() - startedAt) / 1000, 0)} s.`,
    "",
    `Options: ${JSON.stringify(sizes)}${options.quick ? " (quick)" : ""}`,
    ...(bench.notes.length ? ["", ...bench.notes.map((n) => `Note: ${n}`)] : []),
  ].join("\n");
  logSection("Summary");
  log(report);
  const out = options.out ?? join(tmpdir(), `bindwatch-bench-${new Date().toISOString().replace(/[:.]/g, "-")}.md`);
  writeFileSync(out, `${report}\n`);
  log(`\n(written to ${out})`);
  if (curves) {
    const written = writeCurveCharts(curves, options.chartsDir ?? DEFAULT_CHARTS_DIR);
    log(`(curves: ${written.join(", ")})`);
  }
  if (options.profile) log(`profiles and heap snapshots: ${bench.profileDir}`);
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
} finally {
  await cleanup.runAll();
  await gateway.close();
  killAllChildren();
  process.exit(process.exitCode ?? 0);
}
