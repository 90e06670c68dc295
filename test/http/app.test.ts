import { afterEach, describe, expect, it } from "vitest";
import type { CheckbindOutcome } from "../../src/domain/outcome.js";
import { createWatchToken, verifyWatchToken } from "../../src/http/access.js";
import { type AccessConfig, createApp } from "../../src/http/app.js";
import { createStreamRegistry } from "../../src/http/sse.js";
import type { CheckbindClient } from "../../src/top/client.js";
import { createBindService } from "../../src/watch/bind-service.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { BOUND, WAITING } from "../support/outcomes.js";

const bound = BOUND;
const waiting = WAITING;

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function makeApp(access?: AccessConfig, answer: () => CheckbindOutcome = () => waiting, maxStreams = 100) {
  const coordinator = createMemoryCoordinator({ retentionMs: 60_000, resultTtlMs: 30_000, upstreamQps: 100 });
  const client: CheckbindClient = { checkbind: async () => answer() };
  const service = createBindService({
    coordinator,
    client,
    config: { pollIntervalMs: 100, pollLingerMs: 1_000, bindTimeoutMs: 30_000, resultTtlMs: 30_000 },
  });
  stops.push(async () => {
    await service.shutdown();
    await coordinator.close();
  });
  const streams = createStreamRegistry();
  const app = createApp({
    service,
    streams,
    mode: "live",
    config: { heartbeatMs: 60_000, sseRetryMs: 1000, maxStreams },
    ...(access ? { access } : {}),
  });
  return { app, service, streams };
}

const body = (traceId = "t-1") =>
  JSON.stringify({ trace_id: traceId, open_id: "open-1", product_key: "pk", user_type: "ilop" });

function post(app: ReturnType<typeof makeApp>["app"], init: { body?: string; headers?: Record<string, string> } = {}) {
  return app.request("/v1/binds", {
    method: "POST",
    body: init.body ?? body(),
    headers: { "content-type": "application/json", ...init.headers },
  });
}

async function readUntilClosed(res: Response): Promise<string> {
  return await res.text();
}

describe("HTTP API through app.request", () => {
  it("registers: 201, then 200 for the identical repeat, 409 for other parameters", async () => {
    const { app } = makeApp();
    const first = await post(app);
    expect(first.status).toBe(201);
    const json = (await first.json()) as Record<string, unknown>;
    expect(json).toMatchObject({ trace_id: "t-1", events_url: "/v1/binds/t-1/events" });
    expect(json.token).toBeUndefined();
    expect((await post(app)).status).toBe(200);
    const conflict = await post(app, { body: JSON.stringify({ ...JSON.parse(body()), open_id: "x" }) });
    expect(conflict.status).toBe(409);
    expect(await conflict.json()).toMatchObject({ error: { code: "conflict", field: "trace_id" } });
  });

  it.each([
    ["not JSON", "{", 400, undefined],
    ["an array", "[]", 400, undefined],
    ["missing open_id", JSON.stringify({ trace_id: "a", product_key: "p", user_type: "u" }), 400, "open_id"],
    [
      "open_id a number",
      JSON.stringify({ trace_id: "a", open_id: 5, product_key: "p", user_type: "u" }),
      400,
      "open_id",
    ],
    [
      "bad trace_id",
      JSON.stringify({ trace_id: "a/b", open_id: "o", product_key: "p", user_type: "u" }),
      400,
      "trace_id",
    ],
    [
      "a 257-character device_name",
      JSON.stringify({ trace_id: "a", open_id: "o", product_key: "p", user_type: "u", device_name: "d".repeat(257) }),
      400,
      "device_name",
    ],
    [
      "params not an object",
      JSON.stringify({ trace_id: "a", open_id: "o", product_key: "p", user_type: "u", params: [] }),
      400,
      "params",
    ],
    [
      "an unknown field",
      JSON.stringify({ trace_id: "a", open_id: "o", product_key: "p", user_type: "u", foo: 1 }),
      400,
      "foo",
    ],
  ])("answers %s with a JSON 4xx naming the field", async (_name, text, status, field) => {
    const { app } = makeApp();
    const res = await post(app, { body: text });
    expect(res.status).toBe(status);
    const json = (await res.json()) as { error: { code: string; message: string; field?: string } };
    expect(json.error.code).toBe("invalid_request");
    expect(json.error.message.length).toBeGreaterThan(0);
    expect(json.error.field).toBe(field);
  });

  it("answers 415 for a body that is not JSON and 413 past 16 KiB", async () => {
    const { app } = makeApp();
    const wrongType = await post(app, { headers: { "content-type": "text/plain" } });
    expect(wrongType.status).toBe(415);
    const big = JSON.stringify({ ...JSON.parse(body()), params: { blob: "x".repeat(17 * 1024) } });
    const tooBig = await post(app, { body: big });
    expect(tooBig.status).toBe(413);
    expect(await tooBig.json()).toMatchObject({ error: { code: "payload_too_large" } });
  });

  it("serves SSE per SPEC: retry, event/id/data, ended after the final event, 204 on a reconnect after it", async () => {
    const { app } = makeApp(undefined, () => bound);
    await post(app);
    const res = await app.request("/v1/binds/t-1/events");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("x-accel-buffering")).toBe("no");
    expect(res.headers.get("cache-control")).toContain("no-cache");
    const text = await readUntilClosed(res);
    expect(text.startsWith("retry: 1000\n\n")).toBe(true);
    const events = text.split("\n\n").filter((b) => b.startsWith("event:"));
    const last = events.at(-1) ?? "";
    expect(last).toMatch(/^event: bound\nid: (\d+)\ndata: \{.*"final":true/);
    const finalVersion = /id: (\d+)/.exec(last)?.[1] ?? "";
    const again = await app.request("/v1/binds/t-1/events", { headers: { "last-event-id": finalVersion } });
    expect(again.status).toBe(204);
    const byQuery = await app.request(`/v1/binds/t-1/events?last_event_id=${finalVersion}`);
    expect(byQuery.status).toBe(204);
  });

  it("answers 404 JSON for unknown traces and paths, 405 for wrong methods", async () => {
    const { app } = makeApp();
    for (const path of ["/v1/binds/nope/events", "/v1/binds/nope", "/nowhere"]) {
      const res = await app.request(path);
      expect(res.status).toBe(404);
      expect(await res.json()).toMatchObject({ error: { code: "not_found" } });
    }
    expect((await app.request("/v1/binds/nope", { method: "DELETE" })).status).toBe(404);
    const put = await app.request("/v1/binds/x", { method: "PUT" });
    expect(put.status).toBe(405);
    expect(await put.json()).toMatchObject({ error: { code: "method_not_allowed" } });
  });

  it("answers 503 with Retry-After past MAX_STREAMS", async () => {
    const { app, streams } = makeApp(undefined, () => waiting, 2);
    await post(app);
    const open = [await app.request("/v1/binds/t-1/events"), await app.request("/v1/binds/t-1/events")];
    expect(open.map((r) => r.status)).toEqual([200, 200]);
    const third = await app.request("/v1/binds/t-1/events");
    expect(third.status).toBe(503);
    expect(third.headers.get("retry-after")).toBe("5");
    await Promise.all(open.map((r) => r.body?.cancel()));
    expect(streams.size).toBe(0);
    const fourth = await app.request("/v1/binds/t-1/events");
    expect(fourth.status).toBe(200);
    await fourth.body?.cancel();
  });

  it("validates long-poll parameters", async () => {
    const { app } = makeApp();
    await post(app);
    for (const q of ["wait=61", "wait=-1", "wait=abc", "after=-2", "after=1.5"]) {
      const res = await app.request(`/v1/binds/t-1?${q}`);
      expect(res.status, q).toBe(400);
    }
    const now = await app.request("/v1/binds/t-1?wait=0");
    expect(now.status).toBe(200);
    expect(await now.json()).toMatchObject({ trace_id: "t-1", status: "pending" });
  });

  it("counts a field's length in characters, as the API description's maxLength does, not in UTF-16 units", async () => {
    const { app } = makeApp();
    // "😀" is one character (code point) and two UTF-16 units.
    const withDevice = (traceId: string, deviceName: string) =>
      JSON.stringify({ trace_id: traceId, open_id: "o", product_key: "p", user_type: "u", device_name: deviceName });
    expect((await post(app, { body: withDevice("cp-256", "😀".repeat(256)) })).status).toBe(201);
    const over = await post(app, { body: withDevice("cp-257", "😀".repeat(257)) });
    expect(over.status).toBe(400);
    expect(await over.json()).toMatchObject({ error: { code: "invalid_request", field: "device_name" } });
  });
});

describe("access control", () => {
  const secret = "0123456789abcdef-secret";
  const access: AccessConfig = {
    apiKeys: ["key-one", "key-two"],
    watchTokenSecret: secret,
    tokenGraceMs: 1000,
    corsOrigins: [],
  };

  it("requires an API key for POST and DELETE", async () => {
    const { app } = makeApp(access);
    expect((await post(app)).status).toBe(401);
    expect((await post(app, { headers: { authorization: "Bearer nope" } })).status).toBe(401);
    expect((await post(app, { headers: { authorization: "Bearer key-two" } })).status).toBe(201);
    expect((await app.request("/v1/binds/t-1", { method: "DELETE" })).status).toBe(401);
    const del = await app.request("/v1/binds/t-1", { method: "DELETE", headers: { authorization: "Bearer key-one" } });
    expect(del.status).toBe(200);
  });

  it("returns a watch token that opens its own trace and no other", async () => {
    const { app } = makeApp(access);
    const a = (await (await post(app, { headers: { authorization: "Bearer key-one" } })).json()) as {
      token: string;
      events_url: string;
    };
    await post(app, { body: body("t-2"), headers: { authorization: "Bearer key-one" } });
    expect(a.token).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{43}$/);
    expect(a.events_url).toContain(`token=${a.token}`);
    expect((await app.request("/v1/binds/t-1")).status).toBe(401);
    expect((await app.request(`/v1/binds/t-1?token=${a.token}`)).status).toBe(200);
    expect((await app.request("/v1/binds/t-1", { headers: { authorization: `Bearer ${a.token}` } })).status).toBe(200);
    const other = await app.request(`/v1/binds/t-2?token=${a.token}`);
    expect(other.status).toBe(403);
    expect((await app.request(`/v1/binds/t-2/events?token=${a.token}`)).status).toBe(403);
    const stream = await app.request(`/v1/binds/t-1/events?token=${a.token}`);
    expect(stream.status).toBe(200);
    await stream.body?.cancel();
  });

  it("rejects expired and tampered tokens", () => {
    const token = createWatchToken(secret, "t", 10_000);
    expect(verifyWatchToken(secret, "t", token, 5_000)).toEqual({ ok: true });
    expect(verifyWatchToken(secret, "t", token, 10_000)).toEqual({ ok: false, reason: "expired" });
    expect(verifyWatchToken("another-secret-16ch", "t", token, 5_000)).toEqual({ ok: false, reason: "invalid" });
    expect(verifyWatchToken(secret, "t", `${token}x`, 5_000)).toEqual({ ok: false, reason: "malformed" });
  });

  it("allows exact CORS origins with credentials and the SSE headers, and no others", async () => {
    const { app } = makeApp({ apiKeys: [], tokenGraceMs: 0, corsOrigins: ["http://app.example"] });
    const preflight = await app.request("/v1/binds/t-1/events", {
      method: "OPTIONS",
      headers: {
        origin: "http://app.example",
        "access-control-request-method": "GET",
        "access-control-request-headers": "last-event-id, authorization",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(preflight.headers.get("access-control-allow-credentials")).toBe("true");
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("last-event-id");
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    const evil = await app.request("/healthz", { headers: { origin: "http://evil.example" } });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    expect(evil.headers.get("referrer-policy")).toBe("no-referrer");
  });
});
