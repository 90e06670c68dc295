import type { Logger } from "../domain/logger.js";
import type { Coordinator } from "./coordinator.js";
import { sleep } from "./sleep.js";

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

/**
 * Hands out the deployment-wide call budget to this instance's polls in arrival
 * order. Without the queue, traces whose waits happen to end first would take
 * every token and starve the rest when demand exceeds UPSTREAM_QPS; with it,
 * every waiting poll is delayed, none is dropped (SPEC §4.5).
 */
export function createPermitQueue(coordinator: Coordinator, logger: Logger) {
  const waiters: Waiter[] = [];
  let pumping = false;

  async function pump(): Promise<void> {
    if (pumping) return;
    pumping = true;
    try {
      while (waiters.length > 0) {
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
        const head = waiters.shift();
        if (!head) continue;
        head.signal?.removeEventListener("abort", head.onAbort);
        head.resolve();
      }
    } finally {
      pumping = false;
    }
  }

  return {
    /** Resolves when this caller may start one checkbind call. */
    acquire(signal?: AbortSignal): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(signal.reason);
          return;
        }
        const waiter: Waiter = {
          resolve,
          reject,
          signal,
          onAbort: () => {
            const i = waiters.indexOf(waiter);
            if (i !== -1) waiters.splice(i, 1);
            reject(signal?.reason);
          },
        };
        signal?.addEventListener("abort", waiter.onAbort, { once: true });
        waiters.push(waiter);
        void pump();
      });
    },
    get waiting(): number {
      return waiters.length;
    },
  };
}

export type PermitQueue = ReturnType<typeof createPermitQueue>;
