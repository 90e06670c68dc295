import type { ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { delimiter, join } from "node:path";

/*
 * Every process the test suites start (redis-server, nginx, bindwatch instances) and
 * every directory they make is cleaned up when the test process ends, should a test
 * forget or fail first.
 */

const running = new Set<ChildProcess>();
const dirs = new Set<string>();

function cleanUp(): void {
  for (const child of running) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.once("exit", cleanUp);
// Vitest ends a worker process with SIGTERM, whose default action skips "exit" listeners:
// clean up, then die of the signal as before.
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.once(signal, () => {
    cleanUp();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

/** Kills `child` when the test process ends; forgotten once it exits by itself. */
export function trackChild<T extends ChildProcess>(child: T): T {
  running.add(child);
  child.once("exit", () => running.delete(child));
  child.once("error", () => running.delete(child));
  return child;
}

/** Removes `dir` when the test process ends, unless `untrackDir` came first. */
export function trackDir(dir: string): string {
  dirs.add(dir);
  return dir;
}

export function untrackDir(dir: string): void {
  dirs.delete(dir);
}

/**
 * `setpriv --pdeathsig SIGKILL` has the kernel kill a child when this process dies in a
 * way no listener sees (SIGKILL, a crash); without util-linux's setpriv, the listeners only.
 * Prefix a command with it: `spawn(...[...DEATH_SIGNAL_PREFIX, "redis-server", ...args])`.
 */
export const DEATH_SIGNAL_PREFIX: readonly string[] = (process.env.PATH ?? "")
  .split(delimiter)
  .some((dir) => existsSync(join(dir, "setpriv")))
  ? ["setpriv", "--pdeathsig", "SIGKILL"]
  : [];
