import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/*
 * What the kernel says about a process: resident memory from /proc/<pid>/status and
 * CPU time from its threads' /proc/<pid>/task/<tid>/schedstat. Every process of the
 * bench runs on this machine, so these are read directly, the same way for Node, nginx
 * and anything else.
 */

let clockTicks: number | null = null;

/** Clock ticks per second for utime/stime (CLK_TCK, almost always 100). */
export function clockTicksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Resident set size in bytes (VmRSS), or null when the process is gone. */
export function rssBytes(pid: number): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * CPU time in milliseconds consumed so far, or null when the process is gone: the sum of
 * its threads' time on a CPU from /proc/<pid>/task/<tid>/schedstat, counted in
 * nanoseconds. /proc/<pid>/stat counts in 10 ms clock ticks, which is too coarse for an
 * idle window (one tick over 15 s is 0.04 ms/s per 1,000 streams at 15,000), so it is the
 * fallback only. A thread that ends between two readings takes its time with it; the
 * processes measured here (Node, nginx, redis-server) keep theirs for their lifetime.
 */
export function cpuMs(pid: number): number | null {
  const precise = scheduledMs(pid);
  if (precise !== null) return precise;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / clockTicksPerSecond();
  } catch {
    return null;
  }
}

/** The first field of every thread's schedstat (ns on a CPU), summed; null when unreadable. */
function scheduledMs(pid: number): number | null {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8");
      } catch {
        continue; // The thread ended after the listing.
      }
      const onCpu = Number(text.slice(0, text.indexOf(" ")));
      if (!Number.isFinite(onCpu)) return null;
      ns += onCpu;
    }
    return ns / 1e6;
  } catch {
    return null;
  }
}

/** Open file descriptors of a process (its sockets among them), or null when unreadable. */
export function openFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** The direct children of a process (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    if (text !== "") return text.split(/\s+/).map(Number);
  } catch {
    // CONFIG_PROC_CHILDREN missing: scan /proc below.
  }
  const found: number[] = [];
  try {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        if (ppid === pid) found.push(Number(entry));
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    // no /proc listing
  }
  return found;
}

/** The 1-minute load average. */
export function loadAverage1(): number {
  try {
    return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return Number.NaN;
  }
}

/** The median of `samples` RSS readings taken `everyMs` apart. */
export async function settledRss(pid: number, samples = 5, everyMs = 200): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    const value = rssBytes(pid);
    if (value !== null) values.push(value);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  values.sort((a, b) => a - b);
  return values[Math.floor(values.length / 2)] ?? Number.NaN;
}
