import { fmt, fmtInt } from "./stats.js";

/*
 * A line chart as a standalone SVG string: one line per series with a marker per point,
 * axes with ticks and labels, a grid, a legend, on a white background so it reads the
 * same on GitHub in light and dark mode. A linear y axis starts at 0, so heights compare;
 * a log10 one fits series an order of magnitude apart.
 *
 *   renderLineChart({ title: "Fan-out p99", xLabel: "streams", yLabel: "ms", xScale: "linear",
 *     series: [{ name: "bindwatch", color: "#0072b2", marker: "circle", points: [{ x: 1000, y: 41 }] }] })
 */

export interface ChartPoint {
  readonly x: number;
  readonly y: number;
  /** Drawn hollow: the point is flagged (say, not every watcher received the event). */
  readonly hollow?: boolean;
}

export type ChartMarker = "circle" | "square" | "triangle" | "diamond";

export interface ChartSeries {
  readonly name: string;
  readonly color: string;
  readonly marker: ChartMarker;
  readonly points: readonly ChartPoint[];
}

export interface LineChart {
  readonly title: string;
  readonly subtitle: string;
  readonly xLabel: string;
  readonly yLabel: string;
  /** `log2`: ticks at the powers of two, for doubling steps (requests in flight). */
  readonly xScale: "linear" | "log2";
  /** `log10`: ticks at 1, 2 and 5 × 10ⁿ, for series an order of magnitude apart. Default linear. */
  readonly yScale?: "linear" | "log10";
  readonly series: readonly ChartSeries[];
  /** Lines of small print under the chart (two fit). */
  readonly notes?: readonly string[];
}

const WIDTH = 720;
const HEIGHT = 460;
const PLOT = { left: 76, right: WIDTH - 28, top: 100, bottom: HEIGHT - 90 };
const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const INK = "#1f2328";
const MUTED = "#59636e";
const GRID = "#d1d9e0";

export function renderLineChart(chart: LineChart): string {
  const points = chart.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const ys = points.map((p) => p.y);
  const yLog = chart.yScale === "log10";
  const yTicks = yLog ? log10Ticks(ys) : linearTicks(Math.max(0, ...ys));
  const yMin = yLog ? (yTicks[0] ?? 1) : 0;
  const yMax = yTicks.at(-1) ?? 1;
  const xs = points.map((p) => p.x);
  const xTicks = chart.xScale === "log2" ? log2Ticks(xs) : linearTicks(Math.max(0, ...xs));
  const xMin = chart.xScale === "log2" ? (xTicks[0] ?? 1) : 0;
  const xMax = xTicks.at(-1) ?? 1;
  const toX = (x: number) => {
    const t = chart.xScale === "log2" ? Math.log2(x / xMin) / Math.log2(xMax / xMin) : (x - xMin) / (xMax - xMin || 1);
    return PLOT.left + t * (PLOT.right - PLOT.left);
  };
  const toY = (y: number) => {
    const t = yLog ? Math.log10(y / yMin) / Math.log10(yMax / yMin) : y / yMax;
    return PLOT.bottom - t * (PLOT.bottom - PLOT.top);
  };

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="${FONT}" role="img" aria-label="${esc(chart.title)}">`,
    `<title>${esc(chart.title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    text(PLOT.left, 30, chart.title, { size: 18, weight: "600" }),
    text(PLOT.left, 52, chart.subtitle, { size: 12, color: MUTED }),
  ];
  // Legend: one row above the plot.
  let legendX = PLOT.left;
  for (const s of chart.series) {
    parts.push(
      `<line x1="${legendX}" y1="76" x2="${legendX + 24}" y2="76" stroke="${s.color}" stroke-width="2.5"/>`,
      marker(s.marker, legendX + 12, 76, s.color, false),
      text(legendX + 32, 80, s.name, { size: 13 }),
    );
    legendX += 32 + estimateWidth(s.name, 13) + 24;
  }
  // Grid and y ticks.
  for (const tick of yTicks) {
    const y = round(toY(tick));
    parts.push(
      `<line x1="${PLOT.left}" y1="${y}" x2="${PLOT.right}" y2="${y}" stroke="${GRID}" stroke-width="1"/>`,
      text(PLOT.left - 8, y + 4, tickLabel(tick, yTicks), { size: 12, color: MUTED, anchor: "end" }),
    );
  }
  // X ticks.
  for (const tick of xTicks) {
    const x = round(toX(tick));
    parts.push(
      `<line x1="${x}" y1="${PLOT.bottom}" x2="${x}" y2="${PLOT.bottom + 5}" stroke="${MUTED}" stroke-width="1"/>`,
      text(x, PLOT.bottom + 20, tickLabel(tick, xTicks), { size: 12, color: MUTED, anchor: "middle" }),
    );
  }
  // Axes.
  parts.push(
    `<line x1="${PLOT.left}" y1="${PLOT.bottom}" x2="${PLOT.right}" y2="${PLOT.bottom}" stroke="${MUTED}" stroke-width="1"/>`,
    `<line x1="${PLOT.left}" y1="${PLOT.top}" x2="${PLOT.left}" y2="${PLOT.bottom}" stroke="${MUTED}" stroke-width="1"/>`,
    text((PLOT.left + PLOT.right) / 2, PLOT.bottom + 42, chart.xLabel, { size: 13, anchor: "middle" }),
    `<text x="0" y="0" transform="translate(20 ${(PLOT.top + PLOT.bottom) / 2}) rotate(-90)" font-size="13" fill="${INK}" text-anchor="middle">${esc(chart.yLabel)}</text>`,
  );
  // Lines and their markers.
  for (const s of chart.series) {
    const valid = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (valid.length === 0) continue;
    const path = valid.map((p) => `${round(toX(p.x))},${round(toY(p.y))}`).join(" ");
    parts.push(
      `<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2.5" stroke-linejoin="round"/>`,
    );
    for (const p of valid) parts.push(marker(s.marker, toX(p.x), toY(p.y), s.color, p.hollow === true));
  }
  (chart.notes ?? []).forEach((line, i) => {
    parts.push(text(PLOT.left, PLOT.bottom + 64 + 14 * i, line, { size: 11, color: MUTED }));
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}

/** 0 and about five evenly spaced round steps (1, 2 or 5 × 10ⁿ) reaching at least `max`. */
export function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const rough = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let i = 0; i * step < max + step * 1e-9; i += 1) ticks.push(round(i * step, 10));
  if ((ticks.at(-1) ?? 0) < max) ticks.push(round(ticks.length * step, 10));
  return ticks;
}

/** 1, 2 and 5 × 10ⁿ from the one at or below the smallest value to the one at or above the largest. */
export function log10Ticks(values: readonly number[]): number[] {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return [1, 10];
  const min = Math.min(...positive);
  const max = Math.max(...positive);
  const ticks: number[] = [];
  // One tick past `max` at least, so even equal values get two ticks.
  for (let decade = Math.floor(Math.log10(min)); ticks.length === 0 || (ticks.at(-1) ?? 0) <= max; decade += 1) {
    for (const m of [1, 2, 5]) ticks.push(m * 10 ** decade);
  }
  const first = Math.max(
    0,
    ticks.findLastIndex((t) => t <= min),
  );
  const last = Math.max(
    first + 1,
    ticks.findIndex((t) => t >= max),
  );
  return ticks.slice(first, last + 1);
}

/** The powers of two from the largest at or below the smallest value to the smallest at or above the largest. */
export function log2Ticks(values: readonly number[]): number[] {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return [1, 2];
  const low = Math.floor(Math.log2(Math.min(...positive)));
  const high = Math.max(low + 1, Math.ceil(Math.log2(Math.max(...positive))));
  return Array.from({ length: high - low + 1 }, (_, i) => 2 ** (low + i));
}

/** As many decimals as the finest tick needs (0 to 3), the same for every tick of an axis. */
function tickLabel(value: number, ticks: readonly number[]): string {
  const exact = (d: number) => ticks.every((t) => Math.abs(t * 10 ** d - Math.round(t * 10 ** d)) < 1e-6);
  const digits = [0, 1, 2].find(exact) ?? 3;
  return digits === 0 ? fmtInt(value) : fmt(value, digits);
}

function marker(shape: ChartMarker, x: number, y: number, color: string, hollow: boolean): string {
  const paint = hollow ? `fill="#ffffff" stroke="${color}" stroke-width="2"` : `fill="${color}"`;
  const [cx, cy] = [round(x), round(y)];
  switch (shape) {
    case "circle":
      return `<circle cx="${cx}" cy="${cy}" r="4.5" ${paint}/>`;
    case "square":
      return `<rect x="${round(x - 4)}" y="${round(y - 4)}" width="8" height="8" ${paint}/>`;
    case "triangle":
      return `<polygon points="${cx},${round(y - 5.5)} ${round(x + 5)},${round(y + 3.5)} ${round(x - 5)},${round(y + 3.5)}" ${paint}/>`;
    case "diamond":
      return `<polygon points="${cx},${round(y - 5.5)} ${round(x + 5.5)},${cy} ${cx},${round(y + 5.5)} ${round(x - 5.5)},${cy}" ${paint}/>`;
  }
}

function text(
  x: number,
  y: number,
  content: string,
  style: { size: number; color?: string; weight?: string; anchor?: "start" | "middle" | "end" },
): string {
  return `<text x="${round(x)}" y="${round(y)}" font-size="${style.size}" fill="${style.color ?? INK}"${style.weight ? ` font-weight="${style.weight}"` : ""}${style.anchor && style.anchor !== "start" ? ` text-anchor="${style.anchor}"` : ""}>${esc(content)}</text>`;
}

/** A sans-serif line is about 0.55 em per character: enough to space legend entries. */
function estimateWidth(content: string, size: number): number {
  return content.length * size * 0.55;
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function esc(content: string): string {
  return content.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
