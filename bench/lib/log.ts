import { loadAverage1 } from "./proc.js";
import { fmt } from "./stats.js";

/* The bench's console output: one line at a time, a rule per section, a closing line per scenario. */

export function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function logSection(title: string): void {
  log(`\n── ${title} ${"─".repeat(Math.max(0, 70 - title.length))}`);
}

/** "(fan-out: 41.2 s, load 1.83)": how long a scenario took and how busy the machine was at its end. */
export function logScenarioDone(name: string, startedAt: number): void {
  log(`   (${name}: ${fmt((Date.now() - startedAt) / 1000, 1)} s, load ${fmt(loadAverage1(), 2)})`);
}
