import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { parseCurvesData, writeCurveCharts } from "./lib/curve-charts.js";

/*
 * Redraws the growth curves' charts from the data a bench run wrote, without running it:
 *
 *   node dist/bench/charts.js docs/charts/curves.json [--out DIR]
 *
 * The SVGs go beside the JSON unless --out names another folder.
 */

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { out: { type: "string" } },
  allowPositionals: true,
  strict: true,
});
const input = positionals[0];
if (input === undefined || positionals.length > 1) {
  process.stderr.write("usage: node dist/bench/charts.js CURVES_JSON [--out DIR]\n");
  process.exit(2);
}
try {
  const data = parseCurvesData(JSON.parse(readFileSync(input, "utf8")));
  for (const path of writeCurveCharts(data, values.out ?? dirname(input), false)) process.stdout.write(`${path}\n`);
} catch (err) {
  process.stderr.write(`charts: ${input}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
