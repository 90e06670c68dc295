import { existsSync } from "node:fs";

/*
 * A wrong wall clock for a real process: libfaketime (Debian's `faketime`) preloaded
 * into it shifts what `Date.now()` and every other wall-clock read says, while timers
 * (monotonic) keep real time. How a test gives one instance a clock that disagrees.
 */

/** The multi-threaded build: Node reads the clock from more than one thread. */
export const LIBFAKETIME = process.env.LIBFAKETIME ?? "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/**
 * The environment that shifts a process's wall clock by `offsetSeconds` (+ ahead, − behind).
 * @example startInstance("ahead", { ...env, ...skewedClockEnv(30) })
 */
export function skewedClockEnv(offsetSeconds: number): Record<string, string> {
  if (!existsSync(LIBFAKETIME)) {
    throw new Error(`no libfaketime at ${LIBFAKETIME}: apt-get install faketime, or set LIBFAKETIME`);
  }
  return {
    LD_PRELOAD: LIBFAKETIME,
    FAKETIME: `${offsetSeconds >= 0 ? "+" : ""}${offsetSeconds}s`,
    // Timers and intervals stay on real time: only the wall clock is wrong.
    FAKETIME_DONT_FAKE_MONOTONIC: "1",
  };
}
