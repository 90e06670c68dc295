import { killAllChildren } from "./spawn.js";

/*
 * Whatever happens, nothing the bench started outlives it: stops registered while it
 * runs are run at the end, last first; Ctrl-C, SIGTERM, exit and the run's time limit
 * SIGKILL every child still running (bench/lib/spawn.ts tracks them by pid).
 */

export interface Cleanup {
  /** Runs `stop` at the end of the run (a stop that already ran must be harmless). */
  defer(stop: () => Promise<void>): void;
  /** Runs every deferred stop, last registered first; a failing stop does not keep the others from running. */
  runAll(): Promise<void>;
}

export function createCleanup(): Cleanup {
  const stops: (() => Promise<void>)[] = [];
  return {
    defer(stop) {
      stops.push(stop);
    },
    async runAll() {
      for (const stop of stops.splice(0).reverse()) await stop().catch(() => {});
    },
  };
}

/** Kills every child on SIGINT, SIGTERM or exit, and ends the whole run after `limitMs`. */
export function killChildrenOnExit(opts: { readonly limitMs: number; readonly log: (line: string) => void }): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      opts.log(`\nbench: ${signal}: stopping everything`);
      killAllChildren();
      process.exit(130);
    });
  }
  process.once("exit", () => killAllChildren());
  setTimeout(() => {
    process.stderr.write(`bench: the run passed ${opts.limitMs / 60_000} min; stopping\n`);
    killAllChildren();
    process.exit(1);
  }, opts.limitMs).unref();
}
