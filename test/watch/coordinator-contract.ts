import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import type { BindRegistration, BindState } from "../../src/domain/bind.js";
import { createInitialState } from "../../src/domain/state.js";
import type { Coordinator, Unsubscribe } from "../../src/watch/coordinator.js";

/** What the suite configures; every engine's factory must honour it. */
export interface CoordinatorContractOptions {
  readonly retentionMs: number;
  readonly resultTtlMs: number;
  readonly upstreamQps: number;
}

export interface CoordinatorContractSubject {
  readonly coordinator: Coordinator;
  /** Another instance sharing the same store, when the engine has one. */
  readonly second?: Coordinator;
  cleanup(): Promise<void>;
}

/** The options most tests run with; the retention test shortens the times. */
export const CONTRACT_OPTIONS: CoordinatorContractOptions = Object.freeze({
  retentionMs: 120_000,
  resultTtlMs: 60_000,
  upstreamQps: 5,
});

const BIND_TIMEOUT_MS = 180_000;

function newTraceId(): string {
  return `trace-${randomUUID()}`;
}

function registration(traceId: string, params: Record<string, unknown> = { authCode: "a-1", ssProductKey: "ss-1" }) {
  return {
    trace_id: traceId,
    open_id: "open-1",
    product_key: "pk-1",
    user_type: "ilop",
    device_name: "dev-1",
    params,
  } satisfies BindRegistration;
}

/** A change that needs a new version (the upstream message differs). */
function bump(state: BindState): BindState {
  return {
    ...state,
    version: state.version + 1,
    attempts: state.attempts + 1,
    upstream: { ret_code: 0, message: `v${state.version + 1}`, request_id: randomUUID(), eagleeye_id: "e" },
  };
}

/** A poll that changed nothing a watcher sees: attempts grow, the version does not. */
function touch(state: BindState): BindState {
  return { ...state, attempts: state.attempts + 1 };
}

function finish(state: BindState): BindState {
  return { ...state, status: "bound", final: true, version: state.version + 1, attempts: state.attempts + 1 };
}

/** Polls until `condition` holds; real-time waits in this suite only ever wait for a condition. */
async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/**
 * The behaviour every Coordinator must have (in-memory, Redis standalone and Cluster,
 * Durable Object). `makeCoordinator` is called once or more per test with the options
 * to use, and must give a fresh store (e.g. a fresh key prefix).
 *
 * @example describeCoordinatorContract("memory", async (o) => { const c = createMemoryCoordinator(o); return { coordinator: c, cleanup: () => c.close() }; }, { sharedByInstances: false });
 */
export function describeCoordinatorContract(
  name: string,
  makeCoordinator: (options: CoordinatorContractOptions) => Promise<CoordinatorContractSubject>,
  engine: { readonly sharedByInstances: boolean },
): void {
  /** Cross-instance cases exist only for engines several instances share (Redis); `second` is given there. */
  const acrossInstances = engine.sharedByInstances ? it : () => {};
  describe(`Coordinator contract: ${name}`, () => {
    const opened: CoordinatorContractSubject[] = [];

    async function open(options: CoordinatorContractOptions = CONTRACT_OPTIONS) {
      const subject = await makeCoordinator(options);
      opened.push(subject);
      const a = subject.coordinator;
      return { a, second: subject.second, b: subject.second ?? a };
    }

    async function registered(c: Coordinator, reg: BindRegistration = registration(newTraceId())) {
      const result = await c.register(reg, createInitialState(reg, Date.now(), BIND_TIMEOUT_MS));
      if (result.kind === "conflict") throw new Error("unexpected conflict");
      return { reg, traceId: reg.trace_id, state: result.state };
    }

    afterEach(async () => {
      for (const subject of opened.splice(0)) await subject.cleanup();
    });

    describe("registration", () => {
      it("creates a trace, answers existing for the same parameters in any key order, conflict otherwise", async () => {
        const { a, b } = await open();
        const reg = registration(newTraceId(), { authCode: "x", ssProductKey: "y" });
        const initial = createInitialState(reg, Date.now(), BIND_TIMEOUT_MS);
        expect(await a.register(reg, initial)).toEqual({ kind: "created", state: initial });

        const reordered: BindRegistration = {
          params: { ssProductKey: "y", authCode: "x" },
          device_name: reg.device_name,
          user_type: reg.user_type,
          product_key: reg.product_key,
          open_id: reg.open_id,
          trace_id: reg.trace_id,
        };
        const later = createInitialState(reg, Date.now() + 5_000, BIND_TIMEOUT_MS);
        expect(await b.register(reordered, later)).toEqual({ kind: "existing", state: initial });

        expect(await b.register({ ...reg, params: { authCode: "other", ssProductKey: "y" } }, later)).toEqual({
          kind: "conflict",
        });
        expect(await a.register({ ...reg, iot_id: "iot-9" }, later)).toEqual({ kind: "conflict" });
        expect(await a.getState(reg.trace_id)).toEqual(initial);
      });

      it("returns the stored registration and state, and null for an unknown trace", async () => {
        const { a, b } = await open();
        const { reg, traceId, state } = await registered(a);
        expect(await b.getRegistration(traceId)).toEqual(reg);
        expect(await b.getState(traceId)).toEqual(state);
        expect(await a.getRegistration(newTraceId())).toBeNull();
        expect(await a.getState(newTraceId())).toBeNull();
      });
    });

    describe("state updates and fan-out", () => {
      it("answers null for an unknown trace", async () => {
        const { a } = await open();
        expect(await a.updateState(newTraceId(), bump)).toBeNull();
      });

      it("publishes only version changes and resolves to the stored state", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const received: BindState[] = [];
        const unsubscribe = await b.subscribe(traceId, (s) => received.push(s));

        const touched = await a.updateState(traceId, touch);
        expect(touched).toEqual({ ...state, attempts: 1 });
        expect(await b.getState(traceId)).toEqual(touched);

        const unchanged = await a.updateState(traceId, (s) => s);
        expect(unchanged).toEqual(touched);

        const bumped = await a.updateState(traceId, bump);
        expect(bumped?.version).toBe(2);
        expect(await b.getState(traceId)).toEqual(bumped);
        // Messages of one trace arrive in order, so had the touch been published it would be first.
        await waitFor(() => received.length >= 1, "the published state");
        expect(received).toEqual([bumped]);
        await unsubscribe();
      });

      it("applies concurrent updates without losing any", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const writers = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b));
        const results = await Promise.all(writers.map((c) => c.updateState(traceId, touch)));
        expect(results.every((s) => s !== null)).toBe(true);
        expect((await a.getState(traceId))?.attempts).toBe(20);
        const attempts = results.map((s) => s?.attempts).sort((x, y) => (x ?? 0) - (y ?? 0));
        expect(attempts).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      });

      it("never lets a reader that subscribes and then reads miss a change", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const readers: Promise<{ read: number; seen: Set<number>; unsubscribe: Unsubscribe }>[] = [];
        const startReader = async () => {
          const seen = new Set<number>();
          const unsubscribe = await b.subscribe(traceId, (s) => seen.add(s.version));
          const read = (await b.getState(traceId))?.version ?? 0;
          seen.add(read);
          return { read, seen, unsubscribe };
        };
        const writes = 20;
        for (let i = 0; i < writes; i += 1) {
          if (i % 4 === 0) readers.push(startReader());
          await a.updateState(traceId, bump);
        }
        const finalVersion = 1 + writes;
        for (const reader of await Promise.all(readers)) {
          await waitFor(() => reader.seen.has(finalVersion), `version ${finalVersion} at a reader`);
          for (let v = reader.read; v <= finalVersion; v += 1) expect(reader.seen.has(v)).toBe(true);
          await reader.unsubscribe();
        }
      });

      acrossInstances("delivers to a subscriber on another instance", async () => {
        const { a, second } = await open();
        if (!second) throw new Error("an engine shared by instances must give `second`");
        const { traceId } = await registered(a);
        const received: BindState[] = [];
        const unsubscribe = await second.subscribe(traceId, (s) => received.push(s));
        const next = await a.updateState(traceId, bump);
        await waitFor(() => received.length === 1, "the state on the second instance");
        expect(received[0]).toEqual(next);
        await unsubscribe();
      });

      it("stops delivering to a listener once it unsubscribes", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const gone: BindState[] = [];
        const kept: BindState[] = [];
        const unsubscribeGone = await b.subscribe(traceId, (s) => gone.push(s));
        const unsubscribeKept = await b.subscribe(traceId, (s) => kept.push(s));
        await unsubscribeGone();
        await unsubscribeGone(); // a second call is harmless

        await a.updateState(traceId, bump);
        await waitFor(() => kept.length === 1, "delivery to the remaining listener");
        expect(gone).toEqual([]);

        // With no listener left, a new subscription starts afresh and works.
        await unsubscribeKept();
        const again: BindState[] = [];
        const unsubscribeAgain = await b.subscribe(traceId, (s) => again.push(s));
        const next = await a.updateState(traceId, bump);
        await waitFor(() => again.length === 1, "delivery after re-subscribing");
        expect(again).toEqual([next]);
        expect(kept).toHaveLength(1);
        expect(gone).toEqual([]);
        await unsubscribeAgain();
      });
    });

    describe("poll lease", () => {
      it("is exclusive until released, and only its token renews or releases it", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        expect(await a.acquireLease(newTraceId(), 10_000)).toBeNull();

        const token = await a.acquireLease(traceId, 10_000);
        expect(token).toEqual(expect.any(String));
        expect(await a.acquireLease(traceId, 10_000)).toBeNull();
        expect(await b.acquireLease(traceId, 10_000)).toBeNull();

        expect(await b.renewLease(traceId, token!, 10_000)).toBe(true);
        expect(await a.renewLease(traceId, "not-the-token", 10_000)).toBe(false);
        await b.releaseLease(traceId, "not-the-token");
        expect(await b.acquireLease(traceId, 10_000)).toBeNull();

        await a.releaseLease(traceId, token!);
        expect(await a.renewLease(traceId, token!, 10_000)).toBe(false);
        const successor = await b.acquireLease(traceId, 10_000);
        expect(successor).toEqual(expect.any(String));
        expect(successor).not.toBe(token);
      });

      it("lapses after its ttl; the stale holder can neither renew nor release its successor's lease", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const stale = await a.acquireLease(traceId, 200);
        expect(stale).not.toBeNull();
        let successor: string | null = null;
        await waitFor(async () => {
          successor = await b.acquireLease(traceId, 30_000);
          return successor !== null;
        }, "the lease to lapse");
        expect(await a.renewLease(traceId, stale!, 30_000)).toBe(false);
        await a.releaseLease(traceId, stale!);
        expect(await a.acquireLease(traceId, 30_000)).toBeNull();
        expect(await b.renewLease(traceId, successor!, 30_000)).toBe(true);
      });

      it("announces its release to subscribers by re-publishing the current state", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const token = await a.acquireLease(traceId, 10_000);
        const seen: BindState[] = [];
        const unsubscribe = await b.subscribe(traceId, (s) => seen.push(s));
        await a.releaseLease(traceId, "not-the-token");
        await a.releaseLease(traceId, token!);
        await waitFor(() => seen.length > 0, "the release announcement");
        expect(seen).toEqual([state]);
        await unsubscribe();
      });

      acrossInstances("held via one instance blocks the other", async () => {
        const { a, second } = await open();
        if (!second) throw new Error("an engine shared by instances must give `second`");
        const { traceId } = await registered(a);
        const token = await a.acquireLease(traceId, 10_000);
        expect(token).not.toBeNull();
        expect(await second.acquireLease(traceId, 10_000)).toBeNull();
        expect(await second.beginCall(traceId, "not-the-token", Date.now(), 1_000)).toEqual({ kind: "lost" });
        await a.releaseLease(traceId, token!);
        expect(await second.acquireLease(traceId, 10_000)).not.toBeNull();
      });
    });

    describe("call gate", () => {
      it("lets the lease holder start calls at least minGap apart and refuses anyone else", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const t0 = Date.now();
        const token = await a.acquireLease(traceId, 30_000);
        expect(token).not.toBeNull();
        expect(await a.beginCall(traceId, token!, t0, 1_000)).toEqual({ kind: "go" });
        expect(await a.beginCall(traceId, token!, t0 + 400, 1_000)).toEqual({ kind: "wait", untilMs: t0 + 1_000 });
        expect(await b.beginCall(traceId, token!, t0 + 999, 1_000)).toEqual({ kind: "wait", untilMs: t0 + 1_000 });
        expect(await b.beginCall(traceId, token!, t0 + 1_000, 1_000)).toEqual({ kind: "go" });
        // The spacing counts from the last start, whoever recorded it.
        expect(await a.beginCall(traceId, token!, t0 + 1_500, 1_000)).toEqual({ kind: "wait", untilMs: t0 + 2_000 });
        expect(await a.beginCall(traceId, "not-the-token", t0 + 5_000, 1_000)).toEqual({ kind: "lost" });
        expect(await a.beginCall(newTraceId(), token!, t0 + 5_000, 1_000)).toEqual({ kind: "lost" });
        await a.releaseLease(traceId, token!);
        expect(await a.beginCall(traceId, token!, t0 + 5_000, 1_000)).toEqual({ kind: "lost" });

        // A new holder is still spaced from the previous holder's last call.
        const next = await b.acquireLease(traceId, 30_000);
        expect(await b.beginCall(traceId, next!, t0 + 2_500, 1_000)).toEqual({ kind: "go" });
        expect(await a.beginCall(traceId, next!, t0 + 2_600, 1_000)).toEqual({ kind: "wait", untilMs: t0 + 3_500 });
      });

      it("spaces the first call after a registration that carries the previous call's start", async () => {
        const { a } = await open();
        const reg = registration(newTraceId());
        const t0 = Date.now();
        const result = await a.register(reg, createInitialState(reg, t0, BIND_TIMEOUT_MS), t0);
        expect(result.kind).toBe("created");
        const token = await a.acquireLease(reg.trace_id, 30_000);
        expect(await a.beginCall(reg.trace_id, token!, t0 + 300, 1_000)).toEqual({ kind: "wait", untilMs: t0 + 1_000 });
        expect(await a.beginCall(reg.trace_id, token!, t0 + 1_000, 1_000)).toEqual({ kind: "go" });
      });
    });

    describe("upstream budget", () => {
      it("paces permits at the configured QPS of caller time, shared by every instance", async () => {
        const { a, b } = await open();
        const qps = CONTRACT_OPTIONS.upstreamQps;
        const t0 = Date.now();
        // Several callers at the same instant: one goes, the rest wait for the next token.
        const burst = await Promise.all([a.takeCallPermit(t0), b.takeCallPermit(t0), a.takeCallPermit(t0)]);
        expect(burst.filter((p) => p.kind === "go")).toHaveLength(1);

        const spanMs = 10_000;
        const granted: number[] = [t0];
        let t = t0;
        for (let i = 0; t < t0 + spanMs; i += 1) {
          const permit = await (i % 2 === 0 ? a : b).takeCallPermit(t);
          if (permit.kind === "go") {
            granted.push(t);
            t += 1;
          } else {
            expect(permit.untilMs).toBeGreaterThan(t);
            t = permit.untilMs;
          }
        }
        const expected = (spanMs / 1000) * qps;
        expect(granted.length).toBeGreaterThanOrEqual(expected - 1);
        expect(granted.length).toBeLessThanOrEqual(expected + 1);
        for (let i = 1; i < granted.length; i += 1) {
          expect(granted[i]! - granted[i - 1]!).toBeGreaterThanOrEqual(Math.floor(1000 / qps) - 1);
        }
      });

      it("holds every permit off until a ban ends, and a shorter ban never shortens it", async () => {
        const { a, b } = await open();
        const t0 = Date.now();
        await a.banUpstream(t0 + 3_000);
        expect(await b.takeCallPermit(t0 + 100)).toEqual({ kind: "wait", untilMs: t0 + 3_000 });
        await b.banUpstream(t0 + 1_000);
        expect(await a.takeCallPermit(t0 + 2_000)).toEqual({ kind: "wait", untilMs: t0 + 3_000 });
        expect(await b.takeCallPermit(t0 + 2_999)).toEqual({ kind: "wait", untilMs: t0 + 3_000 });
        expect(await a.takeCallPermit(t0 + 3_000)).toEqual({ kind: "go" });
        await b.banUpstream(t0 + 8_000);
        expect(await a.takeCallPermit(t0 + 4_000)).toEqual({ kind: "wait", untilMs: t0 + 8_000 });
      });
    });

    describe("registration quota", () => {
      it("grants perMinute registrations per key across instances, then says how long until the next", async () => {
        const { a, b } = await open();
        const [key, other] = [`quota-${randomUUID()}`, `quota-${randomUUID()}`];
        for (let i = 0; i < 3; i += 1)
          expect(await (i % 2 === 0 ? a : b).takeRegistration(key, 3)).toEqual({ kind: "go" });
        const refused = await a.takeRegistration(key, 3);
        // 3 a minute: the next token comes 20 s after the bucket ran dry.
        expect(refused.kind).toBe("wait");
        const retryAfterMs = refused.kind === "wait" ? refused.retryAfterMs : 0;
        expect(retryAfterMs).toBeGreaterThan(15_000);
        expect(retryAfterMs).toBeLessThanOrEqual(20_000);
        expect((await b.takeRegistration(key, 3)).kind).toBe("wait");
        // Another key has a quota of its own.
        expect(await b.takeRegistration(other, 3)).toEqual({ kind: "go" });
      });

      it("takes back a refunded registration, never above the quota", async () => {
        const { a, b } = await open();
        const key = `quota-${randomUUID()}`;
        await a.refundRegistration(key, 2);
        expect(await a.takeRegistration(key, 2)).toEqual({ kind: "go" });
        expect(await b.takeRegistration(key, 2)).toEqual({ kind: "go" });
        expect((await a.takeRegistration(key, 2)).kind).toBe("wait");
        await b.refundRegistration(key, 2);
        expect(await a.takeRegistration(key, 2)).toEqual({ kind: "go" });
        expect((await b.takeRegistration(key, 2)).kind).toBe("wait");
      });
    });

    describe("interest", () => {
      it("lasts until its time per instance, never shortens, and is seen by every instance", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const t0 = Date.now();
        expect(await a.hasInterest(traceId, t0)).toBe(false);
        const unknown = newTraceId();
        await a.setInterest(unknown, "i-1", t0 + 10_000);
        expect(await a.hasInterest(unknown, t0)).toBe(false);

        await a.setInterest(traceId, "i-1", t0 + 10_000);
        expect(await b.hasInterest(traceId, t0)).toBe(true);
        expect(await b.hasInterest(traceId, t0 + 9_999)).toBe(true);
        expect(await b.hasInterest(traceId, t0 + 10_000)).toBe(false);

        await b.setInterest(traceId, "i-1", t0 + 5_000);
        expect(await a.hasInterest(traceId, t0 + 9_999)).toBe(true);

        await b.setInterest(traceId, "i-2", t0 + 20_000);
        expect(await a.hasInterest(traceId, t0 + 15_000)).toBe(true);
        expect(await a.hasInterest(traceId, t0 + 20_000)).toBe(false);
      });

      it("expires with time", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        await a.setInterest(traceId, "i-1", Date.now() + 150);
        await waitFor(async () => !(await b.hasInterest(traceId, Date.now())), "the interest to expire");
        await b.setInterest(traceId, "i-2", Date.now() + 30_000);
        expect(await a.hasInterest(traceId, Date.now())).toBe(true);
      });
    });

    describe("retention", () => {
      it("forgets a trace after the retention and keeps a final state for at least the result ttl", async () => {
        const { a, b } = await open({ retentionMs: 400, resultTtlMs: 2_500, upstreamQps: 5 });
        const pending = await registered(a);
        const done = await registered(a);
        const final = await a.updateState(done.traceId, finish);
        expect(final?.final).toBe(true);

        await waitFor(
          async () =>
            (await b.getState(pending.traceId)) === null && (await b.getRegistration(pending.traceId)) === null,
          "the pending trace to be forgotten",
        );
        expect(await b.getState(done.traceId)).toEqual(final);
        expect(await b.getRegistration(done.traceId)).toEqual(done.reg);

        // Forgotten means gone: registering the same trace_id again starts afresh.
        const again = await a.register(pending.reg, createInitialState(pending.reg, Date.now(), BIND_TIMEOUT_MS));
        expect(again.kind).toBe("created");

        // Kept at least, not forever.
        await waitFor(async () => (await b.getState(done.traceId)) === null, "the final state to be forgotten");
      });
    });

    describe("readiness", () => {
      it("is ready while its store is reachable", async () => {
        const { a, b } = await open();
        expect(await a.isReady()).toBe(true);
        expect(await b.isReady()).toBe(true);
      });
    });
  });
}
