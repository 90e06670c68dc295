import { describe, expect, it } from "vitest";
import { cpuMs } from "../../bench/lib/proc.js";

const cpuUsageMs = (since: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
};

describe("bench CPU readings", () => {
  it("count a process's CPU finer than the kernel's 10 ms ticks, in step with its own account", () => {
    // getrusage (process.cpuUsage) sums every thread's time on a CPU, as the reading does.
    // The process's other threads (GC, the test runner's) may run between any two
    // readings, so the reading is bracketed: it must hold at least the CPU spent inside
    // it and at most the CPU spent around it.
    const outer = process.cpuUsage();
    const before = cpuMs(process.pid);
    const inner = process.cpuUsage();
    // A few milliseconds of CPU: under one clock tick, so /proc/<pid>/stat alone would
    // read 0 or 10 ms for them.
    let spins = 0;
    while (cpuUsageMs(inner) < 4) spins += 1;
    const innerMs = cpuUsageMs(inner);
    const after = cpuMs(process.pid);
    const outerMs = cpuUsageMs(outer);
    expect(before).not.toBeNull();
    expect(after).not.toBeNull();
    expect(spins).toBeGreaterThan(0);
    const spent = (after ?? 0) - (before ?? 0);
    // Half a millisecond for getrusage's microsecond rounding and its split into user and system.
    expect(spent).toBeGreaterThanOrEqual(innerMs - 0.5);
    expect(spent).toBeLessThanOrEqual(outerMs + 0.5);
    // A count of 10 ms clock ticks reads a multiple of 10; nanoseconds summed almost never do.
    expect(spent % 10).not.toBe(0);
  });

  it("read null for a process that is not there", () => {
    expect(cpuMs(2 ** 22 + 1)).toBeNull();
  });
});
