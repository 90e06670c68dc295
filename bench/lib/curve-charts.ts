import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ChartMarker, type ChartSeries, type LineChart, renderLineChart } from "./svg-chart.js";

/*
 * The growth curves' data as written to curves.json, and the charts drawn from it. The
 * JSON holds every measured point, so `node dist/bench/charts.js curves.json` redraws
 * the charts without running the bench again.
 */

export const CURVES_FORMAT = "bindwatch-bench-curves/1";

export interface FanoutPoint {
  /** Streams asked for. */
  readonly streams: number;
  readonly attached: number;
  /** Streams that saw the event; equal to `streams` when every watcher got it. */
  readonly received: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  /** RSS the streams added, per stream; null where no single process holds them. */
  readonly bytesPerStream: number | null;
}

export interface RegistrationPoint {
  readonly inFlight: number;
  readonly perSecond: number;
  readonly ok: number;
  readonly p50: number;
  readonly p99: number;
  readonly statuses: Readonly<Record<string, number>>;
}

export interface CurvesData {
  readonly format: typeof CURVES_FORMAT;
  /** When the run started (ISO 8601). */
  readonly date: string;
  readonly quick: boolean;
  /** CPU, core count and Node version of the machine that ran it. */
  readonly machine: string;
  readonly postSeconds: number;
  readonly fanout: readonly { readonly system: string; readonly points: readonly FanoutPoint[] }[];
  readonly registration: readonly { readonly system: string; readonly points: readonly RegistrationPoint[] }[];
}

/** One look per system in every chart: Okabe–Ito colours (distinct with colour blindness) and a marker. */
const STYLES: Record<string, { readonly color: string; readonly marker: ChartMarker }> = {
  "bindwatch, 1 instance": { color: "#0072b2", marker: "circle" },
  "bindwatch, in memory": { color: "#0072b2", marker: "circle" },
  "bindwatch, Redis": { color: "#d55e00", marker: "diamond" },
  "raw node:http": { color: "#e69f00", marker: "square" },
  Nchan: { color: "#009e73", marker: "triangle" },
};
const OTHER = { color: "#56b4e9", marker: "circle" } as const;

export function curveCharts(data: CurvesData): { readonly file: string; readonly chart: LineChart }[] {
  const run = `${data.quick ? "Quick run (--quick, small sizes)" : "Full run"}, ${data.date.slice(0, 10)} · ${data.machine}`;
  const everyReceived = data.fanout.every((c) => c.points.every((p) => p.received === p.streams));
  const received = everyReceived
    ? "Every watcher received the event at every point."
    : "Hollow markers: not every watcher received the event there.";
  const fanoutSeries = (y: (p: FanoutPoint) => number | null): ChartSeries[] =>
    data.fanout.map((c) => ({
      name: c.system,
      ...(STYLES[c.system] ?? OTHER),
      points: c.points.map((p) => ({ x: p.streams, y: y(p) ?? Number.NaN, hollow: p.received !== p.streams })),
    }));
  const registrationSeries = (y: (p: RegistrationPoint) => number): ChartSeries[] =>
    data.registration.map((c) => ({
      name: c.system,
      ...(STYLES[c.system] ?? OTHER),
      points: c.points.map((p) => ({ x: p.inFlight, y: y(p) })),
    }));
  const perPoint = [
    `${data.postSeconds} s per point, a fresh server (and Redis) each; a new trace_id per request.`,
    "Every bindwatch registration also starts its poll; the raw server only parses the JSON and answers 201.",
  ];
  return [
    {
      file: "fanout-p99.svg",
      chart: {
        title: "Fan-out p99 latency: one event to every watcher of a trace",
        subtitle: run,
        xLabel: "SSE streams watching the trace",
        yLabel: "p99 latency (ms)",
        xScale: "linear",
        series: fanoutSeries((p) => p.p99),
        notes: ["bindwatch is timed from the TOP double's answer, the baselines from their publish POST.", received],
      },
    },
    {
      file: "memory-per-stream.svg",
      chart: {
        title: "Server memory per open SSE stream",
        subtitle: run,
        xLabel: "SSE streams held by one server process",
        yLabel: "RSS added per stream (KiB)",
        xScale: "linear",
        series: fanoutSeries((p) => (p.bytesPerStream === null ? null : p.bytesPerStream / 1024)),
        notes: [
          "VmRSS with the streams attached minus before they opened, ÷ streams (Nchan: its one nginx worker).",
          received,
        ],
      },
    },
    {
      file: "registration-throughput.svg",
      chart: {
        title: "Registration throughput: POST /v1/binds",
        subtitle: run,
        xLabel: "requests in flight",
        yLabel: "registrations per second (log scale)",
        xScale: "log2",
        yScale: "log10",
        series: registrationSeries((p) => p.perSecond),
        notes: perPoint,
      },
    },
    {
      file: "registration-p99.svg",
      chart: {
        title: "Registration p99 latency: POST /v1/binds",
        subtitle: run,
        xLabel: "requests in flight",
        yLabel: "p99 latency (ms)",
        xScale: "log2",
        series: registrationSeries((p) => p.p99),
        notes: perPoint,
      },
    },
  ];
}

/** Writes every chart of `data` into `dir` (and curves.json, unless `withData` is false); returns the paths. */
export function writeCurveCharts(data: CurvesData, dir: string, withData = true): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  if (withData) {
    const path = join(dir, "curves.json");
    writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
    written.push(path);
  }
  for (const { file, chart } of curveCharts(data)) {
    const path = join(dir, file);
    writeFileSync(path, renderLineChart(chart));
    written.push(path);
  }
  return written;
}

/** Checks that `value` (parsed JSON) is curves data this version can draw; throws saying what is wrong. */
export function parseCurvesData(value: unknown): CurvesData {
  const data = value as Partial<CurvesData> | null;
  if (data?.format !== CURVES_FORMAT)
    throw new Error(`not ${CURVES_FORMAT} data (format: ${JSON.stringify(data?.format)})`);
  if (!Array.isArray(data.fanout) || !Array.isArray(data.registration))
    throw new Error("fanout and registration must be arrays");
  return data as CurvesData;
}
