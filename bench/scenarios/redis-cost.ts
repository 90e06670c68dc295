import { createConnection } from "node:net";
import { type Bench, POLL_INTERVAL_MS, registerBinds } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
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
}

/** One command's raw reply over a socket of its own. */
function rawCommand(port: number, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let reply = "";
    const timer = setTimeout(() => socket.destroy(new Error("timeout")), 5_000);
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8");
      const header = reply.indexOf("\r\n");
      if (header > 0 && Buffer.byteLength(reply) >= header + 2 + Number(reply.slice(1, header)) + 2) {
        clearTimeout(timer);
        socket.end();
        resolve(reply);
      }
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  });
}

async function commandStats(port: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const m of (await rawCommand(port, ["INFO", "commandstats"])).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    counts[m[1] ?? ""] = Number(m[2]);
  }
  return counts;
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
  const before = { stats: await commandStats(port), sent: await requestsSent(instances), calls: callsOf() };
  await sleep(costIntervals * POLL_INTERVAL_MS);
  const after = { stats: await commandStats(port), sent: await requestsSent(instances), calls: callsOf() };
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
        `per call over ${fmtInt(r.calls)} calls in ${costIntervals} intervals ` +
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
  ];
}
