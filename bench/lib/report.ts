import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, freemem, release, totalmem } from "node:os";
import { fmt, kib, ratio } from "./stats.js";

/* The Markdown report: each scenario gives its rows of one summary table; the machine goes under it. */

/** Figure, bindwatch, baseline (same run), ratio, target, result. */
export type SummaryRow = readonly [string, string, string, string, string, string];

const HEADER = ["Figure", "bindwatch", "Baseline (same run)", "Ratio", "Target", "Result"];

export function verdict(ok: boolean | null): string {
  return ok === null ? "—" : ok ? "**met**" : "**missed**";
}

/** A Markdown table; `cells` rows under `header`. */
/**
 * The memory-per-stream row (bytes of RSS per stream) against raw node:http and, when it
 * ran, Nchan: the target of ≤ 1.0× raw, and the aim of ≤ 1.1× Nchan.
 */
export function memoryPerStreamRow(figure: string, bindwatch: number, raw: number, nchan: number | null): SummaryRow {
  return [
    figure,
    kib(bindwatch),
    [`raw node:http ${kib(raw)}`, nchan !== null ? `Nchan ${kib(nchan)}` : ""].filter(Boolean).join("; "),
    `${ratio(bindwatch, raw)} raw${nchan !== null ? `; ${ratio(bindwatch, nchan)} Nchan` : ""}`,
    "≤ 1.0× raw (aim ≤ 1.1× Nchan)",
    `${verdict(bindwatch <= raw)}${nchan !== null ? ` (aim ${bindwatch <= 1.1 * nchan ? "met" : "missed"})` : ""}`,
  ];
}

export function markdownTable(header: readonly string[], cells: readonly (readonly string[])[]): string {
  return [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...cells.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}

export function summaryTable(rows: readonly SummaryRow[]): string {
  return markdownTable(HEADER, rows);
}

export interface MachineInfo {
  readonly cpu: string;
  readonly memory: string;
  readonly os: string;
  readonly node: string;
  readonly redis: string;
}

export function describeMachine(): MachineInfo {
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
