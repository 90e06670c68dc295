import type { SummaryRow } from "./report.js";

/*
 * The summary of several runs: for each figure, the row of the run whose ratio is the
 * median (its bindwatch figure and its baseline, measured side by side in that run), the
 * ratios of every run beside it. A figure with no ratio is ranked by its bindwatch figure.
 */

/** The first number of a cell ("12,140 (p50 …)" → 12140); null when none. */
export function firstNumber(cell: string): number | null {
  const match = /-?\d[\d,]*(?:\.\d+)?/.exec(cell);
  return match ? Number(match[0].replace(/,/g, "")) : null;
}

/** The first ratio of a Ratio cell ("p99 0.92× Nchan" → 0.92); null when none. */
export function firstRatio(cell: string): number | null {
  const match = /(\d+(?:\.\d+)?)×/.exec(cell);
  return match ? Number(match[1]) : null;
}

/** The row of `rows` whose rank is the median (the lower middle of an even count). */
function medianRow(rows: readonly SummaryRow[]): { row: SummaryRow; ranks: (number | null)[] } {
  const rankOf = (row: SummaryRow) => firstRatio(row[3]) ?? firstNumber(row[1]);
  const ranks = rows.map(rankOf);
  const ranked = rows
    .map((row, i) => ({ row, rank: ranks[i] }))
    .filter((r): r is { row: SummaryRow; rank: number } => r.rank !== null && r.rank !== undefined)
    .sort((a, b) => a.rank - b.rank);
  const middle = ranked[Math.floor((ranked.length - 1) / 2)];
  return { row: middle?.row ?? (rows[0] as SummaryRow), ranks };
}

/**
 * One summary from the rows of each run, in the first run's order of figures.
 * @example medianSummary([run1Rows, run2Rows, run3Rows])
 */
export function medianSummary(runs: readonly (readonly SummaryRow[])[]): SummaryRow[] {
  if (runs.length === 1) return [...(runs[0] ?? [])];
  const figures = [...new Set(runs.flatMap((rows) => rows.map((row) => row[0])))];
  return figures.map((figure) => {
    const rows = runs.flatMap((run) => run.filter((row) => row[0] === figure));
    const { row, ranks } = medianRow(rows);
    const all = ranks.map((r) => (r === null ? "—" : String(r))).join(", ");
    const [name, bindwatch, baseline, ratioCell, target, result] = row;
    return [name, bindwatch, baseline, `${ratioCell} (runs: ${all})`, target, result] as const;
  });
}
