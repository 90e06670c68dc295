import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { BindRegistration, BindState } from "../../src/domain/bind.js";
import type { CheckbindOutcome } from "../../src/domain/outcome.js";
import type { CheckbindClient } from "../../src/top/client.js";
import { createBindService, type WatchConfig } from "../../src/watch/bind-service.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { upstreamInfo, WAITING } from "../support/outcomes.js";

const config: WatchConfig = {
  pollIntervalMs: 2000,
  pollLingerMs: 30_000,
  bindTimeoutMs: 180_000,
  resultTtlMs: 600_000,
};

const waiting = WAITING;
const bound: CheckbindOutcome = { kind: "bound", upstream: upstreamInfo({ message: "ok" }) };

function reg(traceId = "trace-1"): BindRegistration {
  return { trace_id: traceId, open_id: "open-123456", product_key: "pk", user_type: "ilop" };
}

/** A scripted client that records when each call started and how many overlap. */
function scriptedClient(answer: (traceId: string, n: number) => CheckbindOutcome, latencyMs = 50) {
  const calls: { traceId: string; at: number }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const client: CheckbindClient = {
    async checkbind(r, signal) {
      const n = calls.filter((c) => c.traceId === r.trace_id).length + 1;
      calls.push({ traceId: r.trace_id, at: Date.now() });
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, latencyMs);
          signal?.addEventListener("abort", () => {
            clearTimeout(t);
            reject(signal.reason);
          });
        });
        return answer(r.trace_id, n);
      } finally {
        inFlight -= 1;
      }
    },
  };
  return { client, calls, maxInFlight: () => maxInFlight };
}

function setup(
  answer: (traceId: string, n: number) => CheckbindOutcome,
  overrides: Partial<WatchConfig> = {},
  qps = 40,
) {
  const cfg = { ...config, ...overrides };
  const coordinator = createMemoryCoordinator({
    retentionMs: cfg.bindTimeoutMs + cfg.resultTtlMs,
    resultTtlMs: cfg.resultTtlMs,
    upstreamQps: qps,
  });
  const scripted = scriptedClient(answer);
  const service = createBindService({ coordinator, client: scripted.client, config: cfg, random: () => 0.5 });
  return { service, coordinator, ...scripted };
}

describe("bind service (in memory, fake timers)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: new Date("2026-11-29T10:00:00Z") });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("registers once: 201-like created, then existing, then conflict on other parameters", async () => {
    const { service } = setup(() => waiting);
    expect((await service.register(reg())).kind).toBe("created");
    expect((await service.register(reg())).kind).toBe("existing");
    expect((await service.register({ ...reg(), open_id: "someone-else" })).kind).toBe("conflict");
    await service.shutdown();
  });

  it("polls once per interval after POST, and stops after the linger", async () => {
    const { service, calls } = setup(() => waiting, { pollLingerMs: 10_000 });
    await service.register(reg());
    await vi.advanceTimersByTimeAsync(9_000);
    const during = calls.length;
    // ~one call per 2 s interval: at t=0, 2, 4, 6, 8
    expect(during).toBeGreaterThanOrEqual(4);
    expect(during).toBeLessThanOrEqual(6);
    await vi.advanceTimersByTimeAsync(20_000);
    const after = calls.length;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(calls.length).toBe(after);
    expect(service.stats()).toEqual({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 });
    await service.shutdown();
  });

  it("keeps consecutive calls at least 0.8 × interval apart, whatever the jitter", async () => {
    const coordinator = createMemoryCoordinator({ retentionMs: 1e6, resultTtlMs: 1e5, upstreamQps: 40 });
    const { client, calls } = scriptedClient(() => waiting);
    let r = 0;
    const random = () => [0, 0.999, 0.001, 0.5][r++ % 4] ?? 0;
    const service = createBindService({ coordinator, client, config, random });
    await service.register(reg());
    await vi.advanceTimersByTimeAsync(25_000);
    const gaps = calls.slice(1).map((c, i) => c.at - (calls[i]?.at ?? 0));
    expect(gaps.length).toBeGreaterThan(8);
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(0.8 * config.pollIntervalMs);
    await service.shutdown();
  });

  it("twenty watchers on one trace cost one call per interval and all get the final event", async () => {
    const { service, calls, maxInFlight } = setup((_t, n) => (n >= 5 ? bound : waiting));
    await service.register(reg());
    const seen: BindState[][] = [];
    for (let i = 0; i < 20; i++) {
      const mine: BindState[] = [];
      seen.push(mine);
      await service.attach("trace-1", 0, { send: (s) => mine.push(s) });
    }
    await vi.advanceTimersByTimeAsync(20_000);
    expect(calls.length).toBe(5);
    expect(maxInFlight()).toBe(1);
    for (const mine of seen) {
      expect(mine.at(-1)?.status).toBe("bound");
      expect(mine.filter((s) => s.final)).toHaveLength(1);
    }
    await service.shutdown();
  });

  it("versions grow only with status, error, ret_code or message", async () => {
    const answers: CheckbindOutcome[] = [
      waiting,
      { kind: "waiting", upstream: upstreamInfo({ request_id: "other", eagleeye_id: "other" }) },
      { kind: "transient", message: "HTTP 502", requestId: "" },
      waiting,
      { kind: "waiting", upstream: upstreamInfo({ ret_code: 7, message: "not yet" }) },
      bound,
    ];
    const { service } = setup((_t, n) => answers[n - 1] ?? bound);
    await service.register(reg());
    const versions: [number, string, number][] = [];
    await service.attach("trace-1", 0, { send: (s) => versions.push([s.version, s.status, s.attempts]) });
    await vi.advanceTimersByTimeAsync(40_000);
    // v1 registered; v2 first answer (ret_code 0); the same answer with new request and EagleEye ids: no version;
    // v3 error; v4 error cleared; v5 ret_code 7; v6 bound
    expect(versions.map(([v, s]) => [v, s])).toEqual([
      [1, "pending"],
      [2, "pending"],
      [3, "pending"],
      [4, "pending"],
      [5, "pending"],
      [6, "bound"],
    ]);
    expect(versions.at(-1)?.[2]).toBe(6);
    await service.shutdown();
  });

  it("retries transient trouble with backoff starting at the interval and shows it in error", async () => {
    const { service, calls } = setup((_t, n) =>
      n <= 4 ? { kind: "transient", message: "HTTP 503", requestId: "" } : bound,
    );
    await service.register(reg());
    const states: BindState[] = [];
    await service.attach("trace-1", 0, { send: (s) => states.push(s) });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(states.at(-1)?.status).toBe("bound");
    expect(states.some((s) => s.error?.code === "upstream_unavailable")).toBe(true);
    expect(states.at(-1)?.error).toBeNull();
    const gaps = calls.slice(1).map((c, i) => c.at - (calls[i]?.at ?? 0));
    // p-retry with randomize: delay n is in [interval·2^(n-1), 2·interval·2^(n-1)]
    expect(gaps[0]).toBeGreaterThanOrEqual(2000);
    expect(gaps[1]).toBeGreaterThanOrEqual(4000);
    expect(gaps[2]).toBeGreaterThanOrEqual(8000);
    await service.shutdown();
  });

  it("honours a rate-limit ban for every trace of the instance", async () => {
    let banned = false;
    const { service, calls } = setup((traceId) => {
      if (traceId === "a" && !banned) {
        banned = true;
        return { kind: "rate_limited", banMs: 12_000, message: "App Call Limited", requestId: "" };
      }
      return waiting;
    });
    await service.register(reg("a"));
    await vi.advanceTimersByTimeAsync(100);
    const banStart = Date.now();
    await service.register(reg("b"));
    await vi.advanceTimersByTimeAsync(11_000);
    expect(calls.filter((c) => c.at > banStart)).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(calls.filter((c) => c.traceId === "a" && c.at > banStart).length).toBeGreaterThan(0);
    expect(calls.filter((c) => c.traceId === "b").length).toBeGreaterThan(0);
    await service.shutdown();
  });

  it("spreads calls to stay under UPSTREAM_QPS: waiting polls are delayed, not dropped", async () => {
    const { service, calls } = setup(() => waiting, {}, 5);
    for (let i = 0; i < 20; i++) await service.register(reg(`t${i}`));
    await vi.advanceTimersByTimeAsync(10_000);
    // 20 traces want 10 calls/s; the budget allows 5/s.
    for (let s = 1; s < 9; s++) {
      const inSecond = calls.filter(
        (c) => c.at >= Date.now() - 10_000 + s * 1000 && c.at < Date.now() - 10_000 + (s + 1) * 1000,
      );
      expect(inSecond.length).toBeLessThanOrEqual(6);
    }
    const traces = new Set(calls.map((c) => c.traceId));
    expect(traces.size).toBe(20);
    await service.shutdown();
  });

  it("past UPSTREAM_QPS, a bind cancelled while it waits for its first permit leaves the line: the permit goes to the next bind", async () => {
    const { service, calls } = setup(() => waiting, {}, 1);
    for (const id of ["a", "b", "c"]) await service.register(reg(id));
    await vi.advanceTimersByTimeAsync(100);
    expect(calls.map((c) => c.traceId)).toEqual(["a"]);
    expect(service.stats()).toMatchObject({ drivers: 3, leases: 1, waitingForBudget: 2 });

    await service.cancel("b");
    expect(service.stats()).toMatchObject({ drivers: 2, waitingForBudget: 1 });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls.map((c) => c.traceId)).toEqual(["a", "c"]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls.some((c) => c.traceId === "b")).toBe(false);
    await service.shutdown();
    expect(service.stats()).toMatchObject({ drivers: 0, waitingForBudget: 0 });
  });

  it("past UPSTREAM_QPS, a registration waiting for its first permit holds no channel; its poll subscribes and sees what changed meanwhile", async () => {
    const { service, coordinator, calls } = setup(() => waiting, {}, 1);
    const subscribed: string[] = [];
    const subscribe = coordinator.subscribe.bind(coordinator);
    coordinator.subscribe = (traceId, listener) => {
      subscribed.push(traceId);
      return subscribe(traceId, listener);
    };
    // Another instance on the same store, which cancels "b" while it waits here.
    const other = createBindService({ coordinator, client: scriptedClient(() => waiting).client, config });
    for (const id of ["a", "b", "c"]) await service.register(reg(id));
    await vi.advanceTimersByTimeAsync(100);
    expect(subscribed).toEqual(["a"]);

    expect((await other.cancel("b"))?.status).toBe("cancelled");
    await vi.advanceTimersByTimeAsync(1_000);
    // "b" came up, subscribed, read its final and handed its permit on to "c".
    expect(subscribed).toEqual(["a", "b", "c"]);
    expect(calls.map((c) => c.traceId)).toEqual(["a", "c"]);
    expect(service.stats()).toMatchObject({ drivers: 2 });
    await service.shutdown();
    await other.shutdown();
  });

  it("past UPSTREAM_QPS, a poll waiting its turn lets its lease go instead of renewing it, and calls with the lease it takes again", async () => {
    const { service, coordinator, calls, maxInFlight } = setup(() => waiting, {}, 5);
    const counts = { renew: 0, release: 0, acquire: 0 };
    const renewLease = coordinator.renewLease.bind(coordinator);
    const releaseLease = coordinator.releaseLease.bind(coordinator);
    const acquireLease = coordinator.acquireLease.bind(coordinator);
    coordinator.renewLease = (...args) => {
      counts.renew += 1;
      return renewLease(...args);
    };
    coordinator.releaseLease = (...args) => {
      counts.release += 1;
      return releaseLease(...args);
    };
    coordinator.acquireLease = (...args) => {
      counts.acquire += 1;
      return acquireLease(...args);
    };
    for (let i = 0; i < 20; i++) await service.register(reg(`t${i}`));
    await vi.advanceTimersByTimeAsync(20_000);
    // 20 traces, a call for each every 4 s at 5/s: each waits longer than a lease for its turn.
    expect(calls.length).toBeGreaterThanOrEqual(95);
    expect(calls.length).toBeLessThanOrEqual(101);
    expect(counts.renew).toBe(0);
    // Each wait after a call let the lease go once, and the next call took it again.
    expect(counts.release).toBeGreaterThan(calls.length - 20 - 5);
    expect(counts.acquire).toBeGreaterThanOrEqual(calls.length);
    expect(maxInFlight()).toBeLessThanOrEqual(5);
    await service.shutdown();
  });

  it("past UPSTREAM_QPS, two instances watching the same traces share the budget in single flight", async () => {
    const { service: first, coordinator, calls } = setup(() => waiting, {}, 5);
    // A second instance on the same store, with its own client.
    const both = scriptedClient(() => waiting);
    const shared = createBindService({ coordinator, client: both.client, config, random: () => 0.5 });
    const traceIds = Array.from({ length: 20 }, (_, i) => `shared-${i}`);
    for (const id of traceIds) await first.register(reg(id));
    for (const id of traceIds) {
      await first.attach(id, 0, { send: () => {} });
      await shared.attach(id, 0, { send: () => {} });
    }
    await vi.advanceTimersByTimeAsync(20_000);
    const all = [...calls, ...both.calls].sort((a, b) => a.at - b.at);
    // The deployment's budget (5/s) holds across both instances…
    for (let s = 1; s < 19; s++) {
      const start = all[0] ? all[0].at + s * 1000 : 0;
      expect(all.filter((c) => c.at >= start && c.at < start + 1000).length).toBeLessThanOrEqual(6);
    }
    // …and is used in full (a call every 4 s for each trace)…
    expect(all.length).toBeGreaterThanOrEqual(95);
    // …every trace is polled, and never by both instances at once nor closer than 0.8 × interval.
    expect(new Set(all.map((c) => c.traceId)).size).toBe(20);
    for (const id of traceIds) {
      const starts = all.filter((c) => c.traceId === id).map((c) => c.at);
      for (let i = 1; i < starts.length; i++) {
        expect((starts[i] ?? 0) - (starts[i - 1] ?? 0)).toBeGreaterThanOrEqual(0.8 * config.pollIntervalMs);
      }
    }
    await first.shutdown();
    await shared.shutdown();
  });

  it("ends an attempt as expired at its deadline and tells every watcher", async () => {
    const { service, calls } = setup(() => waiting, { bindTimeoutMs: 10_000 });
    await service.register(reg());
    const states: BindState[] = [];
    await service.attach("trace-1", 0, { send: (s) => states.push(s) });
    await vi.advanceTimersByTimeAsync(15_000);
    expect(states.at(-1)?.status).toBe("expired");
    expect(states.at(-1)?.final).toBe(true);
    const n = calls.length;
    await vi.advanceTimersByTimeAsync(15_000);
    expect(calls.length).toBe(n);
    expect(service.stats().drivers).toBe(0);
    await service.shutdown();
  });

  it("expires on read a trace that nobody polled past its deadline", async () => {
    const { service } = setup(() => waiting, { bindTimeoutMs: 10_000, pollLingerMs: 1_000 });
    await service.register(reg());
    await vi.advanceTimersByTimeAsync(12_000);
    expect((await service.getState("trace-1"))?.status).toBe("expired");
    await service.shutdown();
  });

  it("a watcher that arrives later restarts polling; one after the final gets it at once without a call", async () => {
    const { service, calls } = setup((_t, n) => (n >= 6 ? bound : waiting), { pollLingerMs: 3_000 });
    await service.register(reg());
    await vi.advanceTimersByTimeAsync(10_000);
    const idle = calls.length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls.length).toBe(idle);
    const states: BindState[] = [];
    await service.attach("trace-1", 0, { send: (s) => states.push(s) });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(states.at(-1)?.status).toBe("bound");
    const total = calls.length;
    const late: BindState[] = [];
    const attachment = await service.attach("trace-1", 0, { send: (s) => late.push(s) });
    expect(attachment?.state.status).toBe("bound");
    expect(late.map((s) => s.status)).toEqual(["bound"]);
    expect(calls.length).toBe(total);
    await service.shutdown();
  });

  it("cancel publishes a final cancelled event and stops polling", async () => {
    const { service, calls } = setup(() => waiting);
    await service.register(reg());
    const states: BindState[] = [];
    await service.attach("trace-1", 0, { send: (s) => states.push(s) });
    await vi.advanceTimersByTimeAsync(5_000);
    const cancelled = await service.cancel("trace-1");
    expect(cancelled?.status).toBe("cancelled");
    expect(states.at(-1)?.status).toBe("cancelled");
    const n = calls.length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls.length).toBe(n);
    expect(await service.cancel("nope")).toBeNull();
    await service.shutdown();
  });

  it("long-poll answers at once when newer, waits for a change otherwise, and times out with the state", async () => {
    const { service } = setup((_t, n) => (n >= 3 ? bound : waiting));
    await service.register(reg());
    expect((await service.waitForChange("trace-1", 0, 30_000))?.version).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    // the first answer (ret_code 0) is version 2; the next change is bound
    const changed = service.waitForChange("trace-1", 2, 30_000);
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await changed)?.status).toBe("bound");
    expect(await service.waitForChange("unknown", 0, 1000)).toBeNull();
    await service.shutdown();
  });

  it("a long-poll that times out answers the unchanged state", async () => {
    const { service } = setup(() => waiting);
    await service.register(reg());
    await vi.advanceTimersByTimeAsync(100);
    const pending = service.waitForChange("trace-1", 2, 5_000);
    await vi.advanceTimersByTimeAsync(5_000);
    expect((await pending)?.version).toBe(2);
    expect(service.stats().watchers).toBe(0);
    await service.shutdown();
  });

  it("detaching every watcher leaves no watcher behind", async () => {
    const { service } = setup(() => waiting, { pollLingerMs: 2_000 });
    await service.register(reg());
    const attachments = [];
    for (let i = 0; i < 100; i++) attachments.push(await service.attach("trace-1", 0, { send: () => {} }));
    expect(service.stats().watchers).toBe(100);
    for (const a of attachments) a?.detach();
    expect(service.stats().watchers).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(service.stats()).toEqual({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 });
    expect(vi.getTimerCount()).toBe(1); // the coordinator's sweeper
    await service.shutdown();
  });

  it("re-asserts a trace the store lost (a Redis restarted empty) and still delivers the final event", async () => {
    const make = () => createMemoryCoordinator({ retentionMs: 1e6, resultTtlMs: 1e5, upstreamQps: 40 });
    let store = make();
    // Every call goes to whichever store is current, as a Redis client does across a restart.
    const coordinator = new Proxy({} as Coordinator, {
      get:
        (_t, key: keyof Coordinator) =>
        (...args: never[]) =>
          (store[key] as (...a: never[]) => unknown)(...args),
    });
    const { client, calls } = scriptedClient((_t, n) => (n >= 6 ? bound : waiting));
    const service = createBindService({ coordinator, client, config, random: () => 0.5 });
    await service.register(reg());
    const states: BindState[] = [];
    await service.attach("trace-1", 0, { send: (s) => states.push(s) });
    await vi.advanceTimersByTimeAsync(5_000);
    store = make();
    expect(await coordinator.getState("trace-1")).toBeNull();
    await vi.advanceTimersByTimeAsync(15_000);
    expect(calls.length).toBeGreaterThanOrEqual(6);
    expect(states.at(-1)?.status).toBe("bound");
    expect((await coordinator.getState("trace-1"))?.status).toBe("bound");
    await service.shutdown();
  });
});
