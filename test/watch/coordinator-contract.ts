import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import type { BindRegistration, BindState } from "../../src/domain/bind.js";
import { type DeliveryRecord, newDeliveryRecord } from "../../src/domain/webhook.js";
import type { Coordinator, LeaseTake, TraceEvent, Unsubscribe } from "../../src/watch/coordinator.js";

/**
 * Waits at least `ms` on the wall clock the stores read. A Node timer may fire up to a
 * millisecond early against it (libuv schedules from the loop's cached time), which would
 * make a "wait N ms" answer look wrong when it is the wait that was short.
 */
async function waitAtLeast(ms: number): Promise<void> {
  const until = Date.now() + ms;
  await delay(ms);
  while (Date.now() < until) await delay(1);
}

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

/** The states among a listener's events. */
function statesOf(events: readonly TraceEvent[]): BindState[] {
  return events.flatMap((e) => (e.kind === "state" ? [e.state] : []));
}

function tokenOf(take: LeaseTake): string {
  if (take.kind !== "acquired") throw new Error(`expected the lease, got ${JSON.stringify(take)}`);
  return take.token;
}

/**
 * The behaviour every Coordinator must have (in-memory, Redis standalone, Sentinel and
 * Cluster, Durable Object). `makeCoordinator` is called once or more per test with the
 * options to use, and must give a fresh store (e.g. a fresh key prefix). Times are the
 * store's: the suite only ever hands durations and reads what the store says.
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
      const result = await c.register(reg, BIND_TIMEOUT_MS);
      if (result.kind === "conflict") throw new Error("unexpected conflict");
      return { reg, traceId: reg.trace_id, state: result.state };
    }

    afterEach(async () => {
      for (const subject of opened.splice(0)) await subject.cleanup();
    });

    describe("registration", () => {
      it("creates a trace on the store's clock, answers existing for the same parameters in any key order, conflict otherwise", async () => {
        const { a, b } = await open();
        const reg = registration(newTraceId(), { authCode: "x", ssProductKey: "y" });
        const created = await a.register(reg, BIND_TIMEOUT_MS);
        expect(created.kind).toBe("created");
        const initial = created.kind === "created" ? created.state : null;
        expect(initial).toMatchObject({ trace_id: reg.trace_id, status: "pending", final: false, version: 1 });
        // The store's clock is this machine's here: created_at is now, expires_at the timeout later.
        const createdAt = Date.parse(initial?.created_at ?? "");
        expect(Math.abs(createdAt - Date.now())).toBeLessThan(5_000);
        expect(Date.parse(initial?.expires_at ?? "") - createdAt).toBe(BIND_TIMEOUT_MS);
        expect(initial?.updated_at).toBe(initial?.created_at);
        expect(Math.abs(a.now() - Date.now())).toBeLessThan(5_000);

        const reordered: BindRegistration = {
          params: { ssProductKey: "y", authCode: "x" },
          device_name: reg.device_name,
          user_type: reg.user_type,
          product_key: reg.product_key,
          open_id: reg.open_id,
          trace_id: reg.trace_id,
        };
        expect(await b.register(reordered, BIND_TIMEOUT_MS)).toEqual({ kind: "existing", state: initial });
        expect(await b.register({ ...reg, params: { authCode: "other", ssProductKey: "y" } }, BIND_TIMEOUT_MS)).toEqual(
          { kind: "conflict" },
        );
        expect(await a.register({ ...reg, iot_id: "iot-9" }, BIND_TIMEOUT_MS)).toEqual({ kind: "conflict" });
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

      it("re-asserts a trace it does not know, and leaves one it knows as it is", async () => {
        const { a, b } = await open();
        const { reg, state } = await registered(a);
        const other = registration(newTraceId());
        const seen = { ...state, trace_id: other.trace_id, version: 4, attempts: 9 };
        expect(await b.reassert(other, seen, null)).toEqual(seen);
        expect(await a.getState(other.trace_id)).toEqual(seen);
        expect(await a.getRegistration(other.trace_id)).toEqual(other);
        expect(await a.reassert(reg, { ...state, version: 7 }, null)).toEqual(state);
      });
    });

    describe("state updates and fan-out", () => {
      it("answers null for an unknown trace", async () => {
        const { a } = await open();
        expect(await a.updateState(newTraceId(), bump)).toBeNull();
      });

      it("publishes every write, resolves to the stored state, and skips a mutation that changes nothing", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const received: TraceEvent[] = [];
        const unsubscribe = await b.subscribe(traceId, (e) => received.push(e));

        const touched = await a.updateState(traceId, touch);
        expect(touched).toEqual({ ...state, attempts: 1 });
        expect(await b.getState(traceId)).toEqual(touched);

        const unchanged = await a.updateState(traceId, (s) => s);
        expect(unchanged).toEqual(touched);

        const bumped = await a.updateState(traceId, bump);
        expect(bumped?.version).toBe(2);
        expect(await b.getState(traceId)).toEqual(bumped);
        // A write with no new version is published too: it shows the poller is alive.
        await waitFor(() => statesOf(received).length >= 2, "the published states");
        expect(statesOf(received)).toEqual([touched, bumped]);
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

      it("applies an update with notBeforeMs only once the store's clock reached it", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const later = await a.updateState(traceId, bump, { notBeforeMs: a.now() + 60_000 });
        expect(later).toEqual(state);
        expect(await b.getState(traceId)).toEqual(state);
        const due = await b.updateState(traceId, bump, { notBeforeMs: b.now() - 1_000 });
        expect(due?.version).toBe(2);
      });

      it("never lets a reader that subscribes and then reads miss a change", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const readers: Promise<{ read: number; seen: Set<number>; unsubscribe: Unsubscribe }>[] = [];
        const startReader = async () => {
          const seen = new Set<number>();
          const unsubscribe = await b.subscribe(traceId, (e) => {
            if (e.kind === "state") seen.add(e.state.version);
          });
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
        const received: TraceEvent[] = [];
        const unsubscribe = await second.subscribe(traceId, (e) => received.push(e));
        const next = await a.updateState(traceId, bump);
        await waitFor(() => received.length === 1, "the state on the second instance");
        expect(received).toEqual([{ kind: "state", state: next }]);
        await unsubscribe();
      });

      it("stops delivering to a listener once it unsubscribes", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const gone: TraceEvent[] = [];
        const kept: TraceEvent[] = [];
        const unsubscribeGone = await b.subscribe(traceId, (e) => gone.push(e));
        const unsubscribeKept = await b.subscribe(traceId, (e) => kept.push(e));
        await unsubscribeGone();
        await unsubscribeGone(); // a second call is harmless

        await a.updateState(traceId, bump);
        await waitFor(() => kept.length === 1, "delivery to the remaining listener");
        expect(gone).toEqual([]);

        // With no listener left, a new subscription starts afresh and works.
        await unsubscribeKept();
        const again: TraceEvent[] = [];
        const unsubscribeAgain = await b.subscribe(traceId, (e) => again.push(e));
        const next = await a.updateState(traceId, bump);
        await waitFor(() => again.length === 1, "delivery after re-subscribing");
        expect(statesOf(again)).toEqual([next]);
        expect(kept).toHaveLength(1);
        expect(gone).toEqual([]);
        await unsubscribeAgain();
      });
    });

    describe("poll lease", () => {
      it("is exclusive until released, says how long it is held, and only its token renews or releases it", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        expect(await a.acquireLease(newTraceId(), 10_000)).toEqual({ kind: "missing" });

        const token = tokenOf(await a.acquireLease(traceId, 10_000));
        for (const other of [await a.acquireLease(traceId, 10_000), await b.acquireLease(traceId, 10_000)]) {
          expect(other.kind).toBe("held");
          const ms = other.kind === "held" ? other.ms : 0;
          expect(ms).toBeGreaterThan(5_000);
          expect(ms).toBeLessThanOrEqual(10_000);
        }

        expect(await b.renewLease(traceId, token, 10_000)).toBe(true);
        expect(await a.renewLease(traceId, "not-the-token", 10_000)).toBe(false);
        await b.releaseLease(traceId, "not-the-token", 1_000);
        expect((await b.acquireLease(traceId, 10_000)).kind).toBe("held");

        await a.releaseLease(traceId, token, 1_000);
        expect(await a.renewLease(traceId, token, 10_000)).toBe(false);
        const successor = tokenOf(await b.acquireLease(traceId, 10_000));
        expect(successor).not.toBe(token);
      });

      it("lapses after its time; the stale holder can neither renew nor release its successor's lease", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const stale = tokenOf(await a.acquireLease(traceId, 200));
        let successor: string | null = null;
        await waitFor(async () => {
          const take = await b.acquireLease(traceId, 30_000);
          successor = take.kind === "acquired" ? take.token : null;
          return successor !== null;
        }, "the lease to lapse");
        expect(await a.renewLease(traceId, stale, 30_000)).toBe(false);
        await a.releaseLease(traceId, stale, 1_000);
        expect((await a.acquireLease(traceId, 30_000)).kind).toBe("held");
        expect(await b.renewLease(traceId, successor ?? "", 30_000)).toBe(true);
      });

      it("announces a renewal (the holder is alive) and a release to subscribers", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        const token = tokenOf(await a.acquireLease(traceId, 10_000));
        const seen: TraceEvent[] = [];
        const unsubscribe = await b.subscribe(traceId, (e) => seen.push(e));
        expect(await a.renewLease(traceId, token, 10_000)).toBe(true);
        await a.releaseLease(traceId, "not-the-token", 1_000);
        await a.releaseLease(traceId, token, 1_000);
        await waitFor(() => seen.length >= 2, "the announcements");
        expect(seen).toEqual([{ kind: "alive" }, { kind: "released" }]);
        await unsubscribe();
      });

      acrossInstances("held via one instance blocks the other", async () => {
        const { a, second } = await open();
        if (!second) throw new Error("an engine shared by instances must give `second`");
        const { traceId, state } = await registered(a);
        const token = tokenOf(await a.acquireLease(traceId, 10_000));
        expect((await second.acquireLease(traceId, 10_000)).kind).toBe("held");
        const call = { minGapMs: 1_000, leaseMs: 10_000, deadlineMs: Date.parse(state.expires_at) };
        expect(await second.beginCall(traceId, "not-the-token", call)).toEqual({ kind: "lost" });
        await a.releaseLease(traceId, token, 1_000);
        expect((await second.acquireLease(traceId, 10_000)).kind).toBe("acquired");
      });
    });

    describe("call gate", () => {
      it("lets the lease holder start calls at least minGap apart, from any instance, and refuses anyone else", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const call = { minGapMs: 400, leaseMs: 30_000, deadlineMs: Date.parse(state.expires_at) };
        const token = tokenOf(await a.acquireLease(traceId, 30_000));
        expect(await a.beginCall(traceId, token, call)).toEqual({ kind: "go" });
        const held = await b.beginCall(traceId, token, call);
        expect(held.kind).toBe("wait");
        const ms = held.kind === "wait" ? held.ms : 0;
        expect(ms).toBeGreaterThan(0);
        expect(ms).toBeLessThanOrEqual(400);
        await waitAtLeast(ms);
        expect(await b.beginCall(traceId, token, call)).toEqual({ kind: "go" });
        expect((await a.beginCall(traceId, token, call)).kind).toBe("wait");
        expect(await a.beginCall(traceId, "not-the-token", call)).toEqual({ kind: "lost" });
        expect(await a.beginCall(newTraceId(), token, call)).toEqual({ kind: "lost" });
        await a.releaseLease(traceId, token, call.minGapMs);
        expect(await a.beginCall(traceId, token, call)).toEqual({ kind: "lost" });

        // A new holder is still spaced from the previous holder's last call.
        const next = tokenOf(await b.acquireLease(traceId, 30_000));
        const spaced = await b.beginCall(traceId, next, call);
        expect(spaced.kind).toBe("wait");
        await waitAtLeast(spaced.kind === "wait" ? spaced.ms : 0);
        expect(await a.beginCall(traceId, next, call)).toEqual({ kind: "go" });
      });

      it("extends the lease when a call goes", async () => {
        const { a, b } = await open();
        const { traceId, state } = await registered(a);
        const token = tokenOf(await a.acquireLease(traceId, 300));
        expect(
          await a.beginCall(traceId, token, {
            minGapMs: 100,
            leaseMs: 30_000,
            deadlineMs: Date.parse(state.expires_at),
          }),
        ).toEqual({ kind: "go" });
        await delay(500);
        const take = await b.acquireLease(traceId, 1_000);
        expect(take.kind).toBe("held");
        expect(take.kind === "held" ? take.ms : 0).toBeGreaterThan(25_000);
      });

      it("says expired once the store's clock passed the deadline", async () => {
        const { a } = await open();
        const { traceId } = await registered(a);
        const token = tokenOf(await a.acquireLease(traceId, 30_000));
        const call = { minGapMs: 100, leaseMs: 30_000, deadlineMs: a.now() - 1 };
        expect(await a.beginCall(traceId, token, call)).toEqual({ kind: "expired" });
      });

      it("spaces the first call after a re-assertion from the call seen before the loss", async () => {
        const { a } = await open();
        const reg = registration(newTraceId());
        // A state as an instance held it before the store lost its trace.
        const { state } = await registered(a);
        const seen = { ...state, trace_id: reg.trace_id };
        await a.reassert(reg, seen, 100);
        const token = tokenOf(await a.acquireLease(reg.trace_id, 30_000));
        const call = { minGapMs: 1_000, leaseMs: 30_000, deadlineMs: Date.parse(seen.expires_at) };
        const gate = await a.beginCall(reg.trace_id, token, call);
        expect(gate.kind).toBe("wait");
        const ms = gate.kind === "wait" ? gate.ms : 0;
        expect(ms).toBeGreaterThan(500);
        expect(ms).toBeLessThanOrEqual(900);
      });
    });

    describe("upstream budget", () => {
      it("paces permits at the configured QPS, shared by every instance", async () => {
        const { a, b } = await open();
        const qps = CONTRACT_OPTIONS.upstreamQps;
        // Several callers at once: one goes, the others wait for the next slot.
        const burst = await Promise.all([a.takeCallPermit(), b.takeCallPermit(), a.takeCallPermit()]);
        expect(burst.filter((p) => p.kind === "go")).toHaveLength(1);
        for (const p of burst) if (p.kind === "wait") expect(p.ms).toBeLessThanOrEqual(Math.ceil(1000 / qps));

        const spanMs = 1_500;
        const started = Date.now();
        let granted = 0;
        for (let i = 0; Date.now() - started < spanMs; i += 1) {
          const permit = await (i % 2 === 0 ? a : b).takeCallPermit();
          if (permit.kind === "go") granted += 1;
          else await delay(permit.ms);
        }
        const expected = (spanMs / 1000) * qps;
        expect(granted).toBeGreaterThanOrEqual(expected - 2);
        expect(granted).toBeLessThanOrEqual(expected + 1);
      });

      it("holds every permit off for a ban, and a shorter ban never shortens it", async () => {
        const { a, b } = await open();
        await a.banUpstream(1_500);
        await b.banUpstream(100);
        const during = await b.takeCallPermit();
        expect(during.kind).toBe("wait");
        const ms = during.kind === "wait" ? during.ms : 0;
        expect(ms).toBeGreaterThan(1_000);
        expect(ms).toBeLessThanOrEqual(1_500);
        await waitAtLeast(ms);
        expect(await a.takeCallPermit()).toEqual({ kind: "go" });
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

    describe("webhook deliveries", () => {
      const record = (state: BindState, destinations: string[]): DeliveryRecord =>
        newDeliveryRecord({
          id: `msg_${state.trace_id}`,
          state,
          body: JSON.stringify(state),
          destinations,
          nowMs: Date.now(),
        });

      it("are written with the final they belong to, once, and claimed one attempt at a time", async () => {
        const { a, b } = await open();
        const { traceId } = await registered(a);
        await a.deliveries.track(traceId, Date.now() + 60_000);
        expect(await b.deliveries.due(Date.now(), 10)).not.toContain(traceId);
        // Not final yet: the trace is open; polled once somebody holds its lease.
        expect(await b.deliveries.claim(traceId, Date.now(), 5_000)).toEqual({ kind: "open", polled: false });
        const lease = tokenOf(await a.acquireLease(traceId, 10_000));
        expect(await b.deliveries.claim(traceId, Date.now(), 5_000)).toEqual({ kind: "open", polled: true });
        await a.releaseLease(traceId, lease, 1_000);

        const deliveries = (final: BindState) => record(final, ["http://a.test/h", "http://b.test/h"]);
        const final = await a.updateState(traceId, finish, { deliveries });
        await b.updateState(traceId, (s) => s, { deliveries });
        await a.deliveries.schedule(traceId, Date.now());
        expect(await b.deliveries.due(Date.now(), 10)).toContain(traceId);

        const first = await b.deliveries.claim(traceId, Date.now(), 5_000);
        if (first.kind !== "deliver") throw new Error(`expected an attempt, got ${first.kind}`);
        expect(first.record).toMatchObject({ id: `msg_${traceId}`, body: JSON.stringify(final), traceId });
        expect(first.record.destinations).toHaveLength(2);
        expect(first.destination).toBe(0);
        // One attempt in flight at a time, whoever asks.
        expect((await a.deliveries.claim(traceId, Date.now(), 5_000)).kind).toBe("later");
        const settled = await b.deliveries.settle(traceId, first.token, first.record.id, 0, { kind: "delivered" });
        expect(settled?.destinations[0]).toMatchObject({ outcome: "delivered", attempts: 1 });
        // A settle under a lost claim changes nothing.
        expect(
          await a.deliveries.settle(traceId, "not-the-token", first.record.id, 1, { kind: "delivered" }),
        ).toBeNull();

        const second = await a.deliveries.claim(traceId, Date.now(), 5_000);
        if (second.kind !== "deliver") throw new Error(`expected the second destination, got ${second.kind}`);
        expect(second.destination).toBe(1);
        const retryAtMs = Date.now() + 60_000;
        await a.deliveries.settle(traceId, second.token, second.record.id, 1, {
          kind: "failed",
          retryAtMs,
          error: "HTTP 500",
        });
        expect(await b.deliveries.claim(traceId, Date.now(), 5_000)).toEqual({ kind: "later", atMs: retryAtMs });
        expect((await b.deliveries.pendingRecords()).map((r) => r.id)).toEqual([`msg_${traceId}`]);

        // Due at that time; a claim handed back is claimable at once.
        const again = await b.deliveries.claim(traceId, retryAtMs, 5_000);
        if (again.kind !== "deliver") throw new Error(`expected the retry, got ${again.kind}`);
        expect(again.record.destinations[1]).toMatchObject({ attempts: 1, lastError: "HTTP 500" });
        await b.deliveries.release(traceId, again.token);
        const last = await a.deliveries.claim(traceId, retryAtMs, 5_000);
        if (last.kind !== "deliver") throw new Error(`expected the retry again, got ${last.kind}`);
        await a.deliveries.settle(traceId, last.token, last.record.id, 1, { kind: "gone" });
        expect(await b.deliveries.claim(traceId, retryAtMs, 5_000)).toEqual({ kind: "done" });
        expect(await b.deliveries.pendingRecords()).toEqual([]);
        await b.deliveries.schedule(traceId, null);
        expect(await a.deliveries.due(Number.MAX_SAFE_INTEGER, 10)).not.toContain(traceId);
      });

      it("are nothing for a final without destinations, and for a forgotten trace", async () => {
        const { a } = await open();
        const { traceId } = await registered(a);
        await a.updateState(traceId, finish);
        expect(await a.deliveries.claim(traceId, Date.now(), 5_000)).toEqual({ kind: "done" });
        expect(await a.deliveries.claim(newTraceId(), Date.now(), 5_000)).toEqual({ kind: "done" });
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
        const again = await a.register(pending.reg, BIND_TIMEOUT_MS);
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
