import { Agent, type ClientRequest, type IncomingMessage, request } from "node:http";
import { EventSource } from "eventsource";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import {
  type ScriptStep,
  scriptBoundAfter,
  scriptFailedAfter,
  scriptNever,
  scriptRejectedAfter,
} from "../../src/sim/scripts.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import { openSse, type SseReader } from "../support/sse-reader.js";

/*
 * The HTTP API end to end on a real socket: the server listens on port 0 and its own
 * TOP client reaches the in-process gateway simulator over HTTP, which checks every
 * signature and timestamp as the real gateway does and answers from a script per trace.
 */

const FINAL_STATUSES = ["bound", "failed", "expired", "cancelled"] as const;
const ALL_STATUSES = ["pending", ...FINAL_STATUSES] as const;

interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== "object" || value === null || !("error" in value)) return false;
  const error: unknown = value.error;
  if (typeof error !== "object" || error === null) return false;
  const e = error as Record<string, unknown>;
  const keys = Object.keys(e).sort();
  const allowed = keys.every((k) => k === "code" || k === "message" || k === "field");
  return (
    allowed &&
    typeof e.code === "string" &&
    typeof e.message === "string" &&
    (e.field === undefined || typeof e.field === "string")
  );
}

// ---- clients opened by a test are closed after it, whatever happens ----------

const openReaders: SseReader[] = [];
const openEventSources: EventSource[] = [];

async function sse(url: string, headers?: Record<string, string>): Promise<SseReader> {
  const reader = await openSse(url, headers ? { headers } : {});
  openReaders.push(reader);
  return reader;
}

afterEach(() => {
  for (const reader of openReaders.splice(0)) reader.close();
  for (const es of openEventSources.splice(0)) es.close();
});

interface EsEvent {
  readonly type: string;
  readonly id: string;
  readonly data: string;
}

interface WatchedEventSource {
  readonly es: EventSource;
  /** Every named event dispatched, in order. */
  readonly received: EsEvent[];
  /** Every request the EventSource made: the Last-Event-ID it sent and the status it got. */
  readonly requests: { lastEventId: string | null; status: number }[];
}

/** An EventSource (the `eventsource` package, WHATWG semantics) that records what it sends and gets. */
function watchWithEventSource(url: string): WatchedEventSource {
  const received: EsEvent[] = [];
  const requests: { lastEventId: string | null; status: number }[] = [];
  const es = new EventSource(url, {
    fetch: async (input, init) => {
      const header = Object.entries(init.headers).find(([name]) => name.toLowerCase() === "last-event-id");
      const res = await fetch(input, init as RequestInit);
      requests.push({ lastEventId: header?.[1] ?? null, status: res.status });
      return res;
    },
  });
  for (const type of ALL_STATUSES) {
    es.addEventListener(type, (event: MessageEvent<string>) => {
      received.push({ type, id: event.lastEventId, data: event.data });
    });
  }
  openEventSources.push(es);
  return { es, received, requests };
}

async function getState(server: TestServer, traceId: string, query = ""): Promise<BindState> {
  const res = await fetch(`${server.url}/v1/binds/${traceId}${query}`);
  expect(res.status).toBe(200);
  return (await res.json()) as BindState;
}

async function register(
  server: TestServer,
  traceId: string,
  script?: Parameters<TestServer["simulator"]["setScript"]>[1],
) {
  if (script) server.simulator.setScript(traceId, script);
  const { status, json } = await postBind(server.url, bindBody(traceId));
  expect(status).toBe(201);
  return json as { trace_id: string; state: BindState; events_url: string; wait_url: string };
}

/** Waits for the stored state to reach `version` (the poller got at least one answer, for instance). */
async function waitForVersion(server: TestServer, traceId: string, version: number): Promise<BindState> {
  return waitUntil(
    async () => {
      const state = await getState(server, traceId);
      return state.version >= version ? state : null;
    },
    10_000,
    `${traceId} at version ${version}`,
  );
}

/** The states an SSE reader got, with the invariants every stream must keep. */
function checkedStates(reader: SseReader): BindState[] {
  const states = reader.states<BindState>();
  reader.events.forEach((event, i) => {
    const state = states[i] as BindState;
    expect(event.event).toBe(state.status);
    expect(event.id).toBe(String(state.version));
    if (i > 0) expect(state.version).toBeGreaterThan((states[i - 1] as BindState).version);
  });
  expect(states.filter((s) => s.final).length).toBeLessThanOrEqual(1);
  return states;
}

/** JSON text of an object's own entries; a computed "__proto__" key stays an ordinary key on the wire. */
function jsonText(value: Record<string, unknown>): string {
  return `{${Object.entries(value)
    .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
    .join(",")}}`;
}

function isPing(frame: SseReader["frames"][number]): boolean {
  return frame.data === undefined && frame.comments.length === 1 && frame.comments[0] === "ping";
}

// ============================================================================

describe("the API on a real socket", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      POLL_INTERVAL_MS: "200",
      HEARTBEAT_MS: "250",
      POLL_LINGER_MS: "500",
      TERMINAL_RET_CODES: "1001,1002",
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  describe("SSE with EventSource", () => {
    it("sees pending then bound, ends after the final event and stops on the 204 of its reconnect", async () => {
      const traceId = newTraceId("es");
      const created = await register(server, traceId, scriptBoundAfter(3));
      expect(created.events_url).toBe(`/v1/binds/${traceId}/events`);

      const watched = watchWithEventSource(new URL(created.events_url, server.url).href);
      await waitUntil(() => watched.received.some((e) => e.type === "bound"), 10_000, "the bound event");
      // The server ends the stream; the EventSource reconnects with Last-Event-ID and is told 204: it stops for good.
      await waitUntil(() => watched.es.readyState === watched.es.CLOSED, 10_000, "the EventSource to close");

      const { received, requests } = watched;
      expect(received[0]?.type).toBe("pending");
      expect(received.at(-1)?.type).toBe("bound");
      expect(received.filter((e) => e.type === "bound")).toHaveLength(1);
      let previous = 0;
      for (const event of received) {
        const state = JSON.parse(event.data) as BindState;
        expect(state.trace_id).toBe(traceId);
        expect(state.status).toBe(event.type);
        expect(event.id).toBe(String(state.version));
        expect(state.version).toBeGreaterThan(previous);
        expect(state.final).toBe(event.type !== "pending");
        previous = state.version;
      }
      const final = JSON.parse(received.at(-1)?.data ?? "{}") as BindState;
      expect(final.error).toBeNull();
      expect(final.upstream?.ret_code).toBe(0);
      // The gateway's EagleEye id of the answer that bound it, not the bind's trace_id.
      expect(final.upstream?.eagleeye_id).toBe(server.simulator.getTrace(traceId).calls.at(-1)?.eagleeyeId);
      expect(final.upstream?.eagleeye_id).not.toBe(traceId);

      expect(requests).toEqual([
        { lastEventId: null, status: 200 },
        { lastEventId: String(final.version), status: 204 },
      ]);

      // The same answer for a raw reconnect, by header or by query, at or beyond the final version.
      const eventsUrl = `${server.url}/v1/binds/${traceId}/events`;
      for (const [init, url] of [
        [{ headers: { "last-event-id": String(final.version) } }, eventsUrl],
        [{ headers: { "last-event-id": String(final.version + 7) } }, eventsUrl],
        [{}, `${eventsUrl}?last_event_id=${final.version}`],
      ] as const) {
        const res = await fetch(url, init);
        expect(res.status).toBe(204);
        expect(await res.text()).toBe("");
      }
      // The checkbind calls were signed and timestamped well enough for the gateway double.
      expect(server.simulator.getTrace(traceId).callCount).toBe(4);
      expect(server.simulator.stats().rejectedTotal).toBe(0);
    });
  });

  describe("SSE with a raw reader", () => {
    it("answers SSE headers, opens with retry, and sends `: ping` while nothing else happens", async () => {
      const traceId = newTraceId("raw");
      await register(server, traceId, scriptNever());
      await waitForVersion(server, traceId, 2);

      const reader = await sse(`${server.url}/v1/binds/${traceId}/events`);
      expect(reader.status).toBe(200);
      expect(reader.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(reader.headers.get("cache-control")).toContain("no-cache");
      expect(reader.headers.get("x-accel-buffering")).toBe("no");

      await reader.waitFor(
        (r) => {
          const lastEvent = r.frames.findLastIndex((f) => f.data !== undefined);
          return lastEvent >= 0 && r.frames.slice(lastEvent + 1).filter(isPing).length >= 3;
        },
        5_000,
        "three pings after the last event",
      );
      expect(reader.text.startsWith("retry: ")).toBe(true);
      expect(reader.frames[0]?.retry).toBeGreaterThanOrEqual(1000);
      expect(reader.frames[1]?.event).toBe("pending");
      // Pings come about every HEARTBEAT_MS (250 ms), never in bursts.
      const pings = reader.frames.filter(isPing);
      for (let i = 1; i < pings.length; i++) {
        expect((pings[i]?.at ?? 0) - (pings[i - 1]?.at ?? 0)).toBeGreaterThan(150);
      }
      // Only the retry line, events and pings: nothing else is on the wire.
      for (const frame of reader.frames.slice(1)) expect(frame.data !== undefined || isPing(frame)).toBe(true);
      expect(reader.ended).toBe(false);
    });

    it("suppresses versions already seen, by Last-Event-ID header or last_event_id query, then sends changes", async () => {
      const traceId = newTraceId("resume");
      await register(server, traceId, scriptNever());
      const seen = await waitForVersion(server, traceId, 2);
      const url = `${server.url}/v1/binds/${traceId}/events`;

      const byHeader = await sse(url, { "last-event-id": String(seen.version) });
      const byQuery = await sse(`${url}?last_event_id=${seen.version}`);
      const older = await sse(url, { "last-event-id": String(seen.version - 1) });
      for (const reader of [byHeader, byQuery, older]) expect(reader.status).toBe(200);

      // A heartbeat proves each stream is live; the ones up to date got no event before it.
      for (const reader of [byHeader, byQuery]) {
        await reader.waitFor((r) => r.frames.some(isPing), 5_000, "a ping");
        expect(reader.events).toHaveLength(0);
      }
      await older.waitFor((r) => r.events.length >= 1, 5_000, "the current state");
      expect(older.events[0]?.id).toBe(String(seen.version));

      const cancel = await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
      expect(cancel.status).toBe(200);
      for (const reader of [byHeader, byQuery, older]) {
        await reader.done;
        expect(reader.error).toBeNull();
      }
      for (const reader of [byHeader, byQuery]) {
        expect(reader.events.map((e) => [e.event, e.id])).toEqual([["cancelled", String(seen.version + 1)]]);
      }
      expect(older.events.map((e) => e.event)).toEqual(["pending", "cancelled"]);
    });

    it("answers 404 JSON for an unknown trace and 400 JSON for a malformed trace_id", async () => {
      const unknown = await sse(`${server.url}/v1/binds/${newTraceId("nobody")}/events`);
      expect(unknown.status).toBe(404);
      await unknown.done;
      expect(JSON.parse(unknown.text)).toMatchObject({ error: { code: "not_found" } });

      for (const bad of ["bad!id", "a%20b", "x".repeat(129), "%E0%A4%A"]) {
        const reader = await sse(`${server.url}/v1/binds/${bad}/events`);
        expect(reader.status).toBe(400);
        expect(reader.headers.get("content-type")).toMatch(/^application\/json/);
        await reader.done;
        const body: unknown = JSON.parse(reader.text);
        expect(isErrorBody(body)).toBe(true);
        expect(body).toMatchObject({ error: { code: "invalid_request", field: "trace_id" } });
      }
    });
  });

  describe("each final status end to end", () => {
    /** Registers with `script`, watches from the start, and returns the states once the server ended the stream. */
    async function watchToEnd(traceId: string, script: Parameters<TestServer["simulator"]["setScript"]>[1]) {
      const created = await register(server, traceId, script);
      const reader = await sse(new URL(created.events_url, server.url).href);
      expect(reader.status).toBe(200);
      await reader.waitFor((r) => r.ended, 15_000, `the end of the stream of ${traceId}`);
      expect(reader.ended).toBe(true);
      expect(reader.error).toBeNull();
      const states = checkedStates(reader);
      const final = states.at(-1);
      expect(final?.final).toBe(true);
      // The stored state agrees, and no call follows the final answer.
      expect(await getState(server, traceId)).toEqual(final);
      return { states, final: final as BindState };
    }

    it("bound", async () => {
      const traceId = newTraceId("bound");
      const { states, final } = await watchToEnd(traceId, scriptBoundAfter(2));
      expect(states[0]?.status).toBe("pending");
      expect(final).toMatchObject({ status: "bound", final: true, attempts: 3, error: null });
      expect(server.simulator.getTrace(traceId).callCount).toBe(3);
    });

    it("failed: result=false with a ret_code in TERMINAL_RET_CODES", async () => {
      const traceId = newTraceId("failed");
      const { final } = await watchToEnd(traceId, scriptFailedAfter(1, 1001, "device offline"));
      expect(final).toMatchObject({
        status: "failed",
        error: null,
        upstream: { ret_code: 1001, message: "device offline" },
      });
      expect(server.simulator.getTrace(traceId).callCount).toBe(2);
    });

    it("a ret_code outside TERMINAL_RET_CODES keeps polling, shown in upstream, until bound", async () => {
      const traceId = newTraceId("retcode");
      const steps: ScriptStep[] = [
        { kind: "not_ok", retCode: 2002, message: "device not online yet" },
        { kind: "not_ok", retCode: 2002, message: "device not online yet" },
        { kind: "bound" },
      ];
      const { states, final } = await watchToEnd(traceId, steps);
      expect(states.some((s) => s.status === "pending" && s.upstream?.ret_code === 2002)).toBe(true);
      expect(final).toMatchObject({ status: "bound", upstream: { ret_code: 0 } });
      // Two identical answers are one version: the version follows changes, not polls.
      expect(states.filter((s) => s.upstream?.ret_code === 2002)).toHaveLength(1);
    });

    it("failed with upstream_rejected: an isv error_response", async () => {
      const traceId = newTraceId("rejected");
      const { final } = await watchToEnd(
        traceId,
        scriptRejectedAfter(1, 41, "isv.invalid-parameter:open_id", "Invalid arguments:open_id"),
      );
      expect(final.status).toBe("failed");
      expect(final.error?.code).toBe("upstream_rejected");
      expect(final.error?.message).toContain("isv.invalid-parameter");
      expect(server.simulator.getTrace(traceId).callCount).toBe(2);
    });

    it("cancelled: DELETE while watching", async () => {
      const traceId = newTraceId("cancel");
      const created = await register(server, traceId, scriptNever());
      const watched = watchWithEventSource(new URL(created.events_url, server.url).href);
      const reader = await sse(new URL(created.events_url, server.url).href);
      await reader.waitFor((r) => r.events.length >= 1, 5_000, "the current state");
      await waitUntil(() => watched.received.length >= 1, 5_000, "the EventSource's first event");

      const res = await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
      expect(res.status).toBe(200);
      const cancelled = (await res.json()) as BindState;
      expect(cancelled).toMatchObject({ status: "cancelled", final: true });

      await reader.done;
      expect(reader.error).toBeNull();
      expect(checkedStates(reader).at(-1)).toEqual(cancelled);
      await waitUntil(() => watched.es.readyState === watched.es.CLOSED, 10_000, "the EventSource to stop");
      expect(watched.received.filter((e) => e.type === "cancelled")).toHaveLength(1);
      expect(watched.requests.at(-1)).toEqual({ lastEventId: String(cancelled.version), status: 204 });

      // Cancelling again changes nothing; polling has stopped.
      const again = await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
      expect(again.status).toBe(200);
      expect(await again.json()).toEqual(cancelled);
      await waitUntil(() => server.simulator.getTrace(traceId).inFlight === 0, 5_000, "no call in flight");
      const calls = server.simulator.getTrace(traceId).callCount;
      expect(await getState(server, traceId)).toEqual(cancelled);
      expect(server.simulator.getTrace(traceId).callCount).toBe(calls);
    });

    it("transient trouble (HTTP 500, garbage, isp error) shows in `error`, clears, and the bind still binds", async () => {
      const traceId = newTraceId("trouble");
      const steps: ScriptStep[] = [
        { kind: "http_error", status: 500 },
        { kind: "garbage" },
        { kind: "isp_error" },
        { kind: "bound" },
      ];
      const { states, final } = await watchToEnd(traceId, steps);
      const troubled = states.filter((s) => s.error !== null);
      expect(troubled.length).toBeGreaterThanOrEqual(1);
      for (const state of troubled) {
        expect(state.status).toBe("pending");
        expect(state.error?.code).toBe("upstream_unavailable");
      }
      expect(final).toMatchObject({ status: "bound", error: null });
      const outcomes = server.simulator.getTrace(traceId).calls.map((c) => c.outcome);
      expect(outcomes).toEqual(["http_error", "garbage", "isp_error", "bound"]);
      // Backoff starts at the interval: no retry came sooner than 0.8 × POLL_INTERVAL_MS.
      expect(server.simulator.getTrace(traceId).minStartGapMs).toBeGreaterThanOrEqual(0.8 * server.pollIntervalMs);
    });
  });

  describe("long-poll", () => {
    it("holds `wait` until a change and answers the new state", async () => {
      const traceId = newTraceId("lp");
      await register(server, traceId, scriptNever());
      const before = await waitForVersion(server, traceId, 2);

      let settled = false;
      const started = Date.now();
      const held = fetch(`${server.url}/v1/binds/${traceId}?wait=5&after=${before.version}`).then(async (res) => {
        settled = true;
        return { status: res.status, state: (await res.json()) as BindState, at: Date.now() };
      });
      // Two more polls come and go without a change: the request is still held.
      const calls = server.simulator.getTrace(traceId).callCount;
      await waitUntil(() => server.simulator.getTrace(traceId).callCount >= calls + 2, 5_000, "two more polls");
      expect(settled).toBe(false);

      server.simulator.setScript(traceId, scriptBoundAfter(0));
      const changedAt = Date.now();
      const answer = await held;
      expect(answer.status).toBe(200);
      expect(answer.state).toMatchObject({ trace_id: traceId, status: "bound", version: before.version + 1 });
      expect(answer.at).toBeGreaterThanOrEqual(changedAt);
      expect(answer.at - started).toBeLessThan(5_000);
    });

    it("answers at once with wait=0, after the wait without a change, and at once for a final state", async () => {
      const traceId = newTraceId("lp0");
      await register(server, traceId, scriptNever());
      const current = await waitForVersion(server, traceId, 2);

      let started = Date.now();
      const now = await getState(server, traceId, `?wait=0&after=${current.version}`);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(now.version).toBe(current.version);

      started = Date.now();
      const timedOut = await getState(server, traceId, `?wait=1&after=${current.version}`);
      expect(Date.now() - started).toBeGreaterThanOrEqual(950);
      expect(timedOut).toMatchObject({ status: "pending", version: current.version });

      started = Date.now();
      const older = await getState(server, traceId, `?wait=5&after=${current.version - 1}`);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(older.version).toBe(current.version);

      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
      started = Date.now();
      const final = await getState(server, traceId, "?wait=5&after=999");
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(final).toMatchObject({ status: "cancelled", final: true });
    });

    it("answers 404 for an unknown trace, even with a wait", async () => {
      const started = Date.now();
      const res = await fetch(`${server.url}/v1/binds/${newTraceId("nobody")}?wait=5&after=1`);
      expect(res.status).toBe(404);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(await res.json()).toMatchObject({ error: { code: "not_found", field: "trace_id" } });
    });
  });

  describe("nothing a client sends produces a 5xx", () => {
    const json = { "content-type": "application/json" };
    const valid = (traceId: string, extra: Record<string, unknown> = {}) => JSON.stringify(bindBody(traceId, extra));

    interface BadRequest {
      readonly name: string;
      readonly method: string;
      readonly path: string;
      readonly headers?: Record<string, string>;
      readonly body?: string;
      readonly status: number;
      readonly code?: string;
      readonly field?: string;
    }

    const cases: BadRequest[] = [
      { name: "fetch's default text/plain", method: "POST", path: "/v1/binds", body: valid("ct0"), status: 415 },
      {
        name: "text/plain",
        method: "POST",
        path: "/v1/binds",
        headers: { "content-type": "text/plain" },
        body: valid("ct1"),
        status: 415,
        code: "unsupported_media_type",
      },
      {
        name: "form content-type",
        method: "POST",
        path: "/v1/binds",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "trace_id=x",
        status: 415,
      },
      {
        name: "application/json-patch+json",
        method: "POST",
        path: "/v1/binds",
        headers: { "content-type": "application/json-patch+json" },
        body: valid("ct2"),
        status: 415,
      },
      {
        name: "body over 16 KiB",
        method: "POST",
        path: "/v1/binds",
        headers: json,
        body: valid("big", { params: { blob: "x".repeat(17 * 1024) } }),
        status: 413,
        code: "payload_too_large",
      },
      { name: "empty body", method: "POST", path: "/v1/binds", headers: json, body: "", status: 400 },
      { name: "invalid JSON", method: "POST", path: "/v1/binds", headers: json, body: "{trace_id:", status: 400 },
      { name: "JSON null", method: "POST", path: "/v1/binds", headers: json, body: "null", status: 400 },
      { name: "JSON array", method: "POST", path: "/v1/binds", headers: json, body: "[]", status: 400 },
      { name: "JSON string", method: "POST", path: "/v1/binds", headers: json, body: '"x"', status: 400 },
      {
        name: "missing trace_id",
        method: "POST",
        path: "/v1/binds",
        headers: json,
        body: JSON.stringify({ open_id: "o", product_key: "p", user_type: "u" }),
        status: 400,
        field: "trace_id",
      },
      {
        name: "missing open_id",
        method: "POST",
        path: "/v1/binds",
        headers: json,
        body: JSON.stringify({ trace_id: "m1", product_key: "p", user_type: "u" }),
        status: 400,
        field: "open_id",
      },
      {
        name: "missing product_key",
        method: "POST",
        path: "/v1/binds",
        headers: json,
        body: JSON.stringify({ trace_id: "m2", open_id: "o", user_type: "u" }),
        status: 400,
        field: "product_key",
      },
      {
        name: "missing user_type",
        method: "POST",
        path: "/v1/binds",
        headers: json,
        body: JSON.stringify({ trace_id: "m3", open_id: "o", product_key: "p" }),
        status: 400,
        field: "user_type",
      },
      ...[
        ["trace_id with a slash", { trace_id: "a/b" }, "trace_id"],
        ["trace_id with a space", { trace_id: "a b" }, "trace_id"],
        ["trace_id of 129 chars", { trace_id: "t".repeat(129) }, "trace_id"],
        ["empty trace_id", { trace_id: "" }, "trace_id"],
        ["numeric trace_id", { trace_id: 12345 }, "trace_id"],
        ["empty open_id", { open_id: "" }, "open_id"],
        ["open_id of 257 chars", { open_id: "o".repeat(257) }, "open_id"],
        ["numeric open_id", { open_id: 1 }, "open_id"],
        ["null device_name", { device_name: null }, "device_name"],
        ["empty iot_id", { iot_id: "" }, "iot_id"],
        ["server_event_request_id an object", { server_event_request_id: {} }, "server_event_request_id"],
        ["params a string", { params: "{}" }, "params"],
        ["params an array", { params: [] }, "params"],
        ["params null", { params: null }, "params"],
        ["unknown field", { device_nmae: "typo" }, "device_nmae"],
        ["__proto__ field", { ["__proto__"]: { polluted: true } }, "__proto__"],
      ].map(
        ([name, extra, field]): BadRequest => ({
          name: name as string,
          method: "POST",
          path: "/v1/binds",
          headers: json,
          body: jsonText({ ...bindBody("fld"), ...(extra as Record<string, unknown>) }),
          status: 400,
          code: "invalid_request",
          field: field as string,
        }),
      ),
      { name: "GET /v1/binds", method: "GET", path: "/v1/binds", status: 405, code: "method_not_allowed" },
      { name: "PUT /v1/binds", method: "PUT", path: "/v1/binds", headers: json, body: "{}", status: 405 },
      { name: "PATCH a bind", method: "PATCH", path: "/v1/binds/abc", headers: json, body: "{}", status: 405 },
      { name: "POST a bind", method: "POST", path: "/v1/binds/abc", headers: json, body: "{}", status: 405 },
      { name: "POST to events", method: "POST", path: "/v1/binds/abc/events", status: 405 },
      { name: "DELETE events", method: "DELETE", path: "/v1/binds/abc/events", status: 405 },
      { name: "unknown path", method: "GET", path: "/v2/binds", status: 404, code: "not_found" },
      { name: "below events", method: "GET", path: "/v1/binds/abc/events/more", status: 404 },
      { name: "trailing slash", method: "GET", path: "/v1/binds/", status: 404 },
      { name: "unknown trace", method: "GET", path: "/v1/binds/nobody-here", status: 404, field: "trace_id" },
      { name: "DELETE unknown trace", method: "DELETE", path: "/v1/binds/nobody-here", status: 404 },
      { name: "GET malformed id", method: "GET", path: "/v1/binds/bad!id", status: 400, field: "trace_id" },
      { name: "DELETE malformed id", method: "DELETE", path: "/v1/binds/bad!id", status: 400, field: "trace_id" },
      { name: "bad percent-encoding", method: "GET", path: "/v1/binds/%ZZ", status: 400, field: "trace_id" },
      { name: "encoded slash", method: "GET", path: "/v1/binds/a%2Fb/events", status: 400, field: "trace_id" },
      ...["abc", "-1", "61", "1e3", "0x10", "1.2345", "%20"].map(
        (wait): BadRequest => ({
          name: `wait=${wait}`,
          method: "GET",
          path: `/v1/binds/anything?wait=${wait}`,
          status: 400,
          field: "wait",
        }),
      ),
      ...["abc", "-1", "1.5", "9999999999999999", "1e3"].map(
        (after): BadRequest => ({
          name: `after=${after}`,
          method: "GET",
          path: `/v1/binds/anything?after=${after}`,
          status: 400,
          field: "after",
        }),
      ),
      ...["abc", "-1", "99999999999999999999"].map(
        (id): BadRequest => ({
          name: `last_event_id=${id}`,
          method: "GET",
          path: `/v1/binds/anything/events?last_event_id=${id}`,
          status: 400,
          field: "last_event_id",
        }),
      ),
    ];

    it.each(cases)("$name → $status", async (c) => {
      const init: RequestInit = { method: c.method };
      if (c.headers) init.headers = c.headers;
      if (c.body !== undefined) init.body = c.body;
      const res = await fetch(`${server.url}${c.path}`, init);
      const text = await res.text();
      expect({ status: res.status, text: text.slice(0, 200) }).toMatchObject({ status: c.status });
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      const body: unknown = JSON.parse(text);
      expect(isErrorBody(body)).toBe(true);
      if (c.code) expect(body).toMatchObject({ error: { code: c.code } });
      if (c.field) expect(body).toMatchObject({ error: { field: c.field } });
      if (c.status === 405) expect(res.headers.get("allow")).toBeTruthy();
    });

    it("POST is idempotent: 200 for the identical repeat, 409 for other parameters", async () => {
      const traceId = newTraceId("idem");
      server.simulator.setScript(traceId, scriptNever());
      const body = bindBody(traceId, { device_name: "lamp", params: { ssProductKey: "k", authCode: "c" } });
      const first = await postBind(server.url, body);
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({
        trace_id: traceId,
        events_url: `/v1/binds/${traceId}/events`,
        state: { status: "pending", version: 1, final: false },
      });
      expect(String(first.json.wait_url)).toMatch(new RegExp(`^/v1/binds/${traceId}\\?wait=\\d+&after=1$`));

      // The same parameters in another key order are the same registration.
      const reordered = Object.fromEntries(Object.entries(body).reverse());
      const again = await postBind(server.url, { ...reordered, params: { authCode: "c", ssProductKey: "k" } });
      expect(again.status).toBe(200);
      expect(again.json.trace_id).toBe(traceId);

      for (const changed of [
        { ...body, open_id: "someone-else" },
        { ...body, device_name: "fan" },
        { ...body, params: { ssProductKey: "k", authCode: "other" } },
        bindBody(traceId),
      ]) {
        const conflict = await postBind(server.url, changed);
        expect(conflict.status).toBe(409);
        expect(conflict.json).toMatchObject({ error: { code: "conflict", field: "trace_id" } });
      }
      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
    });

    it("a body of exactly 16 KiB is accepted; one byte more is 413 (also when chunked)", async () => {
      const traceId = newTraceId("limit");
      server.simulator.setScript(traceId, scriptNever());
      const base = JSON.stringify(bindBody(traceId, { params: { pad: "" } }));
      const exact = base.replace('"pad":""', `"pad":"${"x".repeat(16 * 1024 - base.length)}"`);
      expect(Buffer.byteLength(exact)).toBe(16 * 1024);
      const ok = await fetch(`${server.url}/v1/binds`, { method: "POST", headers: json, body: exact });
      expect(ok.status).toBe(201);
      await ok.body?.cancel();

      const over = `${exact.slice(0, -2)}x"}}`;
      const chunks = [over.slice(0, 8000), over.slice(8000)];
      const chunked = await fetch(`${server.url}/v1/binds`, {
        method: "POST",
        headers: json,
        body: new ReadableStream<Uint8Array>({
          pull(controller) {
            const next = chunks.shift();
            if (next === undefined) controller.close();
            else controller.enqueue(new TextEncoder().encode(next));
          },
        }),
        duplex: "half",
      } as RequestInit);
      expect(chunked.status).toBe(413);
      expect(await chunked.json()).toMatchObject({ error: { code: "payload_too_large" } });
      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
    });

    it("odd Last-Event-ID headers count as absent and never fail the stream", async () => {
      const traceId = newTraceId("lei");
      await register(server, traceId, scriptNever());
      const current = await waitForVersion(server, traceId, 2);
      for (const value of ["abc", "-1", "99999999999999999999", "1.5", " ", "9".repeat(4000), "\u00b2"]) {
        const reader = await sse(`${server.url}/v1/binds/${traceId}/events`, { "last-event-id": value });
        expect(reader.status).toBe(200);
        await reader.waitFor((r) => r.events.length >= 1, 5_000, `the current state (Last-Event-ID ${value})`);
        expect(reader.events[0]?.id).toBe(String(current.version));
        reader.close();
      }
      // A malformed header does not hide a valid query parameter.
      const reader = await sse(`${server.url}/v1/binds/${traceId}/events?last_event_id=${current.version}`, {
        "last-event-id": "abc",
      });
      await reader.waitFor((r) => r.frames.some(isPing), 5_000, "a ping");
      expect(reader.events).toHaveLength(0);
      // A valid 15-digit id beyond any version on a pending trace: a live stream with nothing to replay.
      const far = await sse(`${server.url}/v1/binds/${traceId}/events`, { "last-event-id": "999999999999999" });
      expect(far.status).toBe(200);
      await far.waitFor((r) => r.frames.some(isPing), 5_000, "a ping");
      expect(far.events).toHaveLength(0);
      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
    });

    it("a deeply nested params object within 16 KiB is answered without a 5xx", async () => {
      const traceId = newTraceId("deep");
      server.simulator.setScript(traceId, scriptNever());
      const depth = 5_000;
      const body = `${JSON.stringify(bindBody(traceId)).slice(0, -1)},"params":{"x":${"[".repeat(depth)}${"]".repeat(depth)}}}`;
      expect(Buffer.byteLength(body)).toBeLessThanOrEqual(16 * 1024);
      const res = await fetch(`${server.url}/v1/binds`, { method: "POST", headers: json, body });
      expect(res.status).toBeLessThan(500);
      if (res.status === 400) expect(await res.json()).toMatchObject({ error: { field: "params" } });
      else await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
    });
  });
});

// ============================================================================

describe("expiry", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ POLL_INTERVAL_MS: "200", BIND_TIMEOUT_MS: "1500" });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("expired: the deadline passes while the script never binds", async () => {
    const traceId = newTraceId("expire");
    const created = await register(server, traceId, scriptNever());
    const reader = await sse(new URL(created.events_url, server.url).href);
    await reader.waitFor((r) => r.ended, 10_000, "the end of the stream");
    expect(reader.error).toBeNull();
    const states = checkedStates(reader);
    expect(states[0]?.status).toBe("pending");
    const final = states.at(-1) as BindState;
    expect(final).toMatchObject({ status: "expired", final: true });
    expect(Date.parse(final.expires_at) - Date.parse(final.created_at)).toBe(1500);
    expect(Date.parse(final.updated_at)).toBeGreaterThanOrEqual(Date.parse(final.expires_at));
    expect(await getState(server, traceId)).toEqual(final);

    // Polling has stopped: no call is in flight, none starts after the deadline.
    await waitUntil(() => server.service.stats().drivers === 0, 5_000, "the driver to stop");
    const calls = server.simulator.getTrace(traceId).calls;
    expect(calls.length).toBeGreaterThanOrEqual(3);
    // A call may leave in the few milliseconds between the driver's deadline check and the request; none later.
    for (const call of calls) expect(call.startedAt).toBeLessThan(Date.parse(final.expires_at) + 100);
  });
});

// ============================================================================

describe("single flight", () => {
  const interval = 250;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ POLL_INTERVAL_MS: String(interval), HEARTBEAT_MS: "15000" });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("twenty EventSource watchers cost one call per interval, and each gets the final event once", async () => {
    const traceId = newTraceId("flight");
    const created = await register(server, traceId, scriptNever());
    const url = new URL(created.events_url, server.url).href;
    const watchers = Array.from({ length: 20 }, () => watchWithEventSource(url));
    await waitUntil(
      () => watchers.every((w) => w.received.length >= 1) && server.service.stats().watchers === 20,
      10_000,
      "twenty attached watchers",
    );

    // Watch a window of N intervals that starts at a call: N calls, give or take one.
    const windowIntervals = 10;
    const first = server.simulator.getTrace(traceId).calls.at(-1);
    if (!first) throw new Error("no call yet");
    const windowEnd = first.startedAt + windowIntervals * interval;
    await waitUntil(
      () => server.simulator.getTrace(traceId).calls.some((c) => c.startedAt >= windowEnd),
      windowIntervals * interval * 3,
      "a call after the window",
    );
    const inWindow = server.simulator
      .getTrace(traceId)
      .calls.filter((c) => c.startedAt >= first.startedAt && c.startedAt < windowEnd).length;
    const gaps = `calls in a window of ${windowIntervals} intervals: ${inWindow}`;
    expect(inWindow, gaps).toBeGreaterThanOrEqual(windowIntervals - 1);
    expect(inWindow, gaps).toBeLessThanOrEqual(windowIntervals + 1);

    server.simulator.setScript(traceId, scriptBoundAfter(0));
    await waitUntil(
      () => watchers.every((w) => w.es.readyState === w.es.CLOSED),
      15_000,
      "every EventSource to stop after the final event",
    );
    const report = server.simulator.getTrace(traceId);
    expect(report.maxInFlight).toBe(1);
    expect(report.minStartGapMs).toBeGreaterThanOrEqual(0.8 * interval);
    expect(report.calls.at(-1)?.outcome).toBe("bound");

    const finalVersion = (await getState(server, traceId)).version;
    for (const w of watchers) {
      expect(w.received.filter((e) => e.type === "bound").map((e) => e.id)).toEqual([String(finalVersion)]);
      expect(w.requests.at(-1)).toEqual({ lastEventId: String(finalVersion), status: 204 });
      expect(w.requests).toHaveLength(2);
    }
    // The trace was polled once for everybody: total calls over the whole run match its duration.
    const span = (report.calls.at(-1)?.startedAt ?? 0) - (report.calls[0]?.startedAt ?? 0);
    expect(report.callCount - 1).toBeLessThanOrEqual(Math.ceil(span / (0.8 * interval)));
  });
});

// ============================================================================

function countResources(): { timeouts: number; sockets: number } {
  const info = process.getActiveResourcesInfo();
  return {
    timeouts: info.filter((r) => r === "Timeout").length,
    sockets: info.filter((r) => r === "TCPSocketWrap").length,
  };
}

describe("no leaks", () => {
  const linger = 300;
  let server: TestServer;
  let agent: Agent;
  beforeAll(async () => {
    server = await startTestServer({
      POLL_INTERVAL_MS: "200",
      POLL_LINGER_MS: String(linger),
      HEARTBEAT_MS: "15000",
    });
    agent = new Agent({ keepAlive: false, maxSockets: 2_000 });
  });
  afterAll(async () => {
    agent?.destroy();
    await server?.stop();
  });

  interface RawStream {
    readonly req: ClientRequest;
    readonly res: IncomingMessage;
    text: string;
  }

  function openRaw(path: string): Promise<RawStream> {
    return new Promise((resolve, reject) => {
      const req = request(`${server.url}${path}`, { agent, headers: { accept: "text/event-stream" } }, (res) => {
        const stream: RawStream = { req, res, text: "" };
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (stream.text.length < 4096) stream.text += chunk;
        });
        // A socket destroyed on purpose ends the response with an abort error; nothing to report.
        res.on("error", () => {});
        resolve(stream);
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("1,000 streams come and go without leaving watchers, hubs, timers or sockets behind", async () => {
    // Warm up once so lazily created resources (the TOP client's keep-alive pool) are in the baseline.
    const warm = newTraceId("warm");
    await register(server, warm, scriptBoundAfter(0));
    await waitUntil(async () => (await getState(server, warm)).final, 5_000, "the warm-up bind");
    await waitUntil(() => server.service.stats().hubs === 0, 5_000, "the warm-up hub to go");
    const baseline = countResources();

    const traceId = newTraceId("leak");
    await register(server, traceId, scriptNever());
    const streams: RawStream[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const opened = await Promise.all(Array.from({ length: 100 }, () => openRaw(`/v1/binds/${traceId}/events`)));
      for (const s of opened) expect(s.res.statusCode).toBe(200);
      streams.push(...opened);
    }
    await waitUntil(
      () => server.streams.size === 1_000 && server.service.stats().watchers === 1_000,
      20_000,
      "1,000 open streams and watchers",
    );
    await waitUntil(() => streams.every((s) => s.text.includes("event: pending")), 10_000, "every current state");
    expect(server.service.stats()).toMatchObject({ hubs: 1, watchers: 1_000, drivers: 1 });

    // Every client vanishes at once, without a word.
    for (const s of streams) s.req.destroy();
    await waitUntil(
      () => server.streams.size === 0 && server.service.stats().watchers === 0,
      20_000,
      "every stream and watcher to be released",
    );
    // POLL_LINGER_MS after the last one left, the trace is no longer polled and its hub is gone.
    await waitUntil(
      () => {
        const stats = server.service.stats();
        return stats.hubs === 0 && stats.watchers === 0 && stats.drivers === 0 && stats.leases === 0;
      },
      linger + 5_000,
      "service stats all zero",
    );
    expect(server.service.stats()).toEqual({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 });
    expect(server.simulator.getTrace(traceId).maxInFlight).toBe(1);

    // Timers and sockets return to the baseline (a few of the TOP client's keep-alive ones may come and go).
    await waitUntil(
      () => {
        const now = countResources();
        return now.timeouts <= baseline.timeouts + 3 && now.sockets <= baseline.sockets + 4 ? now : null;
      },
      10_000,
      `active resources back near ${JSON.stringify(baseline)}`,
    );
    const calls = server.simulator.getTrace(traceId).callCount;
    await waitUntil(() => server.simulator.getTrace(traceId).inFlight === 0, 2_000, "no call in flight");
    expect(server.simulator.getTrace(traceId).callCount).toBe(calls);
  }, 60_000);
});

// ============================================================================

describe("MAX_STREAMS", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ MAX_STREAMS: "3", HEARTBEAT_MS: "15000" });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("refuses the fourth stream with 503 and Retry-After, and accepts one again after a stream closes", async () => {
    const traceId = newTraceId("cap");
    const created = await register(server, traceId, scriptNever());
    const url = new URL(created.events_url, server.url).href;
    const open = [await sse(url), await sse(url), await sse(url)];
    for (const reader of open) expect(reader.status).toBe(200);
    expect(server.streams.size).toBe(3);

    const fourth = await sse(url);
    expect(fourth.status).toBe(503);
    expect(Number(fourth.headers.get("retry-after"))).toBeGreaterThan(0);
    await fourth.done;
    const body: unknown = JSON.parse(fourth.text);
    expect(isErrorBody(body)).toBe(true);
    expect(body).toMatchObject({ error: { code: "too_many_streams" } });
    // Long-poll and state reads are not streams: still served.
    expect((await getState(server, traceId)).trace_id).toBe(traceId);

    open[0]?.close();
    await waitUntil(() => server.streams.size === 2, 5_000, "the closed stream to be released");
    const fifth = await sse(url);
    expect(fifth.status).toBe(200);
    await fifth.waitFor((r) => r.events.length >= 1, 5_000, "the current state");
  });
});

// ============================================================================

describe("graceful stop", () => {
  it("ends open streams with a retry line, then closes, and resolves promptly", async () => {
    const server = await startTestServer({ HEARTBEAT_MS: "15000" });
    let stopped = false;
    try {
      const traceId = newTraceId("stop");
      const created = await register(server, traceId, scriptNever());
      const url = new URL(created.events_url, server.url).href;
      const readers = [await sse(url), await sse(url), await sse(url)];
      for (const reader of readers) await reader.waitFor((r) => r.events.length >= 1, 5_000, "the current state");

      const started = Date.now();
      await server.stop();
      stopped = true;
      expect(Date.now() - started).toBeLessThan(3_000);

      for (const reader of readers) {
        await reader.done;
        expect(reader.error).toBeNull();
        const last = reader.frames.at(-1);
        expect(last?.retry).toBeGreaterThanOrEqual(500);
        expect(last?.retry).toBeLessThanOrEqual(2_000);
      }
      expect(server.streams.size).toBe(0);
      expect(server.service.stats()).toEqual({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 });
      await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
    } finally {
      if (!stopped) await server.stop();
    }
  });
});
