import type { Bench } from "../lib/bench.js";
import { CURVES_FORMAT, type CurvesData, type FanoutPoint, type RegistrationPoint } from "../lib/curve-charts.js";
import { log, logScenarioDone, logSection } from "../lib/log.js";
import { markdownTable } from "../lib/report.js";
import { fmt, fmtInt } from "../lib/stats.js";
import { type FanoutResult, measureBindwatchFanout, measureNchanFanout, measureRawFanout } from "./fan-out.js";
import { measureRegistration } from "./registration.js";

/*
 * Growth curves: how the fan-out and registration figures move with load.
 *
 *   fan-out       p99 latency and memory per stream at each --curve-streams size, for
 *                 bindwatch (1 instance, in memory), the raw node:http server and Nchan,
 *                 measured as the fan-out scenario does (a fresh server per point)
 *   registration  POST/s, p50 and p99 at each --curve-concurrency, for bindwatch in memory,
 *                 bindwatch with Redis and the raw node:http JSON handler, measured as the
 *                 registration scenario does (a fresh server per point, --post-seconds each)
 *
 * The systems take turns at every size, so a change in the machine's load touches them
 * alike; bindwatch goes first, as it stands first in the charts' legends. The entry
 * writes the data and the charts (bench/lib/curve-charts.ts).
 */

export async function runCurves(bench: Bench, machine: string): Promise<CurvesData> {
  const { curveStreams, curveConcurrency, postSeconds } = bench.options.sizes;
  const date = new Date().toISOString();
  const fanout = new Map<string, FanoutPoint[]>();
  logSection(`Curves: fan-out at ${curveStreams.map(fmtInt).join(", ")} streams`);
  const t0 = Date.now();
  if (!bench.nchan?.ok) {
    const why = bench.nchan ? bench.nchan.reason : "--no-nchan";
    log(`   Nchan baseline SKIPPED: ${why}`);
    bench.note(`Nchan baseline skipped: ${why}`);
  }
  for (const streams of curveStreams) {
    const results: FanoutResult[] = [await measureBindwatchFanout(bench, 1, streams, "curve")];
    if (bench.options.rawFanout) results.push(await measureRawFanout(bench, streams));
    if (bench.nchan?.ok) results.push(await measureNchanFanout(bench, bench.nchan, streams));
    for (const r of results) {
      const point: FanoutPoint = {
        streams,
        attached: r.watchers,
        received: r.received,
        p50: r.latency.p50,
        p90: r.latency.p90,
        p99: r.latency.p99,
        max: r.latency.max,
        bytesPerStream: r.perStream ?? null,
      };
      if (point.received !== streams)
        bench.note(
          `Curves: ${r.label} at ${fmtInt(streams)} streams: only ${fmtInt(point.received)} received the event`,
        );
      fanout.set(r.label, [...(fanout.get(r.label) ?? []), point]);
    }
  }
  logScenarioDone("curves, fan-out", t0);

  logSection(`Curves: registration at ${curveConcurrency.join(", ")} in flight, ${postSeconds} s each`);
  const t1 = Date.now();
  const registration = new Map<string, RegistrationPoint[]>();
  for (const inFlight of curveConcurrency) {
    for (const system of ["bindwatch, in memory", "bindwatch, Redis", "raw node:http"] as const) {
      const r = await measureRegistration(bench, system, inFlight, "curve");
      const point: RegistrationPoint = {
        inFlight,
        perSecond: r.perSecond,
        ok: r.ok,
        p50: r.p50,
        p99: r.p99,
        statuses: r.statuses,
      };
      registration.set(system, [...(registration.get(system) ?? []), point]);
    }
  }
  logScenarioDone("curves, registration", t1);
  return {
    format: CURVES_FORMAT,
    date,
    quick: bench.options.quick,
    machine,
    postSeconds,
    fanout: [...fanout].map(([system, points]) => ({ system, points })),
    registration: [...registration].map(([system, points]) => ({ system, points })),
  };
}

/** The curves as two Markdown tables, for the report. */
export function curvesReport(data: CurvesData): string {
  const fanoutRows = data.fanout
    .flatMap((c) => c.points.map((p) => ({ system: c.system, p })))
    .sort((a, b) => a.p.streams - b.p.streams)
    .map(({ system, p }) => [
      fmtInt(p.streams),
      system,
      `${fmtInt(p.received)} / ${fmtInt(p.streams)}${p.received === p.streams ? "" : " **(not all)**"}`,
      `${fmt(p.p50)} / ${fmt(p.p99)} / ${fmt(p.max)}`,
      p.bytesPerStream === null ? "—" : fmt(p.bytesPerStream / 1024, 1),
    ]);
  const registrationRows = data.registration
    .flatMap((c) => c.points.map((p) => ({ system: c.system, p })))
    .sort((a, b) => a.p.inFlight - b.p.inFlight)
    .map(({ system, p }) => [String(p.inFlight), system, fmtInt(p.perSecond), `${fmt(p.p50)} / ${fmt(p.p99)}`]);
  return [
    `### Growth curves${data.quick ? " (quick)" : ""}`,
    "",
    "Fan-out of one event to every stream of a trace (a fresh server per point):",
    "",
    markdownTable(["Streams", "System", "Received", "p50 / p99 / max, ms", "KiB per stream"], fanoutRows),
    "",
    `Registration, POST /v1/binds, ${data.postSeconds} s per point:`,
    "",
    markdownTable(["In flight", "System", "POST/s", "p50 / p99, ms"], registrationRows),
  ].join("\n");
}
