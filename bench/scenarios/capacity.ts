import { existsSync, readdirSync } from "node:fs";
import { type Bench, HEARTBEAT_MS, registerBinds } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { cpuMs, openFds, settledRss } from "../lib/proc.js";
import { memoryPerStreamRow, type SummaryRow, verdict } from "../lib/report.js";
import type { ServerProcess } from "../lib/spawn.js";
import { sleep, waitFor } from "../lib/spawn.js";
import { fmt, fmtInt, kib, mib, ratio } from "../lib/stats.js";

/*
 * Capacity: --streams streams on one bindwatch instance at the default heartbeat, spread
 * over --capacity-traces traces, beside the raw node:http SSE server and Nchan holding
 * as many. Memory per stream is the RSS it adds; CPU is taken over an idle window of
 * one heartbeat period, minus the same reading with no streams; `pinged` counts the
 * streams that got a `: ping` in that window (every one, when all are alive).
 */

export interface CapacityResult {
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
  /** Server CPU spent opening the streams, per stream (µs): accept, request, routing, attach. */
  readonly cpuUsPerOpen: number;
}

export async function runCapacity(bench: Bench): Promise<CapacityResult[]> {
  const { streams, capacityTraces } = bench.options.sizes;
  logSection(`Capacity: ${fmtInt(streams)} streams on one instance, heartbeat ${HEARTBEAT_MS / 1000} s`);
  const t0 = Date.now();
  const traceIds = Array.from({ length: capacityTraces }, (_, i) => `cap-${i}`);
  const results: CapacityResult[] = [];
  {
    // Polling is slowed to one call a minute here so the idle window measures streams, not polls.
    const server = await bench.startBindwatch({
      MAX_STREAMS: String(Math.max(15_000, streams)),
      POLL_INTERVAL_MS: "60000",
    });
    const targets = Array.from(
      { length: streams },
      (_, i) => `${server.url}/v1/binds/${traceIds[i % traceIds.length]}/events`,
    );
    results.push(
      await measureCapacity(
        bench,
        "bindwatch",
        { pid: server.pid, metricsUrl: server.url, child: server.child },
        targets,
        "\nevent: pending\n",
        () => registerBinds(server.url, traceIds),
      ),
    );
    await server.stop();
  }
  {
    const server = await bench.startRaw();
    const targets = Array.from(
      { length: streams },
      (_, i) => `${server.url}/events?c=${traceIds[i % traceIds.length]}`,
    );
    results.push(await measureCapacity(bench, "raw node:http", { pid: server.pid }, targets, "\nevent: pending\n"));
    await server.stop();
  }
  if (bench.nchan?.ok) {
    const server = await bench.startNchan(bench.nchan);
    const targets = Array.from({ length: streams }, () => server.subscribeUrl);
    results.push(await measureCapacity(bench, "Nchan", { pid: server.workerPid }, targets, ": hi\n"));
    await server.stop();
  }
  logScenarioDone("capacity", t0);
  return results;
}

/**
 * The capacity rows of the summary. Nchan's memory per stream comes from this scenario
 * (same count) when it ran Nchan, else from `nchanFallback` (the fan-out scenario's).
 */
export function capacityRows(
  results: readonly CapacityResult[],
  bench: Bench,
  nchanFallback: number | null,
): SummaryRow[] {
  const bw = results.find((r) => r.label === "bindwatch");
  const raw = results.find((r) => r.label === "raw node:http");
  if (!bw || !raw) return [];
  const nchanCap = results.find((r) => r.label === "Nchan");
  const nchanMem = nchanCap?.perStream ?? nchanFallback;
  const baselines = (f: (r: CapacityResult) => string) =>
    [`raw node:http ${f(raw)}`, nchanCap ? `Nchan ${f(nchanCap)}` : ""].filter(Boolean).join("; ");
  // A window shorter than the heartbeat sees no ping at all: then there is nothing to compare.
  const { idleMs, streams } = bench.options.sizes;
  const cpuOk = idleMs >= HEARTBEAT_MS;
  return [
    [
      `SSE streams held by one instance (heartbeat ${HEARTBEAT_MS / 1000} s; pinged in one heartbeat period)`,
      `${fmtInt(bw.held)} / ${fmtInt(bw.requested)} (pinged ${fmtInt(bw.pinged)})`,
      baselines((r) => `${fmtInt(r.held)} / ${fmtInt(r.requested)} (pinged ${fmtInt(r.pinged)})`),
      "—",
      fmtInt(15_000),
      verdict(streams >= 15_000 ? bw.held >= 15_000 && bw.failed === 0 : null),
    ],
    memoryPerStreamRow(
      `Server memory (RSS) per stream, at ${fmtInt(bw.requested)} streams`,
      bw.perStream,
      raw.perStream,
      nchanMem,
    ),
    [
      "Server CPU to open one stream, µs (connection, request, attach)",
      fmtInt(bw.cpuUsPerOpen),
      baselines((r) => fmtInt(r.cpuUsPerOpen)),
      `${ratio(bw.cpuUsPerOpen, raw.cpuUsPerOpen)} raw`,
      "—",
      "—",
    ],
    [
      "CPU per 1,000 idle streams (ms of CPU per second)",
      cpuOk ? `${fmt(bw.cpuPer1000, 3)} ms/s` : `n/a (window ${fmt(idleMs / 1000, 0)} s < heartbeat)`,
      cpuOk ? baselines((r) => `${fmt(r.cpuPer1000, 3)} ms/s`) : "n/a",
      cpuOk ? `${ratio(bw.cpuPer1000, raw.cpuPer1000)} raw` : "—",
      "≤ raw",
      cpuOk ? verdict(bw.cpuPer1000 <= raw.cpuPer1000) : verdict(null),
    ],
  ];
}

/** What capacity measures a server by: its process, and for bindwatch its /metrics and a heap snapshot. */
interface MeasuredServer {
  readonly pid: number;
  readonly metricsUrl?: string;
  readonly child?: ServerProcess["child"];
}

async function measureCapacity(
  bench: Bench,
  label: string,
  server: MeasuredServer,
  targets: string[],
  readyMarker: string,
  prepare?: () => Promise<void>,
): Promise<CapacityResult> {
  const { clients, idleMs } = bench.options.sizes;
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

  log(`   ${label}: opening ${fmtInt(targets.length)} streams from ${clients} client processes…`);
  const cpuBeforeOpen = cpuMs(server.pid) ?? 0;
  const tOpen = performance.now();
  const { pool, ready } = await bench.openPool(targets, "\nevent: bound\n", readyMarker);
  const openCpuMs = (cpuMs(server.pid) ?? 0) - cpuBeforeOpen - (cpuBaseMsPerSec * (performance.now() - tOpen)) / 1000;
  log(
    `   ${label}: ${fmtInt(ready.ready)} attached, ${ready.failed} failed, ${ready.retried} retried, in ${fmt(ready.ms / 1000, 1)} s${ready.errors.length ? ` (${ready.errors.join("; ")})` : ""}`,
  );
  // A window of one heartbeat period sees each stream's heartbeat exactly once: `pinged` is a liveness check.
  await sleep(2_000);
  await pool.reset();
  const cpu0 = cpuMs(server.pid) ?? 0;
  const t0 = performance.now();
  await sleep(idleMs);
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
    if (bench.options.profile && server.child) await writeHeapSnapshot(bench.profileDir, label, server.child);
  }
  await pool.close();
  const cpuIdleMsPerSec = (cpu1 - cpu0) / windowS;
  const held = report.open;
  const result: CapacityResult = {
    label,
    requested: targets.length,
    held,
    failed: ready.failed,
    connectMs: ready.ms,
    rssBase,
    rssLoaded,
    perStream: (rssLoaded - rssBase) / Math.max(1, ready.ready),
    cpuUsPerOpen: (Math.max(0, openCpuMs) * 1000) / Math.max(1, ready.ready),
    cpuIdleMsPerSec,
    cpuBaseMsPerSec,
    cpuPer1000: ((cpuIdleMsPerSec - cpuBaseMsPerSec) * 1000) / Math.max(1, held),
    pinged: report.pinged,
    pings: report.pings,
    openAfter: report.open,
    ...(heapUsed === undefined ? {} : { heapUsed }),
    fds,
  };
  log(
    `   ${label}: held ${fmtInt(result.held)}/${fmtInt(result.requested)}; RSS ${mib(rssBase)} → ${mib(rssLoaded)} = ${kib(result.perStream)} per stream; ` +
      `opening CPU ${fmtInt(result.cpuUsPerOpen)} µs per stream; ` +
      `idle CPU ${fmt(cpuIdleMsPerSec, 2)} ms/s (${fmt(cpuBaseMsPerSec, 2)} with no streams) = ${fmt(result.cpuPer1000, 3)} ms/s per 1,000 streams; ` +
      `${fmtInt(result.pinged)} streams pinged in the ${fmt(idleMs / 1000, 0)} s window; fds ${fds ?? "?"}`,
  );
  return result;
}

/** bindwatch's /metrics as name → value, the series of one name summed. */
async function metricsOf(baseUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const match = /^(bindwatch_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (match?.[1] && match[2]) out[match[1]] = (out[match[1]] ?? 0) + Number(match[2]);
  }
  return out;
}

/** --profile: a heap snapshot at full capacity (the server runs with --heapsnapshot-signal=SIGUSR2). */
async function writeHeapSnapshot(dir: string, label: string, child: ServerProcess["child"]): Promise<void> {
  log(`   ${label}: writing a heap snapshot (SIGUSR2) to ${dir}…`);
  const before = existsSync(dir) ? readdirSync(dir).length : 0;
  child.kill("SIGUSR2");
  await waitFor(
    () => readdirSync(dir).filter((f) => f.endsWith(".heapsnapshot")).length > 0 && readdirSync(dir).length > before,
    120_000,
    "the heap snapshot",
    500,
  ).catch(() => log("   (no heap snapshot appeared)"));
  await sleep(5_000);
}
