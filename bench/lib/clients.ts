import type { ChildProcess } from "node:child_process";
import type { ClientCommand, ClientMessage, ClientReady, ClientReport } from "../client.js";
import { forkHelper } from "./spawn.js";

/** What all client processes report together: their counts summed, their times and statuses merged. */
export interface PoolReport extends Omit<ClientReport, "type" | "times" | "statuses"> {
  readonly times: number[];
  readonly statuses: Record<string, number>;
}

export interface PoolReady {
  readonly ready: number;
  readonly failed: number;
  readonly retried: number;
  readonly ms: number;
  readonly errors: string[];
}

function nextMessage<T extends ClientMessage>(child: ChildProcess, type: T["type"], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ClientMessage) => {
      if (message.type === "error") {
        cleanup();
        reject(new Error(`client ${child.pid}: ${message.message}`));
      } else if (message.type === type) {
        cleanup();
        resolve(message as T);
      }
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`client ${child.pid} exited (${code}) while waiting for "${type}"`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`client ${child.pid}: no "${type}" within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/**
 * Several client processes (bench/client.ts) sharing one list of stream URLs, round
 * robin, so no process holds more sockets than the machine's 20,000-descriptor limit.
 */
export class ClientPool {
  private constructor(private readonly children: ChildProcess[]) {}

  static async open(opts: {
    readonly script: string;
    readonly targets: readonly string[];
    readonly processes: number;
    readonly marker: string;
    readonly readyMarker?: string;
    /** Connects in flight per process. */
    readonly concurrency: number;
    readonly timeoutMs: number;
    readonly lifetimeMs: number;
  }): Promise<{ pool: ClientPool; ready: PoolReady }> {
    const count = Math.max(1, Math.min(opts.processes, opts.targets.length));
    const lists: string[][] = Array.from({ length: count }, () => []);
    opts.targets.forEach((target, i) => {
      lists[i % count]?.push(target);
    });
    const children = lists.map(() =>
      forkHelper(opts.script, { BENCH_CLIENT_LIFETIME_MS: String(opts.lifetimeMs), NODE_OPTIONS: "" }),
    );
    const pool = new ClientPool(children);
    try {
      const readies = await Promise.all(
        children.map((child, i) => {
          const waiting = nextMessage<ClientReady>(child, "ready", opts.timeoutMs);
          const command: ClientCommand = {
            cmd: "open",
            targets: lists[i] ?? [],
            marker: opts.marker,
            ...(opts.readyMarker === undefined ? {} : { readyMarker: opts.readyMarker }),
            concurrency: opts.concurrency,
            retries: 2,
          };
          child.send(command);
          return waiting;
        }),
      );
      return {
        pool,
        ready: {
          ready: readies.reduce((n, r) => n + r.ready, 0),
          failed: readies.reduce((n, r) => n + r.failed, 0),
          retried: readies.reduce((n, r) => n + r.retried, 0),
          ms: Math.max(...readies.map((r) => r.ms)),
          errors: readies.flatMap((r) => r.errors).slice(0, 5),
        },
      };
    } catch (err) {
      await pool.close();
      throw err;
    }
  }

  /** Zeroes the ping counters of every stream. */
  async reset(): Promise<void> {
    await Promise.all(
      this.children.map((child) => {
        const waiting = nextMessage(child, "reset", 10_000);
        child.send({ cmd: "reset" } satisfies ClientCommand);
        return waiting;
      }),
    );
  }

  async report(includeTimes: boolean): Promise<PoolReport> {
    const reports = await Promise.all(
      this.children.map((child) => {
        const waiting = nextMessage<ClientReport>(child, "report", 30_000);
        child.send({ cmd: "report", includeTimes } satisfies ClientCommand);
        return waiting;
      }),
    );
    const statuses: Record<string, number> = {};
    for (const r of reports) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
    return {
      open: reports.reduce((n, r) => n + r.open, 0),
      ready: reports.reduce((n, r) => n + r.ready, 0),
      failed: reports.reduce((n, r) => n + r.failed, 0),
      dropped: reports.reduce((n, r) => n + r.dropped, 0),
      pings: reports.reduce((n, r) => n + r.pings, 0),
      pinged: reports.reduce((n, r) => n + r.pinged, 0),
      marked: reports.reduce((n, r) => n + r.marked, 0),
      times: reports.flatMap((r) => [...(r.times ?? [])]),
      statuses,
    };
  }

  /** Closes every stream and ends the client processes. */
  async close(): Promise<void> {
    await Promise.all(
      this.children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) {
              resolve();
              return;
            }
            const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
            child.once("exit", () => {
              clearTimeout(timer);
              resolve();
            });
            try {
              child.send({ cmd: "close" } satisfies ClientCommand);
            } catch {
              child.kill("SIGKILL");
            }
          }),
      ),
    );
  }
}
