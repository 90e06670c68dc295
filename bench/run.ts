import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, freemem, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { serve } from "@hono/node-server";
import { createTopSimulator, scriptBoundAfter, scriptNever } from "../src/sim/gateway.js";
import { ClientPool } from "./lib/clients.js";
import { cpuMs, loadAverage1, openFds, settledRss } from "./lib/proc.js";
import {
  killAllChildren,
  type RedisProcess,
  runHelper,
  type ServerProcess,
  sleep,
  startNodeProcess,
  startRedis,
  waitFor,
} from "./lib/spawn.js";
import { fmt, fmtInt, kib, type LatencySummary, mean, mib, ratio, summarize } from "./lib/stats.js";
import { ensureNchan, type NchanAvailability, startNchan } from "./nchan.js";

/*
 * `npm run bench`: bindwatch under load from separate client processes on loopback,
 * every figure beside a baseline measured in the same run. See docs/benchmarks.md.
 *
 *   capacity      N streams on one instance at the default heartbeat vs a raw node:http SSE server
 *   single flight 3 instances on one Redis, W watchers over T traces vs the naive design
 *   fan-out       TOP answers `bound` → N watchers (1 and 3 instances) vs Nchan (and raw node:http)
 *   registration  POST /v1/binds per second, in memory and with Redis, vs raw node:http
 *
 * Every load loop is bounded in count and time; every child is stopped at the end.
 */

const { values: args } = parseArgs({
  options: {
    streams: { type: "string" },
    "capacity-traces": { type: "string" },
    fanout: { type: "string" },
    watchers: { type: "string" },
    traces: { type: "string" },
    clients: { type: "string" },
    "idle-ms": { type: "string" },
    "sf-intervals": { type: "string" },
    "naive-intervals": { type: "string" },
    "post-seconds": { type: "string" },
    "post-concurrency": { type: "string" },
    only: { type: "string" },
    quick: { type: "boolean", default: false },
    "no-nchan": { type: "boolean", default: false },
    "no-raw-fanout": { type: "boolean", default: false },
    "no-install": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  },
  strict: true,
});

const HELP = `npm run bench -- [options]
  --streams N           streams held by one instance (capacity)     default 15000 (quick 3000)
  --capacity-traces N   traces those streams watch                   default 100   (quick 20)
  --fanout N            watchers of one trace for fan-out latency    default 10000 (quick 2000)
  --watchers W          watchers for single flight (3 instances)     default 3000  (quick 600)
  --traces T            traces for single flight                     default 100   (quick 20)
  --clients P           client processes (≤ 20,000 sockets each)     default 4
  --idle-ms MS          idle window for CPU and pings                default 15000 = HEARTBEAT_MS (quick 6000)
  --sf-intervals K      poll intervals measured for single flight    default 10    (quick 4)
  --naive-intervals K   poll intervals measured for the naive design default 3     (quick 2)
  --post-seconds S      registration load per variant                default 5     (quick 2)
  --post-concurrency C  registration requests in flight              default 32
  --only LIST           capacity,singleflight,fanout,register         default all
  --quick               small sizes, short windows (a smoke run)
  --no-nchan            skip the Nchan baseline      --no-install  never apt-get install nginx/Nchan
  --no-raw-fanout       skip the raw node:http fan-out column
  --profile             bindwatch runs with --cpu-prof and --heapsnapshot-signal=SIGUSR2 (capacity snapshot)
  --out FILE            also write the Markdown report here (default: a file in the temp dir)`;

if (args.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}

function intOpt(name: keyof typeof args, normal: number, quick: number): number {
  const raw = args[name];
  if (typeof raw !== "string") return args.quick ? quick : normal;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    process.stderr.write(`bench: --${name} must be a positive integer, got "${raw}"\n`);
    process.exit(2);
  }
  return value;
}

const opt = {
  streams: intOpt("streams", 15_000, 3_000),
  capacityTraces: intOpt("capacity-traces", 100, 20),
  fanout: intOpt("fanout", 10_000, 2_000),
  watchers: intOpt("watchers", 3_000, 600),
  traces: intOpt("traces", 100, 20),
  clients: intOpt("clients", 4, 4),
  idleMs: intOpt("idle-ms", 15_000, 6_000),
  sfIntervals: intOpt("sf-intervals", 10, 4),
  naiveIntervals: intOpt("naive-intervals", 3, 2),
  postSeconds: intOpt("post-seconds", 5, 2),
  postConcurrency: intOpt("post-concurrency", 32, 32),
};
const PHASES = ["capacity", "singleflight", "fanout", "register"] as const;
type Phase = (typeof PHASES)[number];
const only = new Set<Phase>(
  (args.only ?? PHASES.join(","))
    .split(",")
    .map((s) => s.trim())
    .filter((s): s is Phase => (PHASES as readonly string[]).includes(s)),
);

// A process may hold at most 20,000 descriptors here: keep every client process well under it.
const FD_LIMIT = 20_000;
const perClient = Math.ceil(Math.max(opt.streams, opt.fanout, opt.watchers) / opt.clients);
if (perClient > FD_LIMIT - 500) {
  process.stderr.write(`bench: ${perClient} sockets per client process is too many; raise --clients\n`);
  process.exit(2);
}
if (Math.max(opt.streams, opt.fanout) > FD_LIMIT - 1_000) {
  process.stderr.write(`bench: one server process cannot hold more than ~${FD_LIMIT - 1_000} streams here\n`);
  process.exit(2);
}

// Children inherit this process's limit: the server must hold every stream plus a few descriptors.
const openFileLimit = (() => {
  try {
    return Number(/^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
})();
if (openFileLimit < Math.max(opt.streams, opt.fanout) + 500) {
  process.stderr.write(
    `bench: the descriptor limit (ulimit -n) is ${openFileLimit}; ${Math.max(opt.streams, opt.fanout)} streams need about ${Math.max(opt.streams, opt.fanout) + 500}\n`,
  );
  process.exit(2);
}

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ENTRY = join(ROOT, "dist/src/runtime/node-main.js");
const HERE = fileURLToPath(new URL(".", import.meta.url));
const CLIENT = join(HERE, "client.js");
const RAW_SERVER = join(HERE, "raw-sse-server.js");
const NAIVE = join(HERE, "naive-poller.js");
const POST_LOADER = join(HERE, "post-loader.js");
const POLL_INTERVAL_MS = 2_000;
const HEARTBEAT_MS = 15_000; // bindwatch's default (SPEC §5); the raw server and Nchan get the same.
/** Connects in flight per client process: 4 × 100 stays under node's listen backlog of 511. */
const CONNECT_CONCURRENCY = 100;
const CLIENT_LIFETIME_MS = 240_000;
const PROFILE_DIR = join(tmpdir(), `bindwatch-bench-profile-${process.pid}`);

const log = (line: string) => process.stdout.write(`${line}\n`);
const section = (title: string) => log(`\n── ${title} ${"─".repeat(Math.max(0, 70 - title.length))}`);
const startedAt = Date.now();

// ---- the TOP gateway double, in this process ---------------------------------

const APP_KEY = "bench-app-key";
const APP_SECRET = "bench-app-secret-0123456789abcdef";
const sim = createTopSimulator({
  appKey: APP_KEY,
  appSecret: APP_SECRET,
  defaultScript: scriptNever(),
  maxTraces: 200_000,
});
const gateway = serve({ fetch: sim.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
await new Promise<void>((resolve) => gateway.once("listening", () => resolve()));
const GATEWAY_URL = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/router/rest`;

// ---- cleanup, whatever happens ---------------------------------------------------

const cleanups: (() => Promise<void>)[] = [];
let interrupted = false;
async function runCleanups(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => {});
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    interrupted = true;
    log(`\nbench: ${signal}: stopping everything`);
    killAllChildren();
    process.exit(130);
  });
}
process.once("exit", () => killAllChildren());
// The whole run is bounded too.
const RUN_LIMIT_MS = 15 * 60_000;
setTimeout(() => {
  process.stderr.write(`bench: the run passed ${RUN_LIMIT_MS / 60_000} min; stopping\n`);
  killAllChildren();
  process.exit(1);
}, RUN_LIMIT_MS).unref();

// ---- helpers ----------------------------------------------------------------------

async function startBindwatch(env: Record<string, string>): Promise<ServerProcess> {
  if (args.profile) mkdirSync(PROFILE_DIR, { recursive: true });
  const server = await startNodeProcess({
    script: ENTRY,
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      TOP_APP_KEY: APP_KEY,
      TOP_APP_SECRET: APP_SECRET,
      TOP_GATEWAY_URL: GATEWAY_URL,
      POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
      LOG_LEVEL: "info", // the default: a registration writes one JSON line, a stream none
      ...env,
    },
    listeningMsg: "bindwatch listening",
    nodeArgs: args.profile
      ? [
          "--cpu-prof",
          `--cpu-prof-dir=${PROFILE_DIR}`,
          "--heapsnapshot-signal=SIGUSR2",
          `--diagnostic-dir=${PROFILE_DIR}`,
        ]
      : [],
  });
  cleanups.push(() => server.stop(3_000));
  return server;
}

async function startRaw(): Promise<ServerProcess> {
  const server = await startNodeProcess({
    script: RAW_SERVER,
    env: { PORT: "0", HOST: "127.0.0.1", HEARTBEAT_MS: String(HEARTBEAT_MS), RETRY_MS: String(POLL_INTERVAL_MS) },
    listeningMsg: "raw sse listening",
  });
  cleanups.push(() => server.stop(3_000));
  return server;
}

async function useRedis(): Promise<RedisProcess> {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  return redis;
}

function registrationBody(traceId: string): string {
  return JSON.stringify({
    trace_id: traceId,
    open_id: "open-id-0123456789",
    product_key: "a1PrOdUcTkEy",
    user_type: "ilop",
    params: { ssProductKey: "a1SsPrOdUcT", authCode: "c0de" },
  });
}

async function register(baseUrl: string, traceIds: readonly string[]): Promise<void> {
  for (let i = 0; i < traceIds.length; i += 20) {
    await Promise.all(
      traceIds.slice(i, i + 20).map(async (id) => {
        const res = await fetch(`${baseUrl}/v1/binds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: registrationBody(id),
        });
        await res.text();
        if (res.status !== 201 && res.status !== 200) throw new Error(`POST /v1/binds ${id}: ${res.status}`);
      }),
    );
  }
}

async function metricsOf(baseUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const match = /^(bindwatch_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (match?.[1] && match[2]) out[match[1]] = (out[match[1]] ?? 0) + Number(match[2]);
  }
  return out;
}

async function openPool(targets: string[], marker: string, readyMarker: string | undefined) {
  const opened = await ClientPool.open({
    script: CLIENT,
    targets,
    processes: opt.clients,
    marker,
    ...(readyMarker === undefined ? {} : { readyMarker }),
    concurrency: CONNECT_CONCURRENCY,
    timeoutMs: 120_000,
    lifetimeMs: CLIENT_LIFETIME_MS,
  });
  cleanups.push(() => opened.pool.close());
  return opened;
}

/** A bound state like the one bindwatch sends, for the baselines to publish (same size on the wire). */
function boundStateJson(traceId: string): string {
  const now = new Date().toISOString();
  return JSON.stringify({
    trace_id: traceId,
    status: "bound",
    final: true,
    version: 2,
    attempts: 4,
    created_at: now,
    updated_at: now,
    expires_at: new Date(Date.now() + 180_000).toISOString(),
    upstream: {
      ret_code: 0,
      message: "",
      request_id: "0123456789abcdef0123456789ab",
      eagleeye_id: "0b5a1c3f17646042271211000d4e2a",
    },
    error: null,
  });
}

function phaseDone(name: string, t0: number): void {
  log(`   (${name}: ${fmt((Date.now() - t0) / 1000, 1)} s, load ${fmt(loadAverage1(), 2)})`);
}

// ---- results ------------------------------------------------------------------------

interface CapacityResult {
  readonly label: string;
  readonly requested: number;
  readonly held: number;
  readonly failed: number;
  readonly connectMs: number;
  readonly rssBase: number;
  readonly rssLoaded: number;
  readonly perStream: number;
  readonly cpuIdleMsPerSec: number;
  readonly cpuBaseMsPerSec: number;
  readonly cpuPer1000: number;
  readonly pinged: number;
  readonly pings: number;
  readonly openAfter: number;
  readonly heapUsed?: number;
  readonly fds: number | null;
}

interface FanoutResult {
  readonly label: string;
  readonly watchers: number;
  readonly received: number;
  readonly latency: LatencySummary;
  readonly perStream?: number;
  readonly serverCpuMs?: number;
  readonly note?: string;
}

interface SingleFlightResult {
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

interface RegisterResult {
  readonly label: string;
  readonly perSecond: number;
  readonly ok: number;
  readonly statuses: Record<string, number>;
  readonly p50: number;
  readonly p99: number;
}

const results: {
  capacity: CapacityResult[];
  singleFlight: SingleFlightResult | null;
  fanout: FanoutResult[];
  nchanMemoryPerStream: number | null;
  register: RegisterResult[];
  notes: string[];
} = { capacity: [], singleFlight: null, fanout: [], nchanMemoryPerStream: null, register: [], notes: [] };

// ---- capacity -------------------------------------------------------------------------

/** What capacity measures a server by: its process, and for bindwatch its /metrics and a heap snapshot. */
interface MeasuredServer {
  readonly pid: number;
  readonly metricsUrl?: string;
  readonly child?: ServerProcess["child"];
}

async function measureCapacity(
  label: string,
  server: MeasuredServer,
  targets: string[],
  readyMarker: string,
  prepare?: () => Promise<void>,
): Promise<CapacityResult> {
  await sleep(2_000);
  const cpuA = cpuMs(server.pid) ?? 0;
  const tA = performance.now();
  await sleep(5_000);
  const cpuBaseMsPerSec = ((cpuMs(server.pid) ?? 0) - cpuA) / ((performance.now() - tA) / 1000);
  // Registering the traces starts one poll each; let those finish before the base memory is read.
  if (prepare) {
    await prepare();
    await sleep(4_000);
  }
  const rssBase = await settledRss(server.pid);

  log(`   ${label}: opening ${fmtInt(targets.length)} streams from ${opt.clients} client processes…`);
  const { pool, ready } = await openPool(targets, "\nevent: bound\n", readyMarker);
  log(
    `   ${label}: ${fmtInt(ready.ready)} attached, ${ready.failed} failed, ${ready.retried} retried, in ${fmt(ready.ms / 1000, 1)} s${ready.errors.length ? ` (${ready.errors.join("; ")})` : ""}`,
  );
  // A window of one heartbeat period sees each stream's heartbeat exactly once: `pinged` is a liveness check.
  await sleep(2_000);
  await pool.reset();
  const cpu0 = cpuMs(server.pid) ?? 0;
  const t0 = performance.now();
  await sleep(opt.idleMs);
  const cpu1 = cpuMs(server.pid) ?? 0;
  const windowS = (performance.now() - t0) / 1000;
  const rssLoaded = await settledRss(server.pid);
  const fds = openFds(server.pid);
  const report = await pool.report(false);
  let heapUsed: number | undefined;
  if (server.metricsUrl !== undefined) {
    const metrics = await metricsOf(server.metricsUrl).catch(() => ({}) as Record<string, number>);
    heapUsed = metrics.bindwatch_process_nodejs_heap_size_used_bytes;
    log(`   ${label}: /metrics open streams ${metrics.bindwatch_open_streams ?? "?"}, heap used ${mib(heapUsed ?? 0)}`);
    if (args.profile && server.child) {
      log(`   ${label}: writing a heap snapshot (SIGUSR2) to ${PROFILE_DIR}…`);
      const before = existsSync(PROFILE_DIR) ? readdirSync(PROFILE_DIR).length : 0;
      server.child.kill("SIGUSR2");
      await waitFor(
        () =>
          readdirSync(PROFILE_DIR).filter((f) => f.endsWith(".heapsnapshot")).length > 0 &&
          readdirSync(PROFILE_DIR).length > before,
        120_000,
        "the heap snapshot",
        500,
      ).catch(() => log("   (no heap snapshot appeared)"));
      await sleep(5_000);
    }
  }
  await pool.close();
  const cpuIdleMsPerSec = (cpu1 - cpu0) / windowS;
  const held = report.open;
  return {
    label,
    requested: targets.length,
    held,
    failed: ready.failed,
    connectMs: ready.ms,
    rssBase,
    rssLoaded,
    perStream: (rssLoaded - rssBase) / Math.max(1, ready.ready),
    cpuIdleMsPerSec,
    cpuBaseMsPerSec,
    cpuPer1000: ((cpuIdleMsPerSec - cpuBaseMsPerSec) * 1000) / Math.max(1, held),
    pinged: report.pinged,
    pings: report.pings,
    openAfter: report.open,
    ...(heapUsed === undefined ? {} : { heapUsed }),
    fds,
  };
}

function printCapacity(r: CapacityResult): void {
  log(
    `   ${r.label}: held ${fmtInt(r.held)}/${fmtInt(r.requested)}; RSS ${mib(r.rssBase)} → ${mib(r.rssLoaded)} = ${kib(r.perStream)} per stream; ` +
      `idle CPU ${fmt(r.cpuIdleMsPerSec, 2)} ms/s (${fmt(r.cpuBaseMsPerSec, 2)} with no streams) = ${fmt(r.cpuPer1000, 3)} ms/s per 1,000 streams; ` +
      `${fmtInt(r.pinged)} streams pinged in the ${fmt(opt.idleMs / 1000, 0)} s window; fds ${r.fds ?? "?"}`,
  );
}

async function phaseCapacity(nchan: NchanAvailability | null): Promise<void> {
  section(`Capacity: ${fmtInt(opt.streams)} streams on one instance, heartbeat ${HEARTBEAT_MS / 1000} s`);
  const t0 = Date.now();
  const traceIds = Array.from({ length: opt.capacityTraces }, (_, i) => `cap-${i}`);

  {
    // Polling is slowed to one call a minute here so the idle window measures streams, not polls.
    const server = await startBindwatch({
      MAX_STREAMS: String(Math.max(15_000, opt.streams)),
      POLL_INTERVAL_MS: "60000",
    });
    const targets = Array.from(
      { length: opt.streams },
      (_, i) => `${server.url}/v1/binds/${traceIds[i % traceIds.length]}/events`,
    );
    const r = await measureCapacity(
      "bindwatch",
      { pid: server.pid, metricsUrl: server.url, child: server.child },
      targets,
      "\nevent: pending\n",
      () => register(server.url, traceIds),
    );
    printCapacity(r);
    results.capacity.push(r);
    await server.stop();
  }
  {
    const server = await startRaw();
    const targets = Array.from(
      { length: opt.streams },
      (_, i) => `${server.url}/events?c=${traceIds[i % traceIds.length]}`,
    );
    const r = await measureCapacity("raw node:http", { pid: server.pid }, targets, "\nevent: pending\n");
    printCapacity(r);
    results.capacity.push(r);
    await server.stop();
  }
  if (nchan?.ok) {
    const server = await startNchan({
      nginx: nchan.nginx,
      module: nchan.module,
      heartbeatSeconds: HEARTBEAT_MS / 1000,
    });
    cleanups.push(() => server.stop());
    const targets = Array.from({ length: opt.streams }, () => server.subscribeUrl);
    const r = await measureCapacity("Nchan", { pid: server.workerPid }, targets, ": hi\n");
    printCapacity(r);
    results.capacity.push(r);
    await server.stop();
  }
  phaseDone("capacity", t0);
}

// ---- single flight ----------------------------------------------------------------------

async function phaseSingleFlight(): Promise<void> {
  section(`Single flight: 3 instances on one Redis, ${fmtInt(opt.watchers)} watchers over ${opt.traces} traces`);
  const t0 = Date.now();
  const redis = await useRedis();
  const instances: ServerProcess[] = [];
  for (let i = 0; i < 3; i += 1) {
    // The deployment-wide budget is raised so it does not cap T/interval calls per second.
    instances.push(await startBindwatch({ REDIS_URL: redis.url, UPSTREAM_QPS: "1000" }));
  }
  const traceIds = Array.from({ length: opt.traces }, (_, i) => `sf-${process.pid}-${i}`);
  const first = instances[0];
  if (!first) throw new Error("no instance");
  await register(first.url, traceIds);
  // Watcher i watches trace i mod T on instance ⌊i/T⌋ mod 3: every trace has watchers on every instance.
  const targets = Array.from({ length: opt.watchers }, (_, i) => {
    const instance = instances[Math.floor(i / opt.traces) % instances.length] ?? first;
    return `${instance.url}/v1/binds/${traceIds[i % opt.traces]}/events`;
  });
  const { pool, ready } = await openPool(targets, "\nevent: bound\n", "\nevent: pending\n");
  log(`   ${fmtInt(ready.ready)} watchers attached (${ready.failed} failed) in ${fmt(ready.ms / 1000, 1)} s`);
  await sleep(2 * POLL_INTERVAL_MS);
  const countsA = traceIds.map((id) => sim.getTrace(id).callCount);
  const tA = Date.now();
  await sleep(opt.sfIntervals * POLL_INTERVAL_MS);
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

  // The naive design: one poll loop per watcher, against the same gateway double. Its cost per
  // trace depends only on watchers per trace (W/T), so it runs on at most 10 of the traces with the
  // same watchers per trace: the machine then keeps up with it, and the figure is the design's.
  const naivePrefix = `naive-${process.pid}`;
  const naiveTraceCount = Math.min(opt.traces, 10);
  const naiveWatchers = Math.max(naiveTraceCount, Math.round((opt.watchers * naiveTraceCount) / opt.traces));
  const naiveTraces = Array.from({ length: naiveTraceCount }, (_, i) => `${naivePrefix}-${i}`);
  const lead = POLL_INTERVAL_MS + 500; // every loop has started (random phase within the first interval)
  const naiveWindow = opt.naiveIntervals * POLL_INTERVAL_MS;
  log(
    `   naive: ${fmtInt(naiveWatchers)} poll loops over ${naiveTraceCount} traces (${fmt(naiveWatchers / naiveTraceCount, 1)} watchers per trace) for ${fmt((lead + naiveWindow) / 1000, 1)} s…`,
  );
  const naiveRun = runHelper<{ calls: number; outcomes: Record<string, number> }>(
    NAIVE,
    {
      GATEWAY_URL,
      APP_KEY,
      APP_SECRET,
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
  results.singleFlight = {
    perTraceInterval: mean(perTrace),
    maxPerTraceInterval: Math.max(...perTrace),
    minPerTraceInterval: Math.min(...perTrace),
    maxInFlight,
    minGapMs,
    windowMs,
    attached,
    naivePerTraceInterval: naivePer,
    naiveExpected,
    naiveCalls,
    naiveWindowMs,
  };
  phaseDone("single flight", t0);
}

// ---- fan-out -------------------------------------------------------------------------------

async function fanoutBindwatch(instancesCount: number): Promise<FanoutResult> {
  const label = `bindwatch, ${instancesCount} instance${instancesCount > 1 ? "s + Redis" : ""}`;
  const redis = instancesCount > 1 ? await useRedis() : null;
  const instances: ServerProcess[] = [];
  for (let i = 0; i < instancesCount; i += 1) {
    instances.push(
      await startBindwatch({
        MAX_STREAMS: String(Math.max(15_000, opt.fanout)),
        ...(redis ? { REDIS_URL: redis.url } : {}),
      }),
    );
  }
  const first = instances[0];
  if (!first) throw new Error("no instance");
  const traceId = `fanout-${instancesCount}-${process.pid}`;
  sim.setScript(traceId, scriptNever());
  await register(first.url, [traceId]);
  const rssBefore = instancesCount === 1 ? await settledRss(first.pid) : 0;
  const targets = Array.from(
    { length: opt.fanout },
    (_, i) => `${(instances[i % instances.length] ?? first).url}/v1/binds/${traceId}/events`,
  );
  const { pool, ready } = await openPool(targets, "\nevent: bound\n", "\nevent: pending\n");
  log(`   ${label}: ${fmtInt(ready.ready)} watchers attached (${ready.failed} failed) in ${fmt(ready.ms / 1000, 1)} s`);
  await sleep(1_500);
  const rssAfter = instancesCount === 1 ? await settledRss(first.pid) : 0;
  const cpuEach = instances.map((s) => cpuMs(s.pid) ?? 0);
  const cpuBefore = cpuEach.reduce((n, v) => n + v, 0);
  // The next checkbind call answers `bound`; its answer time is the reference.
  sim.setScript(traceId, scriptBoundAfter(0));
  const boundCall = await waitFor(
    () => sim.getTrace(traceId).calls.find((c) => c.outcome === "bound" && c.endedAt !== null) ?? null,
    3 * POLL_INTERVAL_MS + 10_000,
    "the bound answer",
    20,
  );
  const reference = boundCall.endedAt ?? 0;
  const deadline = Date.now() + 15_000;
  let report = await pool.report(false);
  while (report.marked < ready.ready && Date.now() < deadline) {
    await sleep(1_000);
    report = await pool.report(false);
  }
  const cpuAfterEach = instances.map((s, i) => (cpuMs(s.pid) ?? 0) - (cpuEach[i] ?? 0));
  const cpuAfter = cpuBefore + cpuAfterEach.reduce((n, v) => n + v, 0);
  if (instancesCount > 1)
    log(`   ${label}: server CPU per instance ${cpuAfterEach.map((v) => `${fmtInt(v)} ms`).join(", ")}`);
  report = await pool.report(true);
  await pool.close();
  for (const instance of instances) await instance.stop();
  await redis?.stop();
  const latency = summarize(report.times.map((t) => t - reference));
  return {
    label,
    watchers: ready.ready,
    received: report.marked,
    latency,
    ...(instancesCount === 1 ? { perStream: (rssAfter - rssBefore) / Math.max(1, ready.ready) } : {}),
    serverCpuMs: cpuAfter - cpuBefore,
  };
}

async function fanoutRaw(): Promise<FanoutResult> {
  const server = await startRaw();
  const channel = `raw-fanout-${process.pid}`;
  const targets = Array.from({ length: opt.fanout }, () => `${server.url}/events?c=${channel}`);
  const { pool, ready } = await openPool(targets, "\nevent: bound\n", "\nevent: pending\n");
  log(`   raw node:http: ${fmtInt(ready.ready)} subscribers attached in ${fmt(ready.ms / 1000, 1)} s`);
  await sleep(1_500);
  const body = boundStateJson(channel);
  const cpuBefore = cpuMs(server.pid) ?? 0;
  const reference = performance.timeOrigin + performance.now();
  const res = await fetch(`${server.url}/publish?c=${channel}`, { method: "POST", body });
  await res.text();
  const deadline = Date.now() + 15_000;
  let report = await pool.report(false);
  while (report.marked < ready.ready && Date.now() < deadline) {
    await sleep(1_000);
    report = await pool.report(false);
  }
  const cpuAfter = cpuMs(server.pid) ?? 0;
  report = await pool.report(true);
  await pool.close();
  await server.stop();
  return {
    label: "raw node:http",
    watchers: ready.ready,
    received: report.marked,
    latency: summarize(report.times.map((t) => t - reference)),
    serverCpuMs: cpuAfter - cpuBefore,
  };
}

async function fanoutNchan(nchan: Extract<NchanAvailability, { ok: true }>): Promise<FanoutResult> {
  const server = await startNchan({ nginx: nchan.nginx, module: nchan.module, heartbeatSeconds: HEARTBEAT_MS / 1000 });
  cleanups.push(() => server.stop());
  const rssBefore = await settledRss(server.workerPid);
  const targets = Array.from({ length: opt.fanout }, () => server.subscribeUrl);
  const marker = '"status":"bound"';
  const { pool, ready } = await openPool(targets, marker, ": hi\n");
  const subscribers = await waitFor(
    async () => {
      const n = await server.subscribers();
      return n >= ready.ready ? n : null;
    },
    15_000,
    "Nchan to count every subscriber",
    100,
  ).catch(async () => server.subscribers());
  log(
    `   Nchan: ${fmtInt(ready.ready)} subscribers attached in ${fmt(ready.ms / 1000, 1)} s (Nchan counts ${fmtInt(subscribers)})`,
  );
  await sleep(1_500);
  const rssAfter = await settledRss(server.workerPid);
  const cpuBefore = cpuMs(server.workerPid) ?? 0;
  const reference = performance.timeOrigin + performance.now();
  await server.publish(boundStateJson("nchan-fanout"));
  const deadline = Date.now() + 15_000;
  let report = await pool.report(false);
  while (report.marked < ready.ready && Date.now() < deadline) {
    await sleep(1_000);
    report = await pool.report(false);
  }
  const cpuAfter = cpuMs(server.workerPid) ?? 0;
  report = await pool.report(true);
  await pool.close();
  await server.stop();
  const perStream = (rssAfter - rssBefore) / Math.max(1, ready.ready);
  results.nchanMemoryPerStream = perStream;
  return {
    label: "Nchan",
    watchers: ready.ready,
    received: report.marked,
    latency: summarize(report.times.map((t) => t - reference)),
    perStream,
    serverCpuMs: cpuAfter - cpuBefore,
    note: nchan.version,
  };
}

function printFanout(r: FanoutResult): void {
  const l = r.latency;
  log(
    `   ${r.label}: received by ${fmtInt(r.received)}/${fmtInt(r.watchers)}; p50 ${fmt(l.p50)} ms, p90 ${fmt(l.p90)} ms, p99 ${fmt(l.p99)} ms, max ${fmt(l.max)} ms` +
      `${r.serverCpuMs === undefined ? "" : `; server CPU ${fmtInt(r.serverCpuMs)} ms`}` +
      `${r.perStream === undefined ? "" : `; ${kib(r.perStream)} per subscriber`}`,
  );
}

async function phaseFanout(nchan: NchanAvailability | null): Promise<void> {
  section(`Fan-out latency: TOP answers bound → ${fmtInt(opt.fanout)} watchers of one trace`);
  const t0 = Date.now();
  if (nchan?.ok) {
    const r = await fanoutNchan(nchan);
    printFanout(r);
    results.fanout.push(r);
  } else {
    log(`   Nchan baseline SKIPPED: ${nchan ? nchan.reason : "--no-nchan"}`);
    results.notes.push(`Nchan baseline skipped: ${nchan ? nchan.reason : "--no-nchan"}`);
  }
  for (const count of [1, 3]) {
    const r = await fanoutBindwatch(count);
    printFanout(r);
    results.fanout.push(r);
  }
  if (!args["no-raw-fanout"]) {
    const r = await fanoutRaw();
    printFanout(r);
    results.fanout.push(r);
  }
  phaseDone("fan-out", t0);
}

// ---- registration -------------------------------------------------------------------------------

async function postLoad(label: string, url: string, prefix: string): Promise<RegisterResult> {
  const out = await runHelper<{
    ok: number;
    issued: number;
    statuses: Record<string, number>;
    ms: number;
    latency: { p50: number; p99: number; max: number };
  }>(
    POST_LOADER,
    {
      URL: url,
      CONCURRENCY: String(opt.postConcurrency),
      DURATION_MS: String(opt.postSeconds * 1000),
      MAX_REQUESTS: "200000",
      PREFIX: prefix,
    },
    opt.postSeconds * 1000 + 60_000,
  );
  const r: RegisterResult = {
    label,
    perSecond: out.ok / (out.ms / 1000),
    ok: out.ok,
    statuses: out.statuses,
    p50: out.latency.p50,
    p99: out.latency.p99,
  };
  log(
    `   ${label}: ${fmtInt(r.perSecond)} POST/s (${fmtInt(out.ok)} × 201 in ${fmt(out.ms / 1000, 1)} s; statuses ${JSON.stringify(out.statuses)}; p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms)`,
  );
  return r;
}

async function phaseRegister(): Promise<void> {
  section(`Registration: POST /v1/binds for ${opt.postSeconds} s, ${opt.postConcurrency} in flight`);
  const t0 = Date.now();
  {
    const server = await startRaw();
    results.register.push(await postLoad("raw node:http", server.url, `reg-raw-${process.pid}`));
    await server.stop();
  }
  {
    const server = await startBindwatch({});
    results.register.push(await postLoad("bindwatch, in memory", server.url, `reg-mem-${process.pid}`));
    await server.stop();
  }
  {
    const redis = await useRedis();
    const server = await startBindwatch({ REDIS_URL: redis.url });
    results.register.push(await postLoad("bindwatch, Redis", server.url, `reg-redis-${process.pid}`));
    await server.stop();
    await redis.stop();
  }
  phaseDone("registration", t0);
}

// ---- machine and report ------------------------------------------------------------------------

function machine(): Record<string, string> {
  const cpuModel = (() => {
    try {
      return (
        /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? cpus()[0]?.model ?? "?"
      );
    } catch {
      return cpus()[0]?.model ?? "?";
    }
  })();
  let nproc = String(cpus().length);
  try {
    nproc = execFileSync("nproc", { encoding: "utf8" }).trim();
  } catch {
    // keep os.cpus()
  }
  let redisVersion = "?";
  try {
    redisVersion = /v=([0-9.]+)/.exec(execFileSync("redis-server", ["--version"], { encoding: "utf8" }))?.[1] ?? "?";
  } catch {
    // not installed
  }
  return {
    cpu: `${cpuModel} — nproc ${nproc}`,
    memory: `${fmt(totalmem() / 1024 ** 3, 1)} GiB total, ${fmt(freemem() / 1024 ** 3, 1)} GiB free at the start`,
    os: `Linux ${release()}`,
    node: process.version,
    redis: redisVersion,
  };
}

function verdict(ok: boolean | null): string {
  return ok === null ? "—" : ok ? "**met**" : "**missed**";
}

function summaryTable(): string {
  const rows: string[][] = [];
  const bw = results.capacity.find((r) => r.label === "bindwatch");
  const raw = results.capacity.find((r) => r.label === "raw node:http");
  const nchanCap = results.capacity.find((r) => r.label === "Nchan");
  // Nchan's memory per stream from the capacity phase (same count); else from the fan-out phase.
  const nchanMem = nchanCap?.perStream ?? results.nchanMemoryPerStream;
  if (bw && raw) {
    const baselines = (f: (r: CapacityResult) => string) =>
      [`raw node:http ${f(raw)}`, nchanCap ? `Nchan ${f(nchanCap)}` : ""].filter(Boolean).join("; ");
    rows.push([
      `SSE streams held by one instance (heartbeat ${HEARTBEAT_MS / 1000} s; pinged in one heartbeat period)`,
      `${fmtInt(bw.held)} / ${fmtInt(bw.requested)} (pinged ${fmtInt(bw.pinged)})`,
      baselines((r) => `${fmtInt(r.held)} / ${fmtInt(r.requested)} (pinged ${fmtInt(r.pinged)})`),
      "—",
      fmtInt(15_000),
      verdict(opt.streams >= 15_000 ? bw.held >= 15_000 && bw.failed === 0 : null),
    ]);
    const memRatio = bw.perStream / raw.perStream;
    rows.push([
      `Server memory (RSS) per stream, at ${fmtInt(bw.requested)} streams`,
      kib(bw.perStream),
      [`raw node:http ${kib(raw.perStream)}`, nchanMem !== null ? `Nchan ${kib(nchanMem)}` : ""]
        .filter(Boolean)
        .join("; "),
      `${ratio(bw.perStream, raw.perStream)} raw${nchanMem !== null ? `; ${ratio(bw.perStream, nchanMem)} Nchan` : ""}`,
      "≤ 2× raw (aim ≤ 1.5× Nchan)",
      `${verdict(memRatio <= 2)}${nchanMem !== null ? ` (aim ${bw.perStream <= 1.5 * nchanMem ? "met" : "missed"})` : ""}`,
    ]);
    // A window shorter than the heartbeat sees no ping at all: then there is nothing to compare.
    const cpuOk = opt.idleMs >= HEARTBEAT_MS;
    rows.push([
      "CPU per 1,000 idle streams (ms of CPU per second)",
      cpuOk ? `${fmt(bw.cpuPer1000, 3)} ms/s` : `n/a (window ${fmt(opt.idleMs / 1000, 0)} s < heartbeat)`,
      cpuOk ? baselines((r) => `${fmt(r.cpuPer1000, 3)} ms/s`) : "n/a",
      cpuOk ? ratio(bw.cpuPer1000, raw.cpuPer1000) : "—",
      "—",
      "—",
    ]);
  }
  const sf = results.singleFlight;
  if (sf) {
    rows.push([
      `Checkbind calls per trace per interval (3 instances, ${fmtInt(opt.watchers)} watchers / ${opt.traces} traces)`,
      `${fmt(sf.perTraceInterval, 3)} (max in flight ${sf.maxInFlight})`,
      `naive ${fmt(sf.naivePerTraceInterval, 2)} (design ${fmt(sf.naiveExpected, 2)})`,
      ratio(sf.perTraceInterval, sf.naivePerTraceInterval),
      "1.00, within 5 %",
      verdict(Math.abs(sf.perTraceInterval - 1) <= 0.05 && sf.maxInFlight <= 1),
    ]);
  }
  const nchanFan = results.fanout.find((r) => r.label === "Nchan");
  const rawFan = results.fanout.find((r) => r.label === "raw node:http");
  for (const r of results.fanout.filter((f) => f.label.startsWith("bindwatch"))) {
    const l = r.latency;
    const base = [
      nchanFan
        ? `Nchan ${fmt(nchanFan.latency.p50)} / ${fmt(nchanFan.latency.p99)} / ${fmt(nchanFan.latency.max)} (${fmtInt(nchanFan.received)}/${fmtInt(nchanFan.watchers)})`
        : "Nchan skipped",
      rawFan
        ? `raw node:http ${fmt(rawFan.latency.p50)} / ${fmt(rawFan.latency.p99)} / ${fmt(rawFan.latency.max)}`
        : "",
    ]
      .filter(Boolean)
      .join("; ");
    const all = r.received === r.watchers;
    rows.push([
      `Fan-out p50 / p99 / max, ms (${r.label}, ${fmtInt(r.watchers)} watchers)`,
      `${fmt(l.p50)} / ${fmt(l.p99)} / ${fmt(l.max)} (${fmtInt(r.received)}/${fmtInt(r.watchers)})`,
      base,
      nchanFan ? `p99 ${ratio(l.p99, nchanFan.latency.p99)} Nchan` : "—",
      "p99 ≤ 1.25× Nchan, all received",
      nchanFan ? verdict(all && l.p99 <= 1.25 * nchanFan.latency.p99) : verdict(null),
    ]);
  }
  const rawReg = results.register.find((r) => r.label === "raw node:http");
  const memReg = results.register.find((r) => r.label === "bindwatch, in memory");
  const redisReg = results.register.find((r) => r.label === "bindwatch, Redis");
  if (memReg && rawReg) {
    rows.push([
      "Registration, POST /v1/binds per second (in memory)",
      fmtInt(memReg.perSecond),
      `raw node:http ${fmtInt(rawReg.perSecond)}`,
      ratio(memReg.perSecond, rawReg.perSecond),
      "—",
      "—",
    ]);
  }
  if (redisReg && memReg) {
    rows.push([
      "Registration, POST /v1/binds per second (Redis)",
      fmtInt(redisReg.perSecond),
      `in memory ${fmtInt(memReg.perSecond)}`,
      ratio(redisReg.perSecond, memReg.perSecond),
      "—",
      "—",
    ]);
  }
  const header = ["Figure", "bindwatch", "Baseline (same run)", "Ratio", "Target", "Result"];
  const lines = [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ];
  return lines.join("\n");
}

// ---- main ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run npm run build first`);
  const load0 = loadAverage1();
  log(`bindwatch bench — ${new Date().toISOString()}`);
  log(`options: ${JSON.stringify({ ...opt, quick: args.quick, only: [...only] })}`);
  log(
    `load average (1 min) at the start: ${fmt(load0, 2)}${load0 > 1 ? "  ⚠ the machine is busy; figures will be noisy" : ""}`,
  );

  let nchan: NchanAvailability | null = null;
  if ((only.has("fanout") || only.has("capacity")) && !args["no-nchan"]) {
    nchan = ensureNchan({ install: !args["no-install"], log: (line) => log(`   ${line}`) });
    log(
      nchan.ok
        ? `Nchan baseline: ${nchan.version}${nchan.installed ? " (installed now)" : ""}`
        : `Nchan baseline SKIPPED: ${nchan.reason}`,
    );
  }

  if (only.has("capacity")) await phaseCapacity(nchan);
  if (only.has("singleflight")) await phaseSingleFlight();
  if (only.has("fanout")) await phaseFanout(nchan);
  if (only.has("register")) await phaseRegister();

  const load1 = loadAverage1();
  const info = machine();
  const table = summaryTable();
  const report = [
    `## Benchmark results (${new Date().toISOString().slice(0, 10)})`,
    "",
    table,
    "",
    `Machine: ${info.cpu}; ${info.memory}; ${info.os}; Node ${info.node}; Redis ${info.redis}` +
      `${nchan?.ok ? `; ${nchan.version}` : ""}. Load average ${fmt(load0, 2)} at the start, ${fmt(load1, 2)} at the end; ` +
      `run took ${fmt((Date.now() - startedAt) / 1000, 0)} s.`,
    "",
    `Options: ${JSON.stringify(opt)}${args.quick ? " (quick)" : ""}`,
    ...(results.notes.length ? ["", ...results.notes.map((n) => `Note: ${n}`)] : []),
  ].join("\n");
  section("Summary");
  log(report);
  const out = args.out ?? join(tmpdir(), `bindwatch-bench-${new Date().toISOString().replace(/[:.]/g, "-")}.md`);
  writeFileSync(out, `${report}\n`);
  log(`\n(written to ${out})`);
  if (args.profile) log(`profiles and heap snapshots: ${PROFILE_DIR}`);
}

try {
  await main();
} catch (err) {
  if (!interrupted)
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
} finally {
  await runCleanups();
  await new Promise<void>((resolve) => {
    gateway.close(() => resolve());
    gateway.closeAllConnections();
  });
  killAllChildren();
  process.exit(process.exitCode ?? 0);
}
