import { describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../src/domain/logger.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import { createPermitQueue } from "../../src/watch/permit-queue.js";

/** A call budget that grants one permit each time `grant()` is called, and holds the rest. */
function budget() {
  let grants = 0;
  let wake: (() => void) | null = null;
  const coordinator = {
    async takeCallPermit() {
      if (grants > 0) {
        grants -= 1;
        return { kind: "go" as const };
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      return { kind: "wait" as const, ms: 0 };
    },
  } as unknown as Coordinator;
  return {
    coordinator,
    grant() {
      grants += 1;
      const w = wake;
      wake = null;
      w?.();
    },
  };
}

describe("permit queue", () => {
  it("hands permits out in arrival order; an aborted waiter leaves the line and the next one moves up", async () => {
    const { coordinator, grant } = budget();
    const queue = createPermitQueue(coordinator, silentLogger);
    const granted: number[] = [];
    const controllers = Array.from({ length: 5 }, () => new AbortController());
    const results = controllers.map((c, i) =>
      queue.acquire(c.signal).then(
        () => granted.push(i),
        (reason: unknown) => reason,
      ),
    );
    expect(queue.waiting).toBe(5);

    grant();
    await vi.waitFor(() => expect(granted).toEqual([0]));

    controllers[1]?.abort(new Error("not wanted"));
    controllers[3]?.abort(new Error("not wanted either"));
    expect(queue.waiting).toBe(2);
    expect(String(await results[1])).toContain("not wanted");

    grant();
    await vi.waitFor(() => expect(granted).toEqual([0, 2]));
    grant();
    await vi.waitFor(() => expect(granted).toEqual([0, 2, 4]));
    expect(queue.waiting).toBe(0);
  });

  it("refuses at once a signal that is already aborted", async () => {
    const { coordinator } = budget();
    const queue = createPermitQueue(coordinator, silentLogger);
    await expect(queue.acquire(AbortSignal.abort(new Error("gone")))).rejects.toThrow("gone");
    expect(queue.waiting).toBe(0);
  });
});
