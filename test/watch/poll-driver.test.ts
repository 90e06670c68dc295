import { describe, expect, it } from "vitest";
import type { BindRegistration } from "../../src/domain/bind.js";
import { silentLogger } from "../../src/domain/logger.js";
import { createInitialState } from "../../src/domain/state.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import { createHubRegistry } from "../../src/watch/hub.js";
import { createPermitQueue } from "../../src/watch/permit-queue.js";
import { type DriverEnv, pollTimings, startDriver } from "../../src/watch/poll-driver.js";
import { WAITING } from "../support/outcomes.js";

/** Lets every microtask queued so far (and those they queue) run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function reg(traceId: string): BindRegistration {
  return { trace_id: traceId, open_id: "open-123456", product_key: "pk", user_type: "ilop" };
}

/**
 * Drivers over a budget that never grants a permit by itself (the test hands them on) and a
 * store where another instance holds every lease: a driver that gets a permit asks for the
 * lease once, then waits for it.
 */
function setup() {
  const leaseAsks: string[] = [];
  const coordinator = {
    takeCallPermit: () => new Promise(() => {}),
    async acquireLease(traceId: string) {
      leaseAsks.push(traceId);
      return { kind: "held" as const, ms: 60_000 };
    },
    async subscribe() {
      return async () => {};
    },
    async getState() {
      return null;
    },
    now: Date.now,
  } as unknown as Coordinator;
  const permits = createPermitQueue(coordinator, silentLogger);
  const hubs = createHubRegistry({ coordinator, logger: silentLogger, onFinal() {} });
  const env: DriverEnv = {
    coordinator,
    client: { checkbind: async () => WAITING },
    logger: silentLogger,
    observer: undefined,
    timings: pollTimings(2_000),
    random: () => 0.5,
    permits,
    hubs,
    instanceId: "test",
    wanted: () => true,
    deliveriesOf: () => undefined,
    finalWritten() {},
    stopping: () => false,
  };
  const hubOf = (traceId: string) => {
    const hub = hubs.hubFor(traceId);
    hub.registration = reg(traceId);
    hub.last = createInitialState(reg(traceId), Date.now(), 180_000);
    return hub;
  };
  return { env, permits, leaseAsks, hubOf };
}

describe("poll driver start", () => {
  it("builds the poll only when its first permit comes; stopped before, it leaves the line and is done", async () => {
    const { env, permits, leaseAsks, hubOf } = setup();
    const a = startDriver(hubOf("a"), env);
    const b = startDriver(hubOf("b"), env);
    await settle();
    expect(leaseAsks).toEqual([]);
    expect(permits.waiting).toBe(2);

    a.stop(new Error("not wanted"));
    await a.done;
    expect(permits.waiting).toBe(1);

    permits.handOn();
    await settle();
    expect(leaseAsks).toEqual(["b"]);
    b.stop(new Error("end"));
    await b.done;
  });

  it("stopped between its permit and its start, hands the permit on to the next poll in line", async () => {
    const { env, permits, leaseAsks, hubOf } = setup();
    const a = startDriver(hubOf("a"), env);
    const b = startDriver(hubOf("b"), env);
    await settle();

    // The permit reaches `a`, whose start is queued as a microtask; `a` is stopped before it runs.
    permits.handOn();
    a.stop(new Error("not wanted"));
    await a.done;
    await settle();
    expect(leaseAsks).toEqual(["b"]);
    expect(permits.waiting).toBe(0);
    b.stop(new Error("end"));
    await b.done;
  });
});
