// The edge build end to end inside workerd: the Worker of wrangler.toml, one
// BindObject per trace, the budget object, and the TOP gateway double served from
// Node over loopback HTTP (test/edge/gateway-double.setup.ts), which verifies every
// signature and counts the calls it gets per trace.
import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { createApiDescription } from "../../src/http/api-description.js";
import type { DurableObjectStateApi, EdgeEnv } from "../../src/runtime/edge-env.js";
import worker, { type BindObject } from "../../src/runtime/worker.js";
import { createTopClient } from "../../src/top/client.js";
import { openSse, type SseReader } from "../support/sse-reader.js";
import { CHECKBIND_SUCCESS_KEY, type CheckbindCall, checkbindRequest } from "../support/top-signing.js";
import { EDGE_TEST_VARS } from "./constants.js";
import { BASE, env, gateway, newTraceId, postBind, registration, waitFor, workerFetch } from "./support.js";

const POLL_INTERVAL_MS = Number(EDGE_TEST_VARS.POLL_INTERVAL_MS);

function watch(traceId: string, headers: Record<string, string> = {}, query = ""): Promise<SseReader> {
  return openSse(`${BASE}/v1/binds/${traceId}/events${query}`, {
    headers,
    fetch: (url, init) => SELF.fetch(url, init),
  });
}

function objectOf(traceId: string) {
  return env.BINDS.get(env.BINDS.idFromName(traceId));
}

/** Watchers attached in the trace's object, and whether it runs a poll driver. */
function statsOf(traceId: string) {
  return runInDurableObject(objectOf(traceId), (instance: BindObject) => instance.stats());
}

async function registered(traceId: string, script: unknown): Promise<BindState> {
  await gateway.script(traceId, script);
  const res = await postBind(registration(traceId));
  expect(res.status).toBe(201);
  return ((await res.json()) as { state: BindState }).state;
}

async function stateOf(traceId: string): Promise<BindState> {
  const res = await workerFetch(`/v1/binds/${traceId}`);
  expect(res.status).toBe(200);
  return (await res.json()) as BindState;
}

describe("edge: registration through the Worker", () => {
  it("answers 201 for a new trace, 200 for the same parameters, 409 for different ones", async () => {
    const traceId = newTraceId("register");
    await gateway.script(traceId, { outcome: "never" });
    const first = await postBind(registration(traceId));
    expect(first.status).toBe(201);
    const body = (await first.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      trace_id: traceId,
      state: { trace_id: traceId, status: "pending", final: false, version: 1 },
      events_url: `/v1/binds/${traceId}/events`,
      wait_url: `/v1/binds/${traceId}?wait=30&after=1`,
    });
    const again = await postBind(registration(traceId));
    expect(again.status).toBe(200);
    expect(((await again.json()) as { state: BindState }).state.created_at).toBe((body.state as BindState).created_at);
    const conflict = await postBind(registration(traceId, { device_name: "another" }));
    expect(conflict.status).toBe(409);
    expect(await conflict.json()).toMatchObject({ error: { code: "conflict", field: "trace_id" } });
    await workerFetch(`/v1/binds/${traceId}`, { method: "DELETE" });
  });

  it("validates in the Worker with the shared rules before any object is involved", async () => {
    const missing = await postBind({ trace_id: "t-1", open_id: "o", user_type: "ilop" });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ error: { code: "invalid_request", field: "product_key" } });

    const badId = await postBind(registration("no spaces allowed"));
    expect(badId.status).toBe(400);
    expect(await badId.json()).toMatchObject({ error: { field: "trace_id" } });

    expect((await postBind("{not json")).status).toBe(400);
    expect((await postBind(registration("t-2"), { "content-type": "text/plain" })).status).toBe(415);
    const huge = await postBind(registration("t-3", { params: { blob: "x".repeat(17 * 1024) } }));
    expect(huge.status).toBe(413);
    expect(await huge.json()).toMatchObject({ error: { code: "payload_too_large" } });

    const wrongMethod = await workerFetch("/v1/binds", { method: "GET" });
    expect(wrongMethod.status).toBe(405);
    expect((await workerFetch("/v1/binds/bad%20id/events")).status).toBe(400);
  });

  it("answers 404 for an unknown trace on every trace route, has no /metrics, serves /v1/client.js", async () => {
    const unknown = newTraceId("unknown");
    for (const [path, method] of [
      [`/v1/binds/${unknown}/events`, "GET"],
      [`/v1/binds/${unknown}?wait=1`, "GET"],
      [`/v1/binds/${unknown}`, "DELETE"],
    ] as const) {
      const res = await workerFetch(path, { method });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(await res.json()).toMatchObject({ error: { code: "not_found" } });
    }
    expect((await workerFetch("/metrics")).status).toBe(404);
    const client = await workerFetch("/v1/client.js");
    expect(client.status).toBe(200);
    expect(client.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(await client.text()).toContain("export function watchBind");
    expect(await (await workerFetch("/healthz")).json()).toEqual({ status: "ok", mode: "live" });
  });
});

describe("edge: watching", () => {
  it("fans one poll out to several streams: single flight at the gateway double", async () => {
    const traceId = newTraceId("fanout");
    await registered(traceId, { outcome: "bound", after: 4 });
    const streams = await Promise.all([watch(traceId), watch(traceId), watch(traceId), watch(traceId)]);
    for (const stream of streams) {
      expect(stream.status).toBe(200);
      expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(stream.headers.get("cache-control")).toMatch(/no-cache/);
      expect(stream.headers.get("x-accel-buffering")).toBe("no");
    }
    for (const stream of streams) {
      await stream.done;
      expect(stream.frames[0]?.retry).toBe(1000);
      const last = stream.events.at(-1);
      expect(last?.event).toBe("bound");
      expect(JSON.parse(last?.data ?? "{}")).toMatchObject({ status: "bound", final: true, attempts: 5 });
      const ids = stream.events.map((e) => Number(e.id));
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
    }
    const report = await gateway.trace(traceId);
    expect(report.call_count).toBe(5);
    expect(report.max_in_flight).toBe(1);
    expect(report.min_start_gap_ms).toBeGreaterThanOrEqual(Math.ceil(0.8 * POLL_INTERVAL_MS));
  });

  it("ends a failed bind (terminal ret_code) and a rejected one with their final events", async () => {
    const failedId = newTraceId("failed");
    await registered(failedId, { outcome: "failed", after: 1, ret_code: 1001, message: "device offline" });
    const rejectedId = newTraceId("rejected");
    await registered(rejectedId, { outcome: "rejected", after: 0, code: 41, sub_code: "isv.invalid-parameter" });
    const [failed, rejected] = await Promise.all([watch(failedId), watch(rejectedId)]);
    await Promise.all([failed.done, rejected.done]);
    expect(failed.events.at(-1)?.event).toBe("failed");
    expect(failed.states<BindState>().at(-1)).toMatchObject({
      status: "failed",
      upstream: { ret_code: 1001, message: "device offline" },
    });
    expect(rejected.states<BindState>().at(-1)).toMatchObject({
      status: "failed",
      error: { code: "upstream_rejected" },
    });
  });

  it("keeps the answer's trace_id, the gateway's EagleEye id, as upstream.eagleeye_id without new versions", async () => {
    const traceId = newTraceId("eagleeye");
    await registered(traceId, { outcome: "bound", after: 2 });
    const stream = await watch(traceId);
    await stream.done;
    const calls = (await gateway.trace(traceId)).calls;
    expect(calls).toHaveLength(3);
    const ids = calls.map((call) => call.eagleeye_id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}\d{13}\d{4}d[0-9a-f]{4}$/);
    // v1 registered, v2 the first answer, v3 bound: the second answer's new id made no version.
    const final = stream.states<BindState>().at(-1)!;
    expect(final).toMatchObject({ status: "bound", version: 3, attempts: 3 });
    expect(final.upstream?.eagleeye_id).toBe(ids[2]);
    expect(final.upstream?.eagleeye_id).not.toBe(traceId);
    expect((await stateOf(traceId)).upstream?.eagleeye_id).toBe(ids[2]);
  });

  it("expires a bind that never binds at its deadline", async () => {
    const traceId = newTraceId("expired");
    const initial = await registered(traceId, { outcome: "never" });
    const stream = await watch(traceId);
    await stream.waitFor((r) => r.ended, Number(EDGE_TEST_VARS.BIND_TIMEOUT_MS) + 5_000, "the final event");
    const last = stream.states<BindState>().at(-1);
    expect(last).toMatchObject({ status: "expired", final: true });
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(initial.expires_at));
  });

  it("answers 204 after the final event, and a late watcher gets it from storage without a call", async () => {
    const traceId = newTraceId("late");
    await registered(traceId, { outcome: "bound", after: 0 });
    const first = await watch(traceId);
    await first.done;
    const final = first.states<BindState>().at(-1)!;
    expect(final.status).toBe("bound");
    const calls = (await gateway.trace(traceId)).call_count;

    const late = await watch(traceId);
    await late.done;
    expect(late.states<BindState>()).toEqual([final]);

    const resumed = await watch(traceId, { "last-event-id": String(final.version) });
    expect(resumed.status).toBe(204);
    const byQuery = await watch(traceId, {}, `?last_event_id=${final.version}`);
    expect(byQuery.status).toBe(204);
    const longPoll = await workerFetch(`/v1/binds/${traceId}?wait=5&after=${final.version}`);
    expect(await longPoll.json()).toEqual(final);
    expect((await gateway.trace(traceId)).call_count).toBe(calls);
  });

  it("resumes from Last-Event-ID: a reconnect gets only newer events", async () => {
    const traceId = newTraceId("resume");
    await registered(traceId, { outcome: "trouble", kind: "http_error", count: 3 });
    const first = await watch(traceId);
    await first.waitFor((r) => r.events.some((e) => e.id === "2"), 10_000, "version 2");
    first.close();
    const seen = first.states<BindState>().find((s) => s.version === 2)!;
    expect(seen.error).toMatchObject({ code: "upstream_unavailable" });

    const second = await watch(traceId, { "last-event-id": "2" });
    expect(second.status).toBe(200);
    await second.done;
    const versions = second.states<BindState>().map((s) => s.version);
    expect(Math.min(...versions)).toBeGreaterThan(2);
    expect(second.states<BindState>().at(-1)).toMatchObject({ status: "bound", error: null });
  });

  it("long-polls: holds until the version passes `after`", async () => {
    const traceId = newTraceId("longpoll");
    await registered(traceId, { outcome: "bound", after: 1 });
    const res = await workerFetch(`/v1/binds/${traceId}?wait=10&after=1`);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const state = (await res.json()) as BindState;
    expect(state.version).toBeGreaterThan(1);
  });

  it("cancels on DELETE: watchers get the final `cancelled` event", async () => {
    const traceId = newTraceId("cancel");
    await registered(traceId, { outcome: "never" });
    const stream = await watch(traceId);
    await stream.waitFor((r) => r.events.length >= 1, 5_000, "the current state");
    const res = await workerFetch(`/v1/binds/${traceId}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "cancelled", final: true });
    await stream.done;
    expect(stream.events.at(-1)?.event).toBe("cancelled");
  });
});

describe("edge: the trace's Durable Object", () => {
  it("detaches a stream whose client went away (request signal / stream cancel)", async () => {
    const traceId = newTraceId("disconnect");
    await registered(traceId, { outcome: "never" });
    const a = await watch(traceId);
    const b = await watch(traceId);
    await a.waitFor((r) => r.events.length >= 1, 5_000, "the current state");
    await waitFor(async () => (await statsOf(traceId)).watchers === 2, "two watchers in the object");
    a.close();
    await waitFor(async () => (await statsOf(traceId)).watchers === 1, "the closed stream to be detached");
    b.close();
    await waitFor(async () => (await statsOf(traceId)).watchers === 0, "both streams detached");
    await workerFetch(`/v1/binds/${traceId}`, { method: "DELETE" });
  });

  it("resumes polling from its alarm after the object was evicted during the linger", async () => {
    const traceId = newTraceId("evicted");
    await registered(traceId, { outcome: "bound", after: 3 });
    const stub = objectOf(traceId);
    // The alarm is armed from the POST on: nothing else would wake an evicted object.
    expect(
      await runInDurableObject(stub, (_i: unknown, state: DurableObjectStateApi) => state.storage.getAlarm()),
    ).not.toBeNull();
    // Every instance goes (memory, timers, the poll driver); storage and the alarm stay.
    // (evictDurableObject would first wait for the driver's timers to drain.)
    await abortAllDurableObjects();
    const frozen = (await gateway.trace(traceId)).call_count;
    await new Promise((resolve) => setTimeout(resolve, 5 * POLL_INTERVAL_MS));
    expect((await gateway.trace(traceId)).call_count).toBe(frozen);
    expect(frozen).toBeLessThan(4);

    expect(await runDurableObjectAlarm(objectOf(traceId))).toBe(true);
    await waitFor(async () => (await gateway.trace(traceId)).call_count >= 4, "polling to resume");
    await waitFor(async () => (await stateOf(traceId)).status === "bound", "the bind to complete");
    const report = await gateway.trace(traceId);
    expect(report.max_in_flight).toBe(1);
    expect(report.min_start_gap_ms).toBeGreaterThanOrEqual(Math.ceil(0.8 * POLL_INTERVAL_MS));
  });

  it("deletes its storage once the final state's retention is over", async () => {
    const traceId = newTraceId("ttl");
    await registered(traceId, { outcome: "bound", after: 0 });
    const stream = await watch(traceId);
    await stream.done;
    const stub = objectOf(traceId);
    const alarmAt = await runInDurableObject(stub, (_i: unknown, state: DurableObjectStateApi) =>
      state.storage.getAlarm(),
    );
    // Final: the alarm waits for the end of the retention (BIND_TIMEOUT_MS + RESULT_TTL_MS from registration).
    expect(alarmAt).toBeGreaterThan(Date.now() + Number(EDGE_TEST_VARS.RESULT_TTL_MS) / 2);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, (alarmAt ?? 0) - Date.now() + 50)));
    await runDurableObjectAlarm(stub);
    const left = await runInDurableObject(stub, async (_i: unknown, state: DurableObjectStateApi) => ({
      trace: await state.storage.get("object:trace-id"),
      alarm: await state.storage.getAlarm(),
    }));
    expect(left).toEqual({ trace: undefined, alarm: null });
    expect((await workerFetch(`/v1/binds/${traceId}`)).status).toBe(404);
  });
});

describe("edge: the deployment-wide budget", () => {
  it("holds every trace's object off during a TOP rate-limit ban", async () => {
    const statsBefore = (await (await fetch(`${gateway.url()}/sim/stats`)).json()) as {
      rejected: { banned?: number };
    };
    const banned = newTraceId("ban");
    const other = newTraceId("bystander");
    await gateway.script(banned, { outcome: "trouble", kind: "ban", count: 1, ban_seconds: 2 });
    await gateway.script(other, { outcome: "bound", after: 10 });
    await postBind(registration(banned));
    await waitFor(async () => (await gateway.trace(banned)).call_count >= 1, "the ban");
    await postBind(registration(other));
    const streams = await Promise.all([watch(banned), watch(other)]);
    await Promise.all(streams.map((s) => s.done));
    expect(streams.map((s) => s.events.at(-1)?.event)).toEqual(["bound", "bound"]);

    const statsAfter = (await (await fetch(`${gateway.url()}/sim/stats`)).json()) as {
      rejected: { banned?: number };
    };
    // Polling at 100 ms through a 2 s ban would be ~20 refused calls; the budget object holds
    // everyone off once the first answer is in (one call may race the announcement).
    expect((statsAfter.rejected.banned ?? 0) - (statsBefore.rejected.banned ?? 0)).toBeLessThanOrEqual(1);
    const banCall = (await gateway.trace(banned)).calls[0]!;
    const banEnd = Date.parse(banCall.ended_at!) + 2_000;
    const bystander = await gateway.trace(other);
    const during = bystander.calls.filter(
      (c) => Date.parse(c.started_at) > Date.parse(banCall.ended_at!) && Date.parse(c.started_at) < banEnd,
    );
    expect(during).toEqual([]);
  });
});

/** The Worker's answer to `path` under other vars: each env object gets a Worker of its own. */
function fetchWith(vars: Record<string, string | undefined>, path: string, init?: RequestInit): Promise<Response> {
  const edited: Record<string, unknown> = { ...env };
  for (const [name, value] of Object.entries(vars)) {
    if (value === undefined) delete edited[name];
    else edited[name] = value;
  }
  return worker.fetch(new Request(`${BASE}${path}`, init), edited as EdgeEnv, {});
}

describe("edge: the API description", () => {
  it("answers /openapi.json, /docs and its script itself, never through a trace's Durable Object", async () => {
    const refuse = () => {
      throw new Error("the API description must not reach a Durable Object");
    };
    const noObjects = { ...env, BINDS: { idFromName: refuse, get: refuse } } as EdgeEnv;
    const answer = (path: string) => worker.fetch(new Request(`${BASE}${path}`), noObjects, {});
    const doc = await answer("/openapi.json");
    expect(doc.status).toBe(200);
    expect(doc.headers.get("content-type")).toMatch(/^application\/json/);
    // The same document as on Node: both are built from the same schemas.
    expect(await doc.json()).toEqual(JSON.parse(JSON.stringify(createApiDescription())));
    const page = await answer("/docs");
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('src="/docs/scalar.js"');
    // The reference page's script, from the build's assets (ASSETS), not from a CDN.
    const script = await answer("/docs/scalar.js");
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(await script.text()).toContain("createApiReference");
  });
});

const noCredentials = { TOP_APP_KEY: undefined, TOP_APP_SECRET: undefined };

describe("edge: registration quota", () => {
  it("answers 429 with Retry-After past REGISTRATIONS_PER_MINUTE for one key while another registers; a repeat does not count", async () => {
    const vars = { API_KEYS: "edge-quota-key-1,edge-quota-key-2", REGISTRATIONS_PER_MINUTE: "2" };
    const post = (traceId: string, key: string) =>
      fetchWith(vars, "/v1/binds", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify(registration(traceId)),
      });
    const [a, b, c] = [newTraceId("quota-a"), newTraceId("quota-b"), newTraceId("quota-c")];
    expect((await post(a, "edge-quota-key-1")).status).toBe(201);
    expect((await post(b, "edge-quota-key-1")).status).toBe(201);
    // The idempotent repeat is answered, and does not count.
    expect((await post(a, "edge-quota-key-1")).status).toBe(200);
    const refused = await post(c, "edge-quota-key-1");
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ error: { code: "rate_limited" } });
    expect((await post(c, "edge-quota-key-2")).status).toBe(201);
  });
});

describe("edge: configuration and simulator mode", () => {
  it("answers every request with a 503 misconfigured that names a bad variable", async () => {
    const res = await fetchWith({ POLL_INTERVAL_MS: "fast" }, "/healthz");
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({
      status: "misconfigured",
      error: { code: "misconfigured", field: "POLL_INTERVAL_MS" },
    });
  });

  it("without TOP credentials and SIMULATOR=on: 503 misconfigured on every route, naming the secrets; no call", async () => {
    const traceId = newTraceId("no-creds");
    for (const [path, init] of [
      ["/healthz", undefined],
      ["/", undefined],
      ["/sim/stats", undefined],
      [`/v1/binds/${traceId}`, undefined],
      [
        "/v1/binds",
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(registration(traceId)),
        },
      ],
    ] as const) {
      const res = await fetchWith(noCredentials, path, init);
      expect(res.status, path).toBe(503);
      const body = (await res.json()) as { error: { code: string; message: string; field: string } };
      expect(body.error.code).toBe("misconfigured");
      expect(body.error.field).toBe("TOP_APP_KEY");
      expect(body.error.message).toContain("TOP_APP_SECRET");
    }
    // Nothing was registered, so nothing is polled.
    expect((await gateway.trace(traceId)).call_count).toBe(0);
    expect((await workerFetch(`/v1/binds/${traceId}`)).status).toBe(404);
  });

  it("refuses SIMULATOR=on with credentials, and open access without ALLOW_OPEN_ACCESS=true", async () => {
    const ambiguous = await fetchWith({ SIMULATOR: "on" }, "/v1/binds/x");
    expect(ambiguous.status).toBe(503);
    expect(await ambiguous.json()).toMatchObject({ error: { code: "misconfigured", field: "SIMULATOR" } });
    const open = await fetchWith({ ALLOW_OPEN_ACCESS: undefined }, "/healthz");
    expect(open.status).toBe(503);
    expect(await open.json()).toMatchObject({ status: "misconfigured", error: { field: "API_KEYS" } });
    // With API keys the same deployment runs live.
    const keyed = await fetchWith({ ALLOW_OPEN_ACCESS: undefined, API_KEYS: "edge-key" }, "/healthz");
    expect(await keyed.json()).toEqual({ status: "ok", mode: "live" });
  });

  it("says its mode in /healthz", async () => {
    expect(await (await workerFetch("/healthz")).json()).toEqual({ status: "ok", mode: "live" });
    const simulated = await fetchWith({ ...noCredentials, SIMULATOR: "on" }, "/healthz");
    expect(await simulated.json()).toEqual({ status: "ok", mode: "simulator" });
  });

  it("with SIMULATOR=on serves the demo page and forwards /sim/* to the simulator object", async () => {
    const simulatorEnv = { ...noCredentials, SIMULATOR: "on" };
    const page = await fetchWith(simulatorEnv, "/");
    expect(page.status).toBe(200);
    // The build's dist/assets/demo.html, read through ASSETS as Node reads it from disk.
    const html = await page.text();
    expect(html).toContain("<!doctype html>");
    expect(html).toContain("<title>bindwatch demo (edge)</title>");
    expect(html).toContain('const client = import("/v1/client.js");');
    const stats = await fetchWith(simulatorEnv, "/sim/stats");
    expect(stats.status).toBe(200);
    expect(await stats.json()).toMatchObject({ requests: expect.any(Number) });
    // With credentials there is no simulator: no demo page, no controls.
    expect((await workerFetch("/")).status).toBe(404);
    expect((await workerFetch("/sim/stats")).status).toBe(404);
  });

  it("answers other TOP clients at /sim/router/rest with the credentials the demo page shows", async () => {
    const simulatorEnv: Record<string, unknown> = { ...env, SIMULATOR: "on" };
    delete simulatorEnv.TOP_APP_KEY;
    delete simulatorEnv.TOP_APP_SECRET;
    const inSimulatorMode = (request: Request) => worker.fetch(request, simulatorEnv as EdgeEnv, {});
    const html = await (await inSimulatorMode(new Request(`${BASE}/`))).text();
    const shown = (id: string) => new RegExp(`id="${id}"[^>]*value="([^"]*)"`).exec(html)?.[1];
    const credentials = { appKey: shown("sandbox-app-key") ?? "", appSecret: shown("sandbox-app-secret") ?? "" };
    expect(credentials).toEqual(await env.TOP_SIMULATOR.get(env.TOP_SIMULATOR.idFromName("simulator")).credentials());

    const traceId = newTraceId("sandbox");
    const call = async (overrides: Partial<CheckbindCall> = {}) => {
      const request = checkbindRequest(`${BASE}/sim/router/rest`, { ...credentials, traceId, ...overrides });
      const res = await inSimulatorMode(request);
      expect(res.status).toBe(200);
      return (await res.json()) as Record<string, Record<string, unknown>>;
    };
    for (const signMethod of ["md5", "hmac-sha256"] as const) {
      const answer = (await call({ signMethod }))[CHECKBIND_SUCCESS_KEY];
      expect(answer).toMatchObject({ result: true, ret_value: false, ret_code: 0 });
      expect(answer?.trace_id).toMatch(/^[0-9a-f]{8}\d{13}\d{4}d[0-9a-f]{4}$/);
    }
    expect((await call({ appSecret: "forged-secret" })).error_response).toMatchObject({ code: 25 });
    expect((await call({ at: Date.now() - 11 * 60_000 })).error_response).toMatchObject({ code: 31 });
    // The scripts of /sim apply: it is the simulator the trace objects poll.
    await inSimulatorMode(
      new Request(`${BASE}/sim/traces/${traceId}/script`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ outcome: "bound", after: 0 }),
      }),
    );
    expect((await call())[CHECKBIND_SUCCESS_KEY]).toMatchObject({ result: true, ret_value: true });
    // With TOP credentials there is no sandbox either.
    expect((await workerFetch("/sim/router/rest", { method: "POST" })).status).toBe(404);
  });

  it("signs and parses simulator calls as in production, through the simulator object's stub", async () => {
    const simulator = env.TOP_SIMULATOR.get(env.TOP_SIMULATOR.idFromName("simulator"));
    const { appKey, appSecret } = await simulator.credentials();
    const client = createTopClient({
      gatewayUrl: "http://top-simulator.internal/router/rest",
      appKey,
      appSecret,
      signMethod: "hmac",
      timeoutMs: 5_000,
      terminalRetCodes: new Set(),
      fetch: (input, init) => simulator.fetch(new Request(input, init)),
    });
    // The default script: a few pending answers, then bound.
    expect(await client.checkbind(registration(newTraceId("sim")))).toMatchObject({ kind: "waiting" });
    const forged = createTopClient({
      gatewayUrl: "http://top-simulator.internal/router/rest",
      appKey,
      appSecret: "forged",
      signMethod: "md5",
      timeoutMs: 5_000,
      terminalRetCodes: new Set(),
      fetch: (input, init) => simulator.fetch(new Request(input, init)),
    });
    expect(await forged.checkbind(registration(newTraceId("sim")))).toMatchObject({ kind: "rejected" });
  });
});

describe("edge: webhooks from the trace's Durable Object", () => {
  it("delivers the final, retrying on the backoff with one webhook-id, the alarm keeping the retries", async () => {
    const traceId = newTraceId("webhook");
    await gateway.failWebhooks(traceId, 2);
    await registered(traceId, { outcome: "bound", after: 1 });
    const attempts = await waitFor(
      async () => {
        const got = await gateway.webhooks(traceId);
        return got.some((a) => a.answered === 200) ? got : null;
      },
      "the delivery after two failures",
      15_000,
    );
    expect(attempts.map((a) => a.answered)).toEqual([500, 500, 200]);
    expect(attempts.every((a) => a.verified && a.type === "bind.bound")).toBe(true);
    expect(new Set(attempts.map((a) => a.id)).size).toBe(1);
    const [first, second, third] = attempts.map((a) => Date.parse(a.at));
    // WEBHOOK_RETRY_MS 300, then about twice that (±20 %).
    expect((second ?? 0) - (first ?? 0)).toBeGreaterThanOrEqual(240);
    expect((third ?? 0) - (second ?? 0)).toBeGreaterThanOrEqual(480);
    // Nothing is left to deliver: the object's alarm is back to the trace's retention.
    const state = await stateOf(traceId);
    expect(state.status).toBe("bound");
  });

  it("keeps retrying from its alarm after the object was evicted", async () => {
    const traceId = newTraceId("webhook-evicted");
    await gateway.failWebhooks(traceId, 1);
    await registered(traceId, { outcome: "bound", after: 0 });
    await waitFor(async () => (await gateway.webhooks(traceId)).length === 1, "the failed attempt");
    // Eviction drops the object's timers; what is stored and its alarm remain.
    await abortAllDurableObjects();
    await waitFor(
      async () => {
        const alarm = await runInDurableObject(objectOf(traceId), (_i: BindObject, s: DurableObjectStateApi) =>
          s.storage.getAlarm(),
        );
        if (alarm !== null && alarm <= Date.now()) await runDurableObjectAlarm(objectOf(traceId));
        return (await gateway.webhooks(traceId)).some((a) => a.answered === 200);
      },
      "the retry from the alarm",
      15_000,
    );
    const attempts = await gateway.webhooks(traceId);
    expect(attempts.map((a) => a.answered)).toEqual([500, 200]);
    expect(new Set(attempts.map((a) => a.id)).size).toBe(1);
  });
});
