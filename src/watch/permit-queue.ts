import type { Logger } from "../domain/logger.js";
import type { Coordinator } from "./coordinator.js";
import { sleep } from "./sleep.js";

/** A place in the queue: `grant` runs once, when its permit comes. */
interface Waiter {
  readonly grant: () => void;
}

/**
 * Hands out the deployment-wide call budget to this instance's polls in arrival
 * order. Without the queue, traces whose waits happen to end first would take
 * every token and starve the rest when demand exceeds UPSTREAM_QPS; with it,
 * every waiting poll is delayed, none is dropped (SPEC §4.5).
 */
export function createPermitQueue(coordinator: Coordinator, logger: Logger) {
  // A Set keeps arrival order and leaves in O(1): an instance with tens of thousands of
  // polls waiting (demand past UPSTREAM_QPS) aborts them all when it stops, and an array's
  // splice made that quadratic (50,000 waiters took 1.9 s to abort).
  const waiters = new Set<Waiter>();
  let pumping = false;

  /** Lets the first caller in line go, if any waits. */
  function grantHead(): void {
    const head: Waiter | undefined = waiters.values().next().value;
    if (!head) return;
    waiters.delete(head);
    head.grant();
  }

  async function pump(): Promise<void> {
    if (pumping) return;
    pumping = true;
    try {
      while (waiters.size > 0) {
        let permit: Awaited<ReturnType<Coordinator["takeCallPermit"]>>;
        try {
          permit = await coordinator.takeCallPermit();
        } catch (err) {
          logger.warn({ err }, "call budget unavailable; retrying");
          await sleep(250);
          continue;
        }
        if (permit.kind === "wait") {
          await sleep(permit.ms);
          continue;
        }
        grantHead();
      }
    } finally {
      pumping = false;
    }
  }

  /** Queues `grant` for one permit; the function returned leaves the queue (a no-op once granted). */
  function enqueue(grant: () => void): () => void {
    const waiter: Waiter = { grant };
    waiters.add(waiter);
    void pump();
    return () => {
      waiters.delete(waiter);
    };
  }

  return {
    enqueue,
    /** Resolves when this caller may start one checkbind call; rejects with the signal's reason on abort. */
    acquire(signal: AbortSignal): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        if (signal.aborted) {
          reject(signal.reason);
          return;
        }
        const onAbort = () => {
          leave();
          reject(signal.reason);
        };
        const leave = enqueue(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
    /**
     * Gives a permit this caller took but cannot use (another instance holds the trace's
     * lease) to the next caller in line; with nobody waiting, the permit goes unused.
     */
    handOn(): void {
      grantHead();
    },
    get waiting(): number {
      return waiters.size;
    },
  };
}

export type PermitQueue = ReturnType<typeof createPermitQueue>;
