import { describe, expect, it } from "vitest";
import { firstNumber, firstRatio, medianSummary } from "../../bench/lib/median.js";
import type { SummaryRow } from "../../bench/lib/report.js";

const row = (figure: string, bindwatch: string, baseline: string, ratio: string): SummaryRow => [
  figure,
  bindwatch,
  baseline,
  ratio,
  "target",
  "result",
];

describe("bench medians", () => {
  it("reads ratios and figures out of cells", () => {
    expect(firstRatio("p99 0.92× Nchan")).toBe(0.92);
    expect(firstRatio("1.29× raw; 1.15× Nchan")).toBe(1.29);
    expect(firstRatio("—")).toBeNull();
    expect(firstNumber("12,140 (p50 1.8 ms, p99 13.0 ms)")).toBe(12140);
  });

  it("keeps, for each figure, the run whose ratio is the median, with that run's baseline", () => {
    const runs = [
      [row("fan-out", "136", "Nchan 148", "p99 0.92× Nchan"), row("memory", "10.5 KiB", "raw 11.9", "0.88× raw")],
      [row("fan-out", "170", "Nchan 140", "p99 1.21× Nchan"), row("memory", "11.5 KiB", "raw 9.0", "1.28× raw")],
      [row("fan-out", "120", "Nchan 160", "p99 0.75× Nchan"), row("memory", "11.0 KiB", "raw 11.0", "1.00× raw")],
    ];
    const summary = medianSummary(runs);
    expect(summary.map((r) => r.slice(0, 3))).toEqual([
      ["fan-out", "136", "Nchan 148"],
      ["memory", "11.0 KiB", "raw 11.0"],
    ]);
    expect(summary[0]?.[3]).toBe("p99 0.92× Nchan (runs: 0.92, 1.21, 0.75)");
  });

  it("ranks a figure without a ratio by its bindwatch figure, and passes one run through", () => {
    const runs = [[row("calls", "3", "x", "—")], [row("calls", "1", "y", "—")], [row("calls", "2", "z", "—")]];
    expect(medianSummary(runs)[0]?.slice(0, 3)).toEqual(["calls", "2", "z"]);
    const one = [row("a", "1", "b", "2× raw")];
    expect(medianSummary([one])).toEqual(one);
  });
});
