import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { type Bench, POLL_INTERVAL_MS, registerBinds } from "../lib/bench.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { cpuMs, settledRss } from "../lib/proc.js";
import { memoryPerStreamRow, type SummaryRow, verdict } from "../lib/report.js";
import { type ServerProcess, sleep, waitFor } from "../lib/spawn.js";
import { fmt, fmtInt, kib, type LatencySummary, ratio, summarize } from "../lib/stats.js";
import type { NchanAvailability } from "../nchan.js";

/*
 * Fan-out latency: one event to --fanout watchers of one trace. For bindwatch (1 instance
 * in memory, 3 instances on Redis) the TOP double's next answer is switched to `bound`,
 * and latency runs from the moment the double answered (the call record's `endedAt`) to
 * each client seeing `event: bound`. Nchan and the raw node:http server are timed from
 * their publish POST being sent. Every watcher must receive it; the report says how many did.
 */

export interface FanoutResult {
  readonly label: string;
  readonly watchers: number;
  readonly received: number;
  readonly latency: LatencySummary;
  /** RSS the attached streams added, per stream, where one process holds them all. */
  readonly perStream?: number;
  readonly serverCpuMs: number;
}

export async function runFanout(bench: Bench): Promise<FanoutResult[]> {
  const { fanout } = bench.options.sizes;
  logSection(`Fan-out latency: TOP answers bound → ${fmtInt(fanout)} watchers of one trace`);
  const t0 = Date.now();
  const results: FanoutResult[] = [];
  if (bench.nchan?.ok) {
    results.push(await measureNchanFanout(bench, bench.nchan, fanout));
  } else {
    const why = bench.nchan ? bench.nchan.reason : "--no-nchan";
    log(`   Nchan baseline SKIPPED: ${why}`);
    bench.note(`Nchan baseline skipped: ${why}`);
  }
  for (const count of [1, 3]) results.push(await measureBindwatchFanout(bench, count, fanout, "fanout"));
  if (bench.options.rawFanout) results.push(await measureRawFanout(bench, fanout));
  logScenarioDone("fan-out", t0);
  return results;
}

export function fanoutRows(results: readonly FanoutResult[]): SummaryRow[] {
  const nchan = results.find((r) => r.label === "Nchan");
  const raw = results.find((r) => r.label === "raw node:http");
  const triple = (l: LatencySummary) => `${fmt(l.p50)} / ${fmt(l.p99)} / ${fmt(l.max)}`;
  const base = [
    nchan ? `Nchan ${triple(nchan.latency)} (${fmtInt(nchan.received)}/${fmtInt(nchan.watchers)})` : "Nchan skipped",
    raw ? `raw node:http ${triple(raw.latency)}` : "",
  ]
    .filter(Boolean)
    .join("; ");
  const rows: SummaryRow[] = results
    .filter((r) => r.label.startsWith("bindwatch"))
    .map((r) => {
      // One instance must beat the C server; three on Redis must match it.
      const limit = r.label.includes("3 instances") ? 1.0 : 0.9;
      const aim = limit === 0.9 ? " (aim 0.75×)" : "";
      const p99Ratio = nchan ? r.latency.p99 / nchan.latency.p99 : null;
      return [
        `Fan-out p50 / p99 / max, ms (${r.label}, ${fmtInt(r.watchers)} watchers)`,
        `${triple(r.latency)} (${fmtInt(r.received)}/${fmtInt(r.watchers)})`,
        base,
        nchan ? `p99 ${ratio(r.latency.p99, nchan.latency.p99)} Nchan` : "—",
        `p99 ≤ ${fmt(limit, 1)}× Nchan${aim}, all received`,
        p99Ratio === null
          ? verdict(null)
          : `${verdict(r.received === r.watchers && p99Ratio <= limit)}${aim ? ` (aim ${p99Ratio <= 0.75 ? "met" : "missed"})` : ""}`,
      ] as const;
    });
  // Memory per stream at the fan-out's size (capacity gives it at --streams).
  const one = results.find((r) => r.label === "bindwatch, 1 instance");
  if (one?.perStream !== undefined && raw?.perStream !== undefined) {
    rows.push(
      memoryPerStreamRow(
        `Server memory (RSS) per stream, at ${fmtInt(one.watchers)} streams (fan-out)`,
        one.perStream,
        raw.perStream,
        nchan?.perStream ?? null,
      ),
    );
  }
  return rows;
}

/**
 * bindwatch with `instances` instances (more than one share a Redis), `watchers` streams of one
 * trace spread over them round robin. `tag` keeps the trace apart from other runs' in the double.
 */
export async function measureBindwatchFanout(
  bench: Bench,
  instances: number,
  watchers: number,
  tag: string,
): Promise<FanoutResult> {
  const { sim } = bench.gateway;
  const redis = instances > 1 ? await bench.startRedis() : null;
  const servers: ServerProcess[] = [];
  for (let i = 0; i < instances; i += 1) {
    servers.push(
      await bench.startBindwatch({
        MAX_STREAMS: String(Math.max(15_000, watchers)),
        ...(redis ? { REDIS_URL: redis.url } : {}),
      }),
    );
  }
  const first = servers[0];
  if (!first) throw new Error("no instance");
  const traceId = bench.uniqueName(`${tag}-${instances}x${watchers}`);
  sim.setScript(traceId, scriptNever());
  await registerBinds(first.url, [traceId]);
  return measureFanout(bench, {
    label: `bindwatch, ${instances} instance${instances > 1 ? "s + Redis" : ""}`,
    cpuPids: servers.map((s) => s.pid),
    memoryPid: instances === 1 ? first.pid : undefined,
    targets: Array.from(
      { length: watchers },
      (_, i) => `${(servers[i % servers.length] ?? first).url}/v1/binds/${traceId}/events`,
    ),
    marker: "\nevent: bound\n",
    readyMarker: "\nevent: pending\n",
    async publish() {
      // The next checkbind call answers `bound`; its answer time is the reference.
      sim.setScript(traceId, scriptBoundAfter(0));
      const boundCall = await waitFor(
        () => sim.getTrace(traceId).calls.find((c) => c.outcome === "bound" && c.endedAt !== null) ?? null,
        3 * POLL_INTERVAL_MS + 10_000,
        "the bound answer",
        20,
      );
      return boundCall.endedAt ?? 0;
    },
    async stop() {
      for (const server of servers) await server.stop();
      await redis?.stop();
    },
  });
}

/** The raw node:http server publishing one frame to all its streams (one `res.end(frame)` each). */
export async function measureRawFanout(bench: Bench, watchers: number): Promise<FanoutResult> {
  const server = await bench.startRaw();
  const channel = bench.uniqueName("raw-fanout");
  return measureFanout(bench, {
    label: "raw node:http",
    cpuPids: [server.pid],
    memoryPid: server.pid,
    targets: Array.from({ length: watchers }, () => `${server.url}/events?c=${channel}`),
    marker: "\nevent: bound\n",
    readyMarker: "\nevent: pending\n",
    async publish() {
      const reference = performance.timeOrigin + performance.now();
      const res = await fetch(`${server.url}/publish?c=${channel}`, { method: "POST", body: boundStateJson(channel) });
      await res.text();
      return reference;
    },
    stop: () => server.stop(),
  });
}

/** Nchan: `watchers` eventsource subscribers of one channel, one worker holding them all. */
export async function measureNchanFanout(
  bench: Bench,
  nchan: Extract<NchanAvailability, { ok: true }>,
  watchers: number,
): Promise<FanoutResult> {
  const server = await bench.startNchan(nchan);
  return measureFanout(bench, {
    label: "Nchan",
    cpuPids: [server.workerPid],
    memoryPid: server.workerPid,
    targets: Array.from({ length: watchers }, () => server.subscribeUrl),
    marker: '"status":"bound"',
    readyMarker: ": hi\n",
    async describeAttached(ready) {
      const counted = await waitFor(
        async () => {
          const n = await server.subscribers();
          return n >= ready ? n : null;
        },
        15_000,
        "Nchan to count every subscriber",
        100,
      ).catch(async () => server.subscribers());
      return `Nchan counts ${fmtInt(counted)}`;
    },
    async publish() {
      const reference = performance.timeOrigin + performance.now();
      await server.publish(boundStateJson("nchan-fanout"));
      return reference;
    },
    stop: () => server.stop(),
  });
}

/** One system under fan-out: where its streams are and how it is made to send the one event. */
interface FanoutSubject {
  readonly label: string;
  /** The server processes whose CPU the delivery costs. */
  readonly cpuPids: readonly number[];
  /** The one process holding every stream, if there is one: memory per stream is read from it. */
  readonly memoryPid: number | undefined;
  readonly targets: readonly string[];
  /** Text of the fanned-out event whose arrival is timed. */
  readonly marker: string;
  /** Text showing a stream is attached (its initial state, or Nchan's `: hi`). */
  readonly readyMarker: string;
  /** The server's own word on the attached streams, awaited before the event is sent. */
  describeAttached?(ready: number): Promise<string>;
  /** Sends the event; resolves with the time (epoch ms) latency is counted from. */
  publish(): Promise<number>;
  stop(): Promise<void>;
}

async function measureFanout(bench: Bench, subject: FanoutSubject): Promise<FanoutResult> {
  const { label, memoryPid } = subject;
  const rssBefore = memoryPid === undefined ? 0 : await settledRss(memoryPid);
  const { pool, ready } = await bench.openPool(subject.targets, subject.marker, subject.readyMarker);
  const seen = subject.describeAttached ? ` (${await subject.describeAttached(ready.ready)})` : "";
  log(
    `   ${label}: ${fmtInt(ready.ready)} watchers attached (${ready.failed} failed) in ${fmt(ready.ms / 1000, 1)} s${seen}`,
  );
  await sleep(1_500);
  const rssAfter = memoryPid === undefined ? 0 : await settledRss(memoryPid);
  const cpuBefore = subject.cpuPids.map((pid) => cpuMs(pid) ?? 0);
  const reference = await subject.publish();
  // Until every watcher has it, for 15 s at most.
  const deadline = Date.now() + 15_000;
  let report = await pool.report(false);
  while (report.marked < ready.ready && Date.now() < deadline) {
    await sleep(1_000);
    report = await pool.report(false);
  }
  const cpuSpent = subject.cpuPids.map((pid, i) => (cpuMs(pid) ?? 0) - (cpuBefore[i] ?? 0));
  if (cpuSpent.length > 1)
    log(`   ${label}: server CPU per instance ${cpuSpent.map((v) => `${fmtInt(v)} ms`).join(", ")}`);
  report = await pool.report(true);
  await pool.close();
  await subject.stop();
  const result: FanoutResult = {
    label,
    watchers: ready.ready,
    received: report.marked,
    latency: summarize(report.times.map((t) => t - reference)),
    ...(memoryPid === undefined ? {} : { perStream: (rssAfter - rssBefore) / Math.max(1, ready.ready) }),
    serverCpuMs: cpuSpent.reduce((n, v) => n + v, 0),
  };
  const l = result.latency;
  log(
    `   ${label}: received by ${fmtInt(result.received)}/${fmtInt(result.watchers)}; p50 ${fmt(l.p50)} ms, p90 ${fmt(l.p90)} ms, p99 ${fmt(l.p99)} ms, max ${fmt(l.max)} ms` +
      `; server CPU ${fmtInt(result.serverCpuMs)} ms` +
      `${result.perStream === undefined ? "" : `; ${kib(result.perStream)} per subscriber`}`,
  );
  return result;
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
