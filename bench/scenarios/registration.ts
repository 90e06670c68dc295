import type { Bench } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { POST_LOADER } from "../lib/paths.js";
import { cpuMs } from "../lib/proc.js";
import { commandStats } from "../lib/redis-stats.js";
import { type SummaryRow, verdict } from "../lib/report.js";
import { runHelper } from "../lib/spawn.js";
import { fmt, fmtInt, ratio } from "../lib/stats.js";

/*
 * Registration: POST /v1/binds with a new trace_id each time (bench/post-loader.ts), for
 * --post-seconds with --post-concurrency requests in flight, on a fresh server each time:
 * bindwatch in memory, bindwatch with Redis, and the raw node:http server answering a
 * JSON POST with 201. Every bindwatch registration also starts its poll (SPEC §3).
 */

export interface RegisterResult {
  readonly label: string;
  readonly concurrency: number;
  readonly perSecond: number;
  readonly ok: number;
  readonly statuses: Record<string, number>;
  readonly p50: number;
  readonly p99: number;
  /** Server CPU per registration answered, µs (for bindwatch: the handler and the poll it starts). */
  readonly cpuUsPerRequest: number;
  /** With Redis: commands Redis ran per registration, and its CPU per registration (µs). */
  readonly redis?: { readonly commands: number; readonly cpuUs: number };
}

/** The systems registration is measured on, in the order they run. */
export const REGISTRATION_SYSTEMS = ["raw node:http", "bindwatch, in memory", "bindwatch, Redis"] as const;
export type RegistrationSystem = (typeof REGISTRATION_SYSTEMS)[number];

export async function runRegistration(bench: Bench): Promise<RegisterResult[]> {
  const { postSeconds, postConcurrency } = bench.options.sizes;
  logSection(`Registration: POST /v1/binds for ${postSeconds} s, ${postConcurrency} in flight`);
  const t0 = Date.now();
  const results: RegisterResult[] = [];
  for (const system of REGISTRATION_SYSTEMS) {
    results.push(await measureRegistration(bench, system, postConcurrency, "reg"));
  }
  logScenarioDone("registration", t0);
  return results;
}

export function registrationRows(results: readonly RegisterResult[]): SummaryRow[] {
  const of = (system: RegistrationSystem) => results.find((r) => r.label === system);
  const raw = of("raw node:http");
  if (!raw) return [];
  const figure = (r: RegisterResult) => `${fmtInt(r.perSecond)} (p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms)`;
  const rows: SummaryRow[] = [];
  for (const [system, where, floor] of [
    ["bindwatch, in memory", "in memory", 0.4],
    ["bindwatch, Redis", "Redis", 0.3],
  ] as const) {
    const r = of(system);
    if (!r) continue;
    rows.push([
      `Registration, POST /v1/binds per second, ${r.concurrency} in flight (${where}, logs at info)`,
      figure(r),
      `raw node:http ${figure(raw)}`,
      `${ratio(r.perSecond, raw.perSecond)} raw`,
      `≥ ${fmt(floor, 1)}× raw`,
      verdict(r.perSecond >= floor * raw.perSecond),
    ]);
  }
  const memory = of("bindwatch, in memory");
  const redis = of("bindwatch, Redis");
  if (memory && redis) {
    rows.push([
      "Server CPU per registration, µs, in memory / Redis (the handler and the poll it starts)",
      `${fmtInt(memory.cpuUsPerRequest)} / ${fmtInt(redis.cpuUsPerRequest)}`,
      `raw node:http ${fmtInt(raw.cpuUsPerRequest)}`,
      `${ratio(memory.cpuUsPerRequest, raw.cpuUsPerRequest)} raw`,
      "—",
      "—",
    ]);
    if (redis.redis) {
      rows.push([
        "Redis per registration: commands / redis-server CPU, µs",
        `${fmt(redis.redis.commands, 1)} / ${fmtInt(redis.redis.cpuUs)}`,
        "—",
        "—",
        "—",
        "—",
      ]);
    }
  }
  return rows;
}

/**
 * Loads a fresh server of `system` (and a fresh Redis for it) with `concurrency` registrations in
 * flight for --post-seconds, then stops it. `tag` keeps the trace ids apart from other runs'.
 */
export async function measureRegistration(
  bench: Bench,
  system: RegistrationSystem,
  concurrency: number,
  tag: string,
): Promise<RegisterResult> {
  const redis = system === "bindwatch, Redis" ? await bench.startRedis() : null;
  const server =
    system === "raw node:http"
      ? await bench.startRaw()
      : await bench.startBindwatch(redis ? { REDIS_URL: redis.url } : {});
  const short = { "raw node:http": "raw", "bindwatch, in memory": "mem", "bindwatch, Redis": "redis" }[system];
  const { postSeconds } = bench.options.sizes;
  const redisPort = redis ? Number(new URL(redis.url).port) : 0;
  const before = {
    cpu: cpuMs(server.pid) ?? 0,
    redisCpu: redis ? (cpuMs(redis.pid) ?? 0) : 0,
    stats: redis ? await commandStats(redisPort) : {},
  };
  const out = await runHelper<{
    ok: number;
    issued: number;
    statuses: Record<string, number>;
    ms: number;
    latency: { p50: number; p99: number; max: number };
  }>(
    POST_LOADER,
    {
      URL: server.url,
      CONCURRENCY: String(concurrency),
      DURATION_MS: String(postSeconds * 1000),
      MAX_REQUESTS: "200000",
      PREFIX: bench.uniqueName(`${tag}-${short}-${concurrency}`),
    },
    postSeconds * 1000 + 60_000,
  );
  const cpuUsed = (cpuMs(server.pid) ?? 0) - before.cpu;
  let redisFigures: RegisterResult["redis"];
  if (redis) {
    const stats = await commandStats(redisPort);
    const commands = Object.entries(stats)
      .filter(([name]) => name !== "info")
      .reduce((n, [name, calls]) => n + calls - (before.stats[name] ?? 0), 0);
    const ok = Math.max(1, out.ok);
    redisFigures = { commands: commands / ok, cpuUs: (((cpuMs(redis.pid) ?? 0) - before.redisCpu) * 1000) / ok };
  }
  await server.stop();
  await redis?.stop();
  const r: RegisterResult = {
    label: system,
    concurrency,
    perSecond: out.ok / (out.ms / 1000),
    ok: out.ok,
    statuses: out.statuses,
    p50: out.latency.p50,
    p99: out.latency.p99,
    cpuUsPerRequest: (cpuUsed * 1000) / Math.max(1, out.ok),
    ...(redisFigures ? { redis: redisFigures } : {}),
  };
  log(
    `   ${system}, ${concurrency} in flight: ${fmtInt(r.perSecond)} POST/s (${fmtInt(out.ok)} × 201 in ${fmt(out.ms / 1000, 1)} s; statuses ${JSON.stringify(out.statuses)}; p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms; ` +
      `server CPU ${fmtInt(r.cpuUsPerRequest)} µs per registration` +
      `${r.redis ? `; Redis ${fmt(r.redis.commands, 1)} commands and ${fmtInt(r.redis.cpuUs)} µs of CPU per registration` : ""})`,
  );
  return r;
}
