import { type Bench, POLL_INTERVAL_MS, registerBinds } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { cpuMs } from "../lib/proc.js";
import { commandStats } from "../lib/redis-stats.js";
import { type SummaryRow, verdict } from "../lib/report.js";
import { type ServerProcess, sleep } from "../lib/spawn.js";
import { fmt, fmtInt } from "../lib/stats.js";

/*
 * What coordination costs Redis per checkbind call (SPEC §8), with 1, 3 and 6 instances
 * watching every trace: every command Redis ran in a steady-state window (INFO
 * commandstats, which counts the commands inside scripts) and every request the
 * instances sent (`bindwatch_redis_requests_total`: a script or a pipeline is one),
 * each divided by the checkbind calls the gateway double saw in the window.
 */

const INSTANCE_COUNTS = [1, 3, 6] as const;
const WATCHERS_PER_TRACE_AND_INSTANCE = 2;
const MAX_COMMANDS = 12;
const MAX_ROUND_TRIPS = 3;

export interface RedisCostResult {
  readonly instances: number;
  readonly calls: number;
  readonly commandsPerCall: number;
  readonly roundTripsPerCall: number;
  /** Commands per call by name. */
  readonly byCommand: Readonly<Record<string, number>>;
  /** CPU of the redis-server process per call, µs (commands, scripts, pub/sub, networking). */
  readonly redisCpuUsPerCall: number;
  /** CPU of all bindwatch instances per call, µs (the TOP call, its Redis steps, fan-out to 2 watchers each). */
  readonly bindwatchCpuUsPerCall: number;
}

function instancesCpuMs(instances: readonly ServerProcess[]): number {
  return instances.reduce((total, instance) => total + (cpuMs(instance.pid) ?? 0), 0);
}

async function requestsSent(instances: readonly ServerProcess[]): Promise<number> {
  let total = 0;
  for (const instance of instances) {
    const text = await (await fetch(`${instance.url}/metrics`)).text();
    for (const m of text.matchAll(/^bindwatch_redis_requests_total\{[^}]*\} (\d+)/gm)) total += Number(m[1]);
  }
  return total;
}

async function measure(bench: Bench, count: number): Promise<RedisCostResult> {
  const { costTraces, costIntervals } = bench.options.sizes;
  const { sim } = bench.gateway;
  const redis = await bench.startRedis();
  const port = Number(new URL(redis.url).port);
  const instances: ServerProcess[] = [];
  for (let i = 0; i < count; i += 1) {
    instances.push(await bench.startBindwatch({ REDIS_URL: redis.url, UPSTREAM_QPS: "1000" }));
  }
  const prefix = bench.uniqueName(`cost-${count}`);
  const traceIds = Array.from({ length: costTraces }, (_, i) => `${prefix}-${i}`);
  const first = instances[0];
  if (!first) throw new Error("no instance");
  await registerBinds(first.url, traceIds);
  const targets = instances.flatMap((instance) =>
    traceIds.flatMap((id) =>
      Array.from({ length: WATCHERS_PER_TRACE_AND_INSTANCE }, () => `${instance.url}/v1/binds/${id}/events`),
    ),
  );
  const { pool } = await bench.openPool(targets, "\nevent: bound\n", "\nevent: pending\n");
  // Past the start-up (registrations, subscriptions, the first lease takes): steady polling.
  await sleep(2 * POLL_INTERVAL_MS);
  const callsOf = () => traceIds.reduce((n, id) => n + sim.getTrace(id).callCount, 0);
  const snapshot = async () => ({
    stats: await commandStats(port),
    sent: await requestsSent(instances),
    calls: callsOf(),
    cpu: cpuMs(redis.pid) ?? 0,
    instancesCpu: instancesCpuMs(instances),
  });
  const before = await snapshot();
  await sleep(costIntervals * POLL_INTERVAL_MS);
  const after = await snapshot();
  await pool.close();
  for (const instance of instances) await instance.stop();
  await redis.stop();

  const calls = after.calls - before.calls;
  const byCommand: Record<string, number> = {};
  let commands = 0;
  for (const [name, n] of Object.entries(after.stats)) {
    if (name === "info") continue; // this scenario's own
    const delta = n - (before.stats[name] ?? 0);
    if (delta <= 0) continue;
    byCommand[name] = delta / calls;
    commands += delta;
  }
  return {
    instances: count,
    calls,
    commandsPerCall: commands / calls,
    roundTripsPerCall: (after.sent - before.sent) / calls,
    byCommand,
    redisCpuUsPerCall: ((after.cpu - before.cpu) * 1000) / calls,
    bindwatchCpuUsPerCall: ((after.instancesCpu - before.instancesCpu) * 1000) / calls,
  };
}

export async function runRedisCost(bench: Bench): Promise<RedisCostResult[]> {
  const { costTraces, costIntervals } = bench.options.sizes;
  logSection(`Redis cost per checkbind call: ${costTraces} traces watched on 1, 3 and 6 instances`);
  const t0 = Date.now();
  const results: RedisCostResult[] = [];
  for (const count of INSTANCE_COUNTS) {
    const r = await measure(bench, count);
    results.push(r);
    log(
      `   ${count} instance(s): ${fmt(r.commandsPerCall, 2)} commands and ${fmt(r.roundTripsPerCall, 2)} round trips ` +
        `per call over ${fmtInt(r.calls)} calls in ${costIntervals} intervals, redis-server CPU ${fmtInt(r.redisCpuUsPerCall)} µs and bindwatch CPU ${fmtInt(r.bindwatchCpuUsPerCall)} µs per call ` +
        `(${Object.entries(r.byCommand)
          .map(([name, n]) => `${name} ${fmt(n, 2)}`)
          .join(", ")})`,
    );
  }
  logScenarioDone("redis cost", t0);
  return results;
}

export function redisCostRows(results: readonly RedisCostResult[]): SummaryRow[] {
  const figure = (pick: (r: RedisCostResult) => number) => results.map((r) => fmt(pick(r), 2)).join(" / ");
  const counts = results.map((r) => r.instances).join(" / ");
  return [
    [
      `Redis commands per checkbind call (incl. inside scripts), ${counts} instances watching each trace`,
      figure((r) => r.commandsPerCall),
      "—",
      "—",
      `≤ ${MAX_COMMANDS}`,
      verdict(results.every((r) => r.commandsPerCall <= MAX_COMMANDS)),
    ],
    [
      `Redis round trips per checkbind call, ${counts} instances`,
      figure((r) => r.roundTripsPerCall),
      "—",
      "—",
      `≤ ${MAX_ROUND_TRIPS}`,
      verdict(results.every((r) => r.roundTripsPerCall <= MAX_ROUND_TRIPS)),
    ],
    [
      `CPU per checkbind call, µs: redis-server, then all bindwatch instances together (${counts} instances)`,
      `redis-server ${results.map((r) => fmtInt(r.redisCpuUsPerCall)).join(" / ")}; bindwatch ${results.map((r) => fmtInt(r.bindwatchCpuUsPerCall)).join(" / ")}`,
      "—",
      "—",
      "—",
      "—",
    ],
  ];
}
