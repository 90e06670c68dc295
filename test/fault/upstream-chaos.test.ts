import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { parseConfig } from "../../src/runtime/config.js";
import { createLogger } from "../../src/runtime/logger.js";
import { type RunningServer, startNodeServer } from "../../src/runtime/node-server.js";
import { createTopSimulator, type TopSimulator } from "../../src/sim/gateway.js";
import type { ScriptStep, TraceScript } from "../../src/sim/scripts.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";
import { openSse, type SseReader } from "../support/sse-reader.js";

/*
 * Upstream chaos: ~40 traces, each scripted at the TOP gateway double with a seeded
 * random mix of 5xx answers, timeouts (answers held past TOP_TIMEOUT_MS), garbage
 * bodies, isp errors, non-terminal result=false answers and app-wide rate-limit bans,
 * each ending in a known final outcome. Every trace is watched over SSE.
 *
 * The gateway double is the product's own simulator, served here behind a thin
 * recording wrapper so the test sees every request as it reaches the gateway —
 * including the ones the simulator turns away during a ban, which its per-trace
 * call log does not keep — with arrival and answer times. bindwatch is started
 * with TOP credentials pointing at it, so signing and parsing run as in production,
 * and with its in-memory coordinator wrapped to note when bindwatch learns of a ban
 * (`banUpstream`) and when it lets each call go (`beginCall` answering `go`).
 *
 * A ban answer leaves the gateway a moment before bindwatch reads it, and a call of
 * another trace already on the wire in that moment cannot be recalled by anyone: the
 * simulator turns such a call away as `banned`. So the rule checked is the one a client
 * can keep: once bindwatch has read a ban, no call leaves it until the ban is over, and
 * every call that reached the gateway during a ban had left bindwatch before that.
 *
 * Reproduce a run with FAULT_SEED=<seed printed below> npx vitest run test/fault/upstream-chaos.test.ts
 */

const SEED = Number(process.env.FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const TRACES = 40;
const BANNED_TRACES = 5;
const POLL_INTERVAL_MS = 100;
const TOP_TIMEOUT_MS = 300;
const BIND_TIMEOUT_MS = 18_000;
const TERMINAL_RET_CODE = 1001;
const NON_TERMINAL_RET_CODE = 2001;

/** mulberry32: a small seeded PRNG, so a failing mix can be replayed from its seed. */
function createRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Expected =
  | { readonly status: "bound" }
  | { readonly status: "failed"; readonly via: "ret_code" }
  | { readonly status: "failed"; readonly via: "upstream_rejected" }
  | { readonly status: "expired" };

interface Plan {
  readonly traceId: string;
  readonly script: TraceScript;
  readonly expected: Expected;
}

const TRANSIENT_KINDS = new Set(["http_error", "garbage", "isp_error", "timeout"]);

/** One seeded trace plan: 2–7 chaos steps (at most 3 transient in a row, so backoff stays short), then the outcome. */
function planTraces(random: () => number): Plan[] {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const between = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const outcomes: Expected[] = [
    { status: "bound" },
    { status: "failed", via: "ret_code" },
    { status: "failed", via: "upstream_rejected" },
    { status: "expired" },
  ];
  const banned = new Set<number>();
  while (banned.size < BANNED_TRACES) banned.add(between(0, TRACES - 1));

  return Array.from({ length: TRACES }, (_, i): Plan => {
    const expected = outcomes[i % outcomes.length] as Expected;
    const steps: ScriptStep[] = [];
    let transientRun = 0;
    const length = between(2, 7);
    while (steps.length < length) {
      const kind = pick(["pending", "http_error", "timeout", "garbage", "isp_error", "not_ok"] as const);
      if (TRANSIENT_KINDS.has(kind) && transientRun >= 3) {
        steps.push({ kind: "pending" });
        transientRun = 0;
        continue;
      }
      transientRun = TRANSIENT_KINDS.has(kind) ? transientRun + 1 : 0;
      // Some answers come slowly but within the timeout, so calls overlap across traces.
      const slow = random() < 0.2 ? { delayMs: between(20, 150) } : {};
      switch (kind) {
        case "pending":
          steps.push({ kind, ...slow });
          break;
        case "http_error":
          steps.push({ kind, status: pick([500, 502, 503, 504]), ...slow });
          break;
        case "timeout":
          // Held past TOP_TIMEOUT_MS: bindwatch gives up on it; whatever it would have said is lost.
          steps.push({ kind: pick(["pending", "garbage"] as const), delayMs: between(TOP_TIMEOUT_MS + 150, 700) });
          break;
        case "garbage":
        case "isp_error":
          steps.push({ kind, ...slow });
          break;
        case "not_ok":
          steps.push({
            kind,
            retCode: NON_TERMINAL_RET_CODE,
            message: pick(["device offline", "waiting for the user", "network unstable"]),
            ...slow,
          });
          break;
      }
    }
    if (banned.has(i)) {
      steps.splice(between(0, steps.length), 0, { kind: "ban", seconds: between(1, 2) });
    }
    let thereafter: ScriptStep;
    switch (expected.status) {
      case "bound":
        thereafter = { kind: "bound" };
        break;
      case "failed":
        thereafter =
          expected.via === "ret_code"
            ? { kind: "not_ok", retCode: TERMINAL_RET_CODE, message: "device bound to another account" }
            : { kind: "reject", code: 41, subCode: "isv.invalid-parameter:open_id", msg: "Invalid arguments:open_id" };
        break;
      case "expired":
        thereafter = { kind: "pending" };
        break;
    }
    return {
      traceId: newTraceId(`chaos${i}`),
      script: { steps, thereafter },
      expected,
    };
  });
}

/** One request as it reached the gateway double. */
interface GatewayHit {
  readonly traceId: string | null;
  readonly arrivedAt: number;
  answeredAt: number | null;
  /** error_response code 7 (a scripted ban, or the simulator turning a call away during one). */
  code7: boolean;
  requestId: string | null;
}

interface RecordingGateway {
  readonly simulator: TopSimulator;
  readonly url: string;
  readonly hits: GatewayHit[];
  close(): Promise<void>;
}

async function startRecordingGateway(appKey: string, appSecret: string): Promise<RecordingGateway> {
  const simulator = createTopSimulator({ appKey, appSecret });
  const hits: GatewayHit[] = [];
  const server = serve({
    fetch: async (req: Request) => {
      const form = new URLSearchParams(await req.clone().text());
      const hit: GatewayHit = {
        traceId: form.get("trace_id"),
        arrivedAt: Date.now(),
        answeredAt: null,
        code7: false,
        requestId: null,
      };
      hits.push(hit);
      const res = await simulator.fetch(req);
      hit.answeredAt = Date.now();
      if (res.status === 200) {
        const body = (await res.clone().json()) as { error_response?: { code?: number; request_id?: string } };
        hit.code7 = body.error_response?.code === 7;
        hit.requestId = body.error_response?.request_id ?? null;
      }
      return res;
    },
    port: 0,
    hostname: "127.0.0.1",
  }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.once("listening", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    simulator,
    url: `http://127.0.0.1:${port}/router/rest`,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A moment in the coordinator log: wall time (to compare with the gateway's) and order within the log. */
interface Moment {
  readonly at: number;
  readonly seq: number;
}

/** What the wrapped coordinator saw: bans as bindwatch learned them, permits, and every call it let go. */
interface CoordinatorLog {
  readonly bans: (Moment & { readonly untilMs: number })[];
  /** The call budget (where bans are enforced) handing out a permit. */
  readonly permits: Moment[];
  /** Calls let go (`beginCall` answered `go`), with the permit each one used. */
  readonly calls: (Moment & { readonly traceId: string; readonly permit: Moment | null })[];
}

/**
 * Wraps a coordinator to log bans, permits and calls. bindwatch takes a permit, then at
 * once asks `beginCall`, and its permit queue serves waiters in order, so the permits
 * not yet used are matched to `beginCall`s first in, first out.
 */
function recordingCoordinator(inner: Coordinator): { coordinator: Coordinator; log: CoordinatorLog } {
  const log: CoordinatorLog = { bans: [], permits: [], calls: [] };
  let seq = 0;
  const moment = (): Moment => ({ at: Date.now(), seq: ++seq });
  const unused: Moment[] = [];
  const coordinator: Coordinator = {
    ...inner,
    async banUpstream(ms) {
      const m = moment();
      log.bans.push({ ...m, untilMs: m.at + ms });
      return inner.banUpstream(ms);
    },
    async takeCallPermit() {
      const permit = await inner.takeCallPermit();
      if (permit.kind === "go") {
        const m = moment();
        log.permits.push(m);
        unused.push(m);
      }
      return permit;
    },
    async beginCall(traceId, token, call) {
      const permit = unused.shift() ?? null;
      const gate = await inner.beginCall(traceId, token, call);
      if (gate.kind === "go") log.calls.push({ ...moment(), traceId, permit });
      return gate;
    },
  };
  return { coordinator, log };
}

describe(`upstream chaos (FAULT_SEED=${SEED})`, () => {
  let gateway: RecordingGateway;
  let bindwatch: RunningServer;
  let coordinatorLog: CoordinatorLog;
  const readers = new Map<string, SseReader>();
  const processFaults: { kind: string; error: unknown }[] = [];
  const onUnhandled = (error: unknown) => processFaults.push({ kind: "unhandledRejection", error });
  const onUncaught = (error: unknown) => processFaults.push({ kind: "uncaughtException", error });

  beforeAll(async () => {
    process.on("unhandledRejection", onUnhandled);
    process.on("uncaughtException", onUncaught);
    const appKey = "chaos-app-key";
    const appSecret = randomBytes(16).toString("hex");
    gateway = await startRecordingGateway(appKey, appSecret);
    const signMethod = createRandom(SEED ^ 0x5eed)() < 0.5 ? "md5" : "hmac-sha256";
    const config = parseConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      TOP_APP_KEY: appKey,
      TOP_APP_SECRET: appSecret,
      TOP_GATEWAY_URL: gateway.url,
      TOP_SIGN_METHOD: signMethod,
      TOP_TIMEOUT_MS: String(TOP_TIMEOUT_MS),
      POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
      POLL_LINGER_MS: "1000",
      BIND_TIMEOUT_MS: String(BIND_TIMEOUT_MS),
      TERMINAL_RET_CODES: `${TERMINAL_RET_CODE},1002`,
      // High enough that the budget never paces these 40 traces: only bans hold calls back.
      UPSTREAM_QPS: "1000",
      HEARTBEAT_MS: "15000",
      LOG_LEVEL: "silent",
    });
    const wrapped = recordingCoordinator(
      createMemoryCoordinator({
        retentionMs: config.bindTimeoutMs + config.resultTtlMs,
        resultTtlMs: config.resultTtlMs,
        upstreamQps: config.upstreamQps,
      }),
    );
    coordinatorLog = wrapped.log;
    bindwatch = await startNodeServer(config, createLogger(config.logLevel), { coordinator: wrapped.coordinator });
  });

  afterAll(async () => {
    for (const reader of readers.values()) reader.close();
    await bindwatch?.stop();
    await gateway?.close();
    process.off("unhandledRejection", onUnhandled);
    process.off("uncaughtException", onUncaught);
  });

  it("every trace reaches its scripted outcome; bans hold every call off; one call in flight per trace", async () => {
    const random = createRandom(SEED);
    const plans = planTraces(random);
    console.info(
      `upstream chaos: FAULT_SEED=${SEED}, ${plans.length} traces, ` +
        `${plans.reduce((n, p) => n + p.script.steps.length, 0)} scripted steps, ${BANNED_TRACES} bans`,
    );

    // Register and watch every trace, all at once.
    const started = Date.now();
    await Promise.all(
      plans.map(async (plan) => {
        gateway.simulator.setScript(plan.traceId, plan.script);
        const { status } = await postBind(bindwatch.url, bindBody(plan.traceId));
        expect(status).toBe(201);
        const reader = await openSse(`${bindwatch.url}/v1/binds/${plan.traceId}/events`);
        readers.set(plan.traceId, reader);
        expect(reader.status).toBe(200);
      }),
    );
    // Every stream ends by itself after its final event, the expired ones at the deadline.
    await waitUntil(
      () => [...readers.values()].every((r) => r.ended),
      BIND_TIMEOUT_MS + 20_000,
      "every SSE stream to end after its final event",
      50,
    );
    const elapsed = Date.now() - started;

    // ---- each trace: exactly the expected final state, delivered once, in version order ----
    const mismatches: string[] = [];
    for (const plan of plans) {
      const reader = readers.get(plan.traceId);
      if (!reader) throw new Error(`${plan.traceId}: not watched`);
      expect(reader.error, plan.traceId).toBeNull();
      const states = reader.states<BindState>();
      reader.events.forEach((event, i) => {
        const state = states[i] as BindState;
        expect(event.event).toBe(state.status);
        expect(event.id).toBe(String(state.version));
        if (i > 0) expect(state.version, plan.traceId).toBeGreaterThan((states[i - 1] as BindState).version);
      });
      const finals = states.filter((s) => s.final);
      const last = states.at(-1);
      const summary = `${plan.traceId}: expected ${JSON.stringify(plan.expected)}, got ${finals.length} final event(s), last ${JSON.stringify(last)}`;
      if (finals.length !== 1 || last !== finals[0] || !last) {
        mismatches.push(summary);
        continue;
      }
      const ok =
        plan.expected.status === "bound"
          ? last.status === "bound" && last.error === null
          : plan.expected.status === "expired"
            ? last.status === "expired"
            : plan.expected.via === "ret_code"
              ? last.status === "failed" && last.upstream?.ret_code === TERMINAL_RET_CODE && last.error === null
              : last.status === "failed" && last.error?.code === "upstream_rejected";
      if (!ok) mismatches.push(summary);
      // The stored state says the same as the final event.
      const stored = (await (await fetch(`${bindwatch.url}/v1/binds/${plan.traceId}`)).json()) as BindState;
      expect(stored.version, plan.traceId).toBe(last.version);
      expect(stored.status, plan.traceId).toBe(last.status);
    }
    expect(mismatches).toEqual([]);

    // ---- single flight per trace, under timeouts and retries ----
    for (const plan of plans) {
      const report = gateway.simulator.getTrace(plan.traceId);
      expect(report.maxInFlight, `${plan.traceId} concurrent calls`).toBe(1);
      // Non-expired traces consumed their whole script (nothing skipped, nothing answered twice).
      if (plan.expected.status !== "expired") {
        expect(report.stepIndex, plan.traceId).toBe(plan.script.steps.length + 1);
      }
    }

    // ---- bans: once bindwatch has read a ban, nothing leaves it for any trace until the ban ends ----
    const stats = gateway.simulator.stats();
    const banAnswers: { traceId: string; at: number; until: number; requestId: string }[] = [];
    for (const plan of plans) {
      for (const call of gateway.simulator.getTrace(plan.traceId).calls) {
        if (call.outcome !== "ban" || call.step.kind !== "ban" || call.endedAt === null) continue;
        banAnswers.push({
          traceId: plan.traceId,
          at: call.endedAt,
          until: call.endedAt + call.step.seconds * 1000,
          requestId: call.requestId,
        });
      }
    }
    expect(banAnswers, "every scripted ban was answered").toHaveLength(BANNED_TRACES);
    banAnswers.sort((x, y) => x.at - y.at);
    const { bans, permits, calls } = coordinatorLog;
    const duringKnownBan = (m: Moment) => bans.some((ban) => m.seq > ban.seq && m.at < ban.untilMs);
    // Every call went through the budget, and the budget handed out nothing while bindwatch knew of a ban.
    expect(
      calls.filter((c) => c.permit === null),
      "calls let go without a permit",
    ).toEqual([]);
    expect(permits.filter(duringKnownBan), "permits handed out during a ban bindwatch knew of").toEqual([]);
    // A permit taken just before a ban was read may still be used just after; how often and how late, for the report.
    const sameTick = calls.filter(duringKnownBan).map((c) => c.at - (c.permit?.at ?? c.at));

    const banAnswerIds = new Set(banAnswers.map((b) => b.requestId));
    for (const answer of banAnswers) {
      // bindwatch read the ban (the first one it noted after the answer) and held off at least as long as TOP said.
      const read = bans.find((ban) => ban.at >= answer.at);
      expect(read, `bindwatch noted the ban answered to ${answer.traceId}`).toBeDefined();
      expect(read?.untilMs, "the ban held at least as long as the gateway's").toBeGreaterThanOrEqual(answer.until);
      expect(gateway.hits.some((h) => h.code7 && h.requestId === answer.requestId)).toBe(true);
      // Calls resumed after it.
      expect(gateway.hits.some((h) => h.arrivedAt >= answer.until)).toBe(true);
    }
    // Every request that reached the gateway during a ban (turned away as `banned`, or arriving inside
    // a ban window) left bindwatch on a permit taken before bindwatch had read that ban.
    const strays: { traceId: string | null; afterBanMs: number; permitBeforeReadMs: number; turnedAway: boolean }[] =
      [];
    for (const hit of gateway.hits) {
      if (hit.requestId !== null && banAnswerIds.has(hit.requestId)) continue;
      const checkedAt = hit.answeredAt ?? hit.arrivedAt;
      const inWindow = banAnswers.some((b) => hit.arrivedAt >= b.at && hit.arrivedAt < b.until);
      if (!hit.code7 && !inWindow) continue;
      const answer = banAnswers.filter((b) => b.at <= checkedAt).at(-1);
      expect(
        answer,
        `a request turned away as banned with no ban answered before it: ${JSON.stringify(hit)}`,
      ).toBeDefined();
      const read = answer && bans.find((ban) => ban.at >= answer.at);
      const left = calls.filter((c) => c.traceId === hit.traceId && c.at <= hit.arrivedAt).at(-1);
      expect(left, `a call of ${hit.traceId} that bindwatch never let go`).toBeDefined();
      if (!answer || !read || !left) continue;
      strays.push({
        traceId: hit.traceId,
        afterBanMs: hit.arrivedAt - answer.at,
        permitBeforeReadMs: read.at - (left.permit?.at ?? Number.NaN),
        turnedAway: hit.code7,
      });
      expect(
        left.permit?.seq ?? Number.POSITIVE_INFINITY,
        `${hit.traceId} reached the gateway during a ban`,
      ).toBeLessThan(read.seq);
    }
    console.info(
      `upstream chaos: ${elapsed} ms, ${gateway.hits.length} requests at the gateway, ${stats.checkbindCalls} calls answered, ` +
        `outcomes ${JSON.stringify(stats.outcomes)}, rejected ${JSON.stringify(stats.rejected)}, ` +
        `ban windows ${JSON.stringify(banAnswers.map((b) => b.until - b.at))} ms, bans noted by bindwatch ${bans.length}, ` +
        `requests already on the wire when a ban was answered: ${JSON.stringify(strays)}, ` +
        `calls let go after a ban was read on a permit taken just before it (ms between): ${JSON.stringify(sameTick)}`,
    );
    // The simulator turned nothing away but calls already on the wire (never for a bad signature or the like).
    const turnedAway = gateway.hits.filter((h) => h.code7 && !(h.requestId !== null && banAnswerIds.has(h.requestId)));
    expect(stats.rejected).toEqual(turnedAway.length === 0 ? {} : { banned: turnedAway.length });

    // ---- the process stayed sound ----
    expect(processFaults).toEqual([]);
    await waitUntil(() => bindwatch.streams.size === 0, 5_000, "every stream released");
    await waitUntil(
      () => bindwatch.service.stats().watchers === 0 && bindwatch.service.stats().drivers === 0,
      5_000,
      "no watchers or drivers left",
    );
  }, 55_000);
});
