import { describe, expect, it } from "vitest";
import { cpuMs } from "../../bench/lib/proc.js";

describe("bench CPU readings", () => {
  it("count a process's CPU finer than the kernel's 10 ms ticks, in step with its own account", () => {
    const before = cpuMs(process.pid);
    const own = process.cpuUsage();
    // A few milliseconds of work: under one clock tick, so /proc/<pid>/stat alone would often read 0.
    const until = performance.now() + 4;
    let spins = 0;
    while (performance.now() < until) spins += 1;
    const spent = (cpuMs(process.pid) ?? 0) - (before ?? 0);
    const ownSpent = process.cpuUsage(own);
    expect(before).not.toBeNull();
    expect(spins).toBeGreaterThan(0);
    expect(spent).toBeGreaterThan(3);
    // getrusage (process.cpuUsage) sums every thread's scheduled time too: the two agree
    // within a fraction of a tick, where a tick count reads 0 or 10 ms for these 4.
    expect(Math.abs(spent - (ownSpent.user + ownSpent.system) / 1000)).toBeLessThan(2);
  });

  it("read null for a process that is not there", () => {
    expect(cpuMs(2 ** 22 + 1)).toBeNull();
  });
});
