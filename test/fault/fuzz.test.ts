import { Agent, request as httpRequest } from "node:http";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createWatchToken } from "../../src/http/access.js";
import { type AccessConfig, createApp } from "../../src/http/app.js";
import { createStreamRegistry } from "../../src/http/sse.js";
import type { CheckbindClient } from "../../src/top/client.js";
import { createBindService } from "../../src/watch/bind-service.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { BOUND, WAITING } from "../support/outcomes.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import { openSse } from "../support/sse-reader.js";

/*
 * Property-based fuzzing of every endpoint: arbitrary methods, paths, query strings,
 * headers and bodies, through `app.request()` (thousands of requests) and, fewer, over
 * a real socket. Whatever arrives: never a 5xx; every error is the JSON error shape;
 * every SSE answer opens with `retry:`; and afterwards the server is healthy and holds
 * no stream or watcher that was not closed.
 *
 * Reproduce a run with FAULT_SEED=<seed printed below> npx vitest run test/fault/fuzz.test.ts
 */

const SEED = Number(process.env.FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const API_KEY = "fuzz-api-key-0123456789";
const TOKEN_SECRET = "fuzz-watch-token-secret-0123456789";
const ALLOWED_ORIGIN = "https://app.example.com";
const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] as const;
const MAX_BODY = 16 * 1024;
/** Trace ids every run registers first: pending ones, one that binds at its first poll, one never registered. */
const PENDING_IDS = ["fz-p0", "fz-p1", "fz-p2", "fz-p3"];
const BOUND_ID = "fz-b0-bound";
const UNKNOWN_ID = "fz-unknown";
const KNOWN_IDS = [...PENDING_IDS, BOUND_ID, UNKNOWN_ID];

// ---- arbitraries ---------------------------------------------------------------

/** Printable ASCII: what a header value may hold without the Request constructor refusing it. */
const headerText = (maxLength: number) =>
  fc.string({
    unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
    maxLength,
  });

const oddNumbers = fc.constantFrom(
  "",
  "0",
  "1",
  "-1",
  "1.5",
  "60",
  "60.0001",
  "61",
  "0.001",
  "1e3",
  "0x10",
  "NaN",
  "Infinity",
  " 1",
  "1 ",
  "%",
  "%20",
  "999999999999999",
  "9999999999999999",
  "99999999999999999999",
  "\u00b2",
  "٣",
);
const queryValue = fc.oneof(oddNumbers, headerText(20), fc.string({ unit: "grapheme", maxLength: 10 }));
/** Header values are byte strings: only the Latin-1 ones of the odd numbers. */
const headerOddNumbers = oddNumbers.filter((s) => /^[\u0020-\u00ff]*$/.test(s));

/** The id segment of a path: known ids, valid ones, and everything a path may carry that is not. */
const idSegment = fc.oneof(
  { arbitrary: fc.constantFrom(...KNOWN_IDS), weight: 6 },
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9._-]{1,128}$/), weight: 2 },
  {
    arbitrary: fc.constantFrom(
      "..",
      ".",
      "%",
      "%2F",
      "%2e%2e",
      "%2E%2E%2F",
      "%00",
      "%ZZ",
      "%E0%A4%A",
      "%C0%AE",
      "a%2Fb",
      "a\\b",
      "%5C",
      "%20",
      "ü",
      "日本",
      "😀",
      "a b",
      "-",
      "_",
      "~",
      "events",
      "fz-p0%00",
      "fz-p0;x",
      "fz-p0%2Fevents",
    ),
    weight: 3,
  },
  { arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }).map(encodeURIComponent), weight: 2 },
  { arbitrary: fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 30 }), weight: 2 },
  { arbitrary: fc.integer({ min: 129, max: 6000 }).map((n) => "a".repeat(n)), weight: 1 },
);

const pathArb = fc.oneof(
  { arbitrary: idSegment.map((id) => `/v1/binds/${id}`), weight: 5 },
  { arbitrary: idSegment.map((id) => `/v1/binds/${id}/events`), weight: 5 },
  { arbitrary: fc.constant("/v1/binds"), weight: 3 },
  { arbitrary: fc.tuple(idSegment, idSegment).map(([a, b]) => `/v1/binds/${a}/${b}`), weight: 1 },
  {
    arbitrary: fc.constantFrom(
      "/",
      "/healthz",
      "/readyz",
      "/metrics",
      "/v1",
      "/v1/",
      "/v1/binds/",
      "/v1/binds//events",
      "/v1/binds/../healthz",
      "/v1/client.js",
      "/V1/BINDS",
      "/sim/traces",
      "/favicon.ico",
    ),
    weight: 2,
  },
  { arbitrary: idSegment.map((s) => `/${s}`), weight: 1 },
);

const queryArb = fc
  .dictionary(fc.constantFrom("wait", "after", "last_event_id", "token", "x", "wait "), queryValue, { maxKeys: 4 })
  .map((entries) => {
    const pairs = Object.entries(entries);
    return pairs.length === 0
      ? ""
      : `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&")}`;
  });

const contentTypeArb = fc.option(
  fc.oneof(
    fc.constantFrom(
      "application/json",
      "application/json; charset=utf-8",
      "APPLICATION/JSON;charset=UTF-8",
      "application/json ;",
      "application/json-patch+json",
      "application/jsonp",
      "text/plain",
      "text/event-stream",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "*/*",
      "",
    ),
    headerText(40),
  ),
  { nil: undefined },
);

const REG_FIELDS = [
  "trace_id",
  "open_id",
  "product_key",
  "user_type",
  "device_name",
  "iot_id",
  "server_event_request_id",
  "params",
  "extra_field",
  "__proto__",
] as const;

/** JSON text of an object's own entries: a "__proto__" key stays an ordinary key on the wire. */
function jsonText(value: Record<string, unknown>): string {
  return `{${Object.entries(value)
    .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
    .join(",")}}`;
}

const registrationId = fc.oneof(fc.constantFrom(...KNOWN_IDS), fc.stringMatching(/^fz-[a-z0-9]{1,8}$/));

/** A valid registration with one field replaced by an arbitrary JSON value, or removed. */
const nearValidBody = fc
  .tuple(
    registrationId,
    fc.constantFrom(...REG_FIELDS),
    fc.option(fc.oneof(fc.jsonValue({ maxDepth: 3 }), queryValue, fc.string({ maxLength: 300 })), { nil: undefined }),
  )
  .map(([id, field, value]) => {
    const body: Record<string, unknown> = { ...bindBody(id) };
    if (value === undefined) delete body[field];
    else Object.defineProperty(body, field, { value, enumerable: true, writable: true, configurable: true });
    return jsonText(body);
  });

/** A valid registration padded to `size` bytes (as JSON text): around the 16 KiB cap. */
function paddedBody(id: string, size: number): string {
  const base = JSON.stringify(bindBody(id, { params: { pad: "" } }));
  return base.replace('"pad":""', `"pad":"${"x".repeat(Math.max(0, size - base.length))}"`);
}

const bodyArb: fc.Arbitrary<string | Uint8Array | undefined> = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 2 },
  { arbitrary: registrationId.map((id) => JSON.stringify(bindBody(id))), weight: 3 },
  { arbitrary: nearValidBody, weight: 6 },
  { arbitrary: fc.json({ maxDepth: 4 }), weight: 3 },
  { arbitrary: fc.string({ unit: "binary", maxLength: 200 }), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 600 }), weight: 1 },
  {
    arbitrary: fc
      .tuple(registrationId, fc.integer({ min: MAX_BODY - 64, max: MAX_BODY + 64 }))
      .map(([id, n]) => paddedBody(id, n)),
    weight: 1,
  },
  { arbitrary: fc.integer({ min: MAX_BODY - 8, max: MAX_BODY * 3 }).map((n) => "x".repeat(n)), weight: 1 },
  {
    arbitrary: fc.integer({ min: 1, max: 4000 }).map((n) => `{"params":${"[".repeat(n)}${"]".repeat(n)}}`),
    weight: 1,
  },
);

interface FuzzRequest {
  readonly method: (typeof METHODS)[number];
  readonly path: string;
  readonly query: string;
  readonly headers: Record<string, string>;
  readonly body: string | Uint8Array | undefined;
}

function requestArb(tokens: fc.Arbitrary<string>): fc.Arbitrary<FuzzRequest> {
  const authorization = fc.oneof(
    fc.constant(`Bearer ${API_KEY}`),
    tokens.map((t) => `Bearer ${t}`),
    headerText(60).map((t) => `Bearer ${t}`),
    fc.constantFrom("Bearer", "Bearer ", "Basic Zm9vOmJhcg==", `bearer   ${API_KEY}  `, API_KEY),
    headerText(60),
  );
  const headers = fc.record(
    {
      "content-type": contentTypeArb,
      "last-event-id": fc.oneof(headerOddNumbers, headerText(30)),
      authorization,
      origin: fc.oneof(
        fc.constantFrom(ALLOWED_ORIGIN, "https://evil.example.com", "null", "http://localhost"),
        headerText(30),
      ),
      accept: fc.constantFrom("text/event-stream", "application/json", "*/*"),
      "access-control-request-method": fc.constantFrom(...METHODS),
      "access-control-request-headers": fc.constantFrom("authorization", "last-event-id, content-type", "x-odd"),
    },
    { requiredKeys: [] },
  );
  return fc
    .record({
      method: fc.constantFrom(...METHODS),
      path: pathArb,
      query: fc.oneof(
        queryArb,
        tokens.map((t) => `?token=${encodeURIComponent(t)}`),
      ),
      headers,
      body: bodyArb,
    })
    .map((r) => {
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(r.headers)) if (typeof v === "string") h[k] = v;
      // A GET or HEAD cannot carry a body in fetch's Request.
      const body = r.method === "GET" || r.method === "HEAD" ? undefined : r.body;
      return { method: r.method, path: r.path, query: r.query, headers: h, body };
    });
}

/**
 * Requests a well-behaved client would send, so the fuzz also reaches the paths behind
 * validation and access control: a watch of a known trace (with its own token when
 * `tokenFor` is given, and an odd Last-Event-ID or query now and then), or a valid
 * registration with the API key.
 */
function wellFormedArb(tokenFor?: (traceId: string) => string): fc.Arbitrary<FuzzRequest> {
  const watch = fc
    .record({
      id: fc.constantFrom(...KNOWN_IDS),
      method: fc.constantFrom("GET", "GET", "GET", "HEAD"),
      events: fc.boolean(),
      query: queryArb,
      lastEventId: fc.option(headerOddNumbers, { nil: undefined }),
      tokenInHeader: fc.boolean(),
    })
    .map((w): FuzzRequest => {
      const headers: Record<string, string> = {};
      if (w.lastEventId !== undefined) headers["last-event-id"] = w.lastEventId;
      let query = w.query.replace(/(^\?|&)token=[^&]*/, "");
      if (tokenFor) {
        const token = tokenFor(w.id);
        if (w.tokenInHeader) headers.authorization = `Bearer ${token}`;
        else query = `${query === "" ? "?" : `${query}&`}token=${token}`;
      }
      return {
        method: w.method as FuzzRequest["method"],
        path: `/v1/binds/${w.id}${w.events ? "/events" : ""}`,
        query,
        headers,
        body: undefined,
      };
    });
  const register = fc
    .oneof(
      registrationId.map((id) => JSON.stringify(bindBody(id))),
      nearValidBody,
    )
    .map(
      (body): FuzzRequest => ({
        method: "POST",
        path: "/v1/binds",
        query: "",
        headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
        body,
      }),
    );
  return fc.oneof({ arbitrary: watch, weight: 3 }, { arbitrary: register, weight: 1 });
}

// ---- checking one answer -------------------------------------------------------

interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== "object" || value === null || !("error" in value)) return false;
  const e = value.error as Record<string, unknown> | null;
  return (
    typeof e === "object" &&
    e !== null &&
    typeof e.code === "string" &&
    typeof e.message === "string" &&
    (e.field === undefined || typeof e.field === "string")
  );
}

function describeRequest(r: FuzzRequest): string {
  const body =
    r.body === undefined
      ? ""
      : ` body(${typeof r.body === "string" ? r.body.length : r.body.byteLength}) ${String(r.body).slice(0, 80)}`;
  return `${r.method} ${r.path.slice(0, 120)}${r.query.slice(0, 80)} ${JSON.stringify(r.headers)}${body}`;
}

type Seen = "sse" | "error" | "ok" | "empty";

/**
 * Checks one response and consumes it: SSE bodies are read up to their first chunk
 * and then cancelled (the client goes away); every other body is read to the end.
 */
async function checkAnswer(r: FuzzRequest, status: number, headers: Headers, body: ReadableStream<Uint8Array> | null) {
  const what = `${describeRequest(r)} → ${status}`;
  expect(status, what).toBeLessThan(500);
  expect(status, what).toBeGreaterThanOrEqual(200);
  const type = headers.get("content-type") ?? "";
  if (status === 200 && type.startsWith("text/event-stream") && r.method !== "HEAD") {
    expect(body, what).not.toBeNull();
    const reader = (body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    await reader.cancel();
    const text = new TextDecoder().decode(first.value ?? new Uint8Array());
    expect(text.startsWith("retry:"), `${what}: SSE opened with ${JSON.stringify(text.slice(0, 40))}`).toBe(true);
    return "sse" satisfies Seen;
  }
  const text = body ? await new Response(body).text() : "";
  if (r.method === "HEAD" || status === 204) {
    expect(text, what).toBe("");
    if (status >= 300) expect(type, what).toMatch(/^application\/json/);
    return "empty" satisfies Seen;
  }
  if (status >= 300) {
    expect(type, what).toMatch(/^application\/json/);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`${what}: error body is not JSON: ${text.slice(0, 200)}`);
    }
    expect(isErrorBody(parsed), `${what}: ${text.slice(0, 200)}`).toBe(true);
    return "error" satisfies Seen;
  }
  if (type.startsWith("application/json")) expect(() => JSON.parse(text), what).not.toThrow();
  return "ok" satisfies Seen;
}

function tally(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

// ---- through app.request -------------------------------------------------------

function makeApp(access?: AccessConfig) {
  const coordinator = createMemoryCoordinator({ retentionMs: 120_000, resultTtlMs: 60_000, upstreamQps: 10_000 });
  // Trace ids ending in "-bound" bind at their first poll; every other one waits for ever.
  const client: CheckbindClient = {
    checkbind: async (reg) => (reg.trace_id.endsWith("-bound") ? BOUND : WAITING),
  };
  const service = createBindService({
    coordinator,
    client,
    config: { pollIntervalMs: 100, pollLingerMs: 300, bindTimeoutMs: 120_000, resultTtlMs: 60_000 },
  });
  const streams = createStreamRegistry();
  const app = createApp({
    service,
    streams,
    mode: "live",
    config: { heartbeatMs: 60_000, sseRetryMs: 1000, maxStreams: 100_000 },
    ...(access ? { access } : {}),
  });
  return {
    app,
    service,
    streams,
    async stop() {
      await service.shutdown();
      await coordinator.close();
    },
  };
}

type Harness = ReturnType<typeof makeApp>;

async function seedTraces(h: Harness): Promise<void> {
  for (const id of [...PENDING_IDS, BOUND_ID]) {
    const res = await h.app.request("/v1/binds", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify(bindBody(id)),
    });
    expect(res.status).toBe(201);
    await res.body?.cancel();
  }
}

async function sendThroughApp(h: Harness, r: FuzzRequest, counts: Record<string, number>): Promise<void> {
  const init: RequestInit = { method: r.method, headers: r.headers };
  if (r.body !== undefined)
    init.body = typeof r.body === "string" ? r.body : new Blob([r.body as Uint8Array<ArrayBuffer>]);
  // A long-poll with a valid `wait` on a pending trace may hold up to 60 s: the client leaves
  // after 50 ms, and the answer still has to be right. Streams get no such signal: they
  // must be released by cancelling their body, as a leak would otherwise go unseen.
  if (!r.path.endsWith("/events")) init.signal = AbortSignal.timeout(50);
  const res = await h.app.request(`http://localhost${r.path}${r.query}`, init);
  tally(counts, `${res.status}`);
  tally(counts, await checkAnswer(r, res.status, res.headers, res.body));
}

/** After every stream was closed by its client: nothing left attached. */
async function expectNothingAttached(h: Harness): Promise<void> {
  await waitUntil(
    () => h.streams.size === 0 && h.service.stats().watchers === 0,
    5_000,
    `no stream or watcher left (streams ${h.streams.size}, ${JSON.stringify(h.service.stats())})`,
  );
}

/**
 * Polling is demand-driven (SPEC §4.2): once every watcher left, the lingers and the
 * stored interest (3 s at this interval) run out and no trace is polled any more.
 */
async function expectNoPolling(h: Harness): Promise<void> {
  await waitUntil(
    () => h.service.stats().drivers === 0,
    10_000,
    `no trace polled (${JSON.stringify(h.service.stats())})`,
  );
}

/** A normal registration and stream still play out to the final event. */
async function expectHealthy(h: Harness, headers: Record<string, string> = {}): Promise<void> {
  const health = await h.app.request("/healthz");
  expect(health.status).toBe(200);
  const id = `${newTraceId("fz-health")}-bound`;
  const posted = await h.app.request("/v1/binds", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(bindBody(id)),
  });
  expect(posted.status).toBe(201);
  const { events_url } = (await posted.json()) as { events_url: string };
  const stream = await h.app.request(events_url, { headers });
  expect(stream.status).toBe(200);
  // The stream ends by itself after the final event.
  const text = await stream.text();
  expect(text.startsWith("retry:")).toBe(true);
  expect(text).toMatch(/event: bound\nid: \d+\ndata: /);
}

const processFaults: { kind: string; error: unknown }[] = [];
const onUnhandled = (error: unknown) => processFaults.push({ kind: "unhandledRejection", error });
const onUncaught = (error: unknown) => processFaults.push({ kind: "uncaughtException", error });
const totals = { appRequests: 0, socketRequests: 0 };

beforeAll(() => {
  process.on("unhandledRejection", onUnhandled);
  process.on("uncaughtException", onUncaught);
  console.info(`fuzz: FAULT_SEED=${SEED}`);
});
afterAll(() => {
  process.off("unhandledRejection", onUnhandled);
  process.off("uncaughtException", onUncaught);
  console.info(`fuzz: ${totals.appRequests} requests through app.request, ${totals.socketRequests} over a real socket`);
});

describe(`fuzzing through app.request (FAULT_SEED=${SEED})`, () => {
  const harnesses: Harness[] = [];
  afterAll(async () => {
    for (const h of harnesses) await h.stop();
  });

  it("open access: no 5xx, JSON errors, SSE opens with retry, nothing left attached, still healthy", async () => {
    const h = makeApp();
    harnesses.push(h);
    await seedTraces(h);
    const counts: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(fc.oneof(requestArb(fc.constant("")), wellFormedArb()), async (r) => {
        totals.appRequests++;
        await sendThroughApp(h, r, counts);
      }),
      { numRuns: 1500, seed: SEED },
    );
    console.info(`fuzz open app: ${JSON.stringify(counts)}`);
    expect(counts.sse ?? 0, "some streams were opened").toBeGreaterThan(50);
    expect(counts["201"] ?? 0, "some registrations succeeded").toBeGreaterThan(5);
    await expectNothingAttached(h);
    await expectHealthy(h);
    await expectNothingAttached(h);
    await expectNoPolling(h);
    expect(processFaults).toEqual([]);
  }, 60_000);

  it("POST /v1/binds bodies: 413 exactly past 16 KiB, 415 for other types, 2xx only for a valid registration", async () => {
    const h = makeApp();
    harnesses.push(h);
    await seedTraces(h);
    const counts: Record<string, number> = {};
    const arb = fc.record({
      contentType: fc.oneof(
        { arbitrary: fc.constant("application/json"), weight: 4 },
        { arbitrary: contentTypeArb, weight: 1 },
      ),
      body: bodyArb.filter((b): b is string | Uint8Array => b !== undefined),
    });
    await fc.assert(
      fc.asyncProperty(arb, async ({ contentType, body }) => {
        totals.appRequests++;
        const r: FuzzRequest = {
          method: "POST",
          path: "/v1/binds",
          query: "",
          headers: contentType === undefined ? {} : { "content-type": contentType },
          body,
        };
        const res = await h.app.request("http://localhost/v1/binds", {
          method: "POST",
          headers: r.headers,
          body: typeof body === "string" ? body : new Blob([body as Uint8Array<ArrayBuffer>]),
        });
        const status = res.status;
        const text = await res.clone().text();
        tally(counts, `${status}`);
        tally(counts, await checkAnswer(r, status, res.headers, res.body));
        const bytes = typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
        const what = `${describeRequest(r)} → ${status} ${text.slice(0, 200)}`;
        if (bytes > MAX_BODY) expect(status, what).toBe(413);
        else if (!/^application\/json\s*(;|$)/i.test(contentType ?? "")) expect(status, what).toBe(415);
        else expect([200, 201, 400, 409], what).toContain(status);
        if (status === 200 || status === 201) {
          const sent = JSON.parse(typeof body === "string" ? body : new TextDecoder().decode(body)) as unknown;
          expect(typeof sent === "object" && sent !== null && !Array.isArray(sent), what).toBe(true);
          expect((JSON.parse(text) as { trace_id: string }).trace_id).toBe((sent as { trace_id: string }).trace_id);
        }
      }),
      { numRuns: 1000, seed: SEED + 3 },
    );
    console.info(`fuzz POST bodies: ${JSON.stringify(counts)}`);
    expect(counts["413"] ?? 0, "bodies over the cap were tried").toBeGreaterThan(10);
    expect(counts["201"] ?? 0, "valid registrations were tried").toBeGreaterThan(10);
    await expectNothingAttached(h);
    await expectHealthy(h);
    expect(processFaults).toEqual([]);
  }, 60_000);

  it("API keys, watch tokens and CORS on: the same, with tokens valid, foreign, expired and mangled", async () => {
    const access: AccessConfig = {
      apiKeys: [API_KEY],
      watchTokenSecret: TOKEN_SECRET,
      tokenGraceMs: 60_000,
      corsOrigins: [ALLOWED_ORIGIN],
    };
    const h = makeApp(access);
    harnesses.push(h);
    await seedTraces(h);
    const future = Date.now() + 600_000;
    const valid = KNOWN_IDS.map((id) => createWatchToken(TOKEN_SECRET, id, future));
    const tokens = fc.oneof(
      fc.constantFrom(...valid),
      fc.constantFrom(...valid).map((t) => t.slice(0, -1)),
      fc.constantFrom(...valid).map((t) => `${t}x`),
      fc.constant(createWatchToken(TOKEN_SECRET, "fz-p0", Date.now() - 1_000)),
      fc.constant(createWatchToken("another-secret-0123456789", "fz-p0", future)),
      headerText(60),
    );
    const counts: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          requestArb(tokens),
          wellFormedArb((id) => createWatchToken(TOKEN_SECRET, id, future)),
        ),
        async (r) => {
          totals.appRequests++;
          await sendThroughApp(h, r, counts);
        },
      ),
      { numRuns: 1000, seed: SEED + 1 },
    );
    console.info(`fuzz locked app: ${JSON.stringify(counts)}`);
    expect(counts.sse ?? 0, "some streams were opened with a valid token").toBeGreaterThan(50);
    expect(counts["401"] ?? 0).toBeGreaterThan(5);
    expect(counts["403"] ?? 0).toBeGreaterThan(5);
    await expectNothingAttached(h);
    await expectHealthy(h, { authorization: `Bearer ${API_KEY}` });
    await expectNothingAttached(h);
    await expectNoPolling(h);
    expect(processFaults).toEqual([]);
  }, 60_000);
});

// ---- over a real socket ------------------------------------------------------------

/** node:http sends a path as given (".." and "%" included) but refuses spaces and non-Latin-1: encode those. */
function wirePath(path: string): string {
  return path.replace(/[^\u0021-\u007e]/gu, (c) => encodeURIComponent(c));
}

describe(`fuzzing over a real socket (FAULT_SEED=${SEED})`, () => {
  let server: TestServer;
  let agent: Agent;
  beforeAll(async () => {
    server = await startTestServer({ POLL_INTERVAL_MS: "100", POLL_LINGER_MS: "300", HEARTBEAT_MS: "15000" });
    agent = new Agent({ keepAlive: true, maxSockets: 16 });
  });
  afterAll(async () => {
    agent?.destroy();
    await server?.stop();
  });

  function send(r: FuzzRequest): Promise<{ status: number; headers: Headers; body: ReadableStream<Uint8Array> }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: "127.0.0.1",
          port: server.port,
          method: r.method,
          path: wirePath(`${r.path}${r.query}`),
          // Framed like any real client: node:http would send a DELETE or OPTIONS body unframed.
          headers:
            r.body === undefined ? r.headers : { ...r.headers, "content-length": String(Buffer.byteLength(r.body)) },
          agent,
        },
        (res) => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === "string") headers.set(k, v);
          // A pull stream over the response: cancelling it destroys the socket (the client goes away).
          const body = new ReadableStream<Uint8Array>({
            start(controller) {
              res.on("data", (chunk: Buffer) => controller.enqueue(new Uint8Array(chunk)));
              res.on("end", () => controller.close());
              res.on("error", (err) => controller.error(err));
            },
            cancel() {
              req.destroy();
            },
          });
          resolve({ status: res.statusCode ?? 0, headers, body });
        },
      );
      req.on("error", reject);
      // A long-poll may hold up to 60 s: give up after a moment, as a client might.
      req.setTimeout(2_000, () => req.destroy(new Error("client timeout")));
      if (r.body !== undefined) req.end(r.body);
      else req.end();
    });
  }

  it("no 5xx, JSON errors, SSE opens with retry; afterwards healthy, nothing attached", async () => {
    for (const id of [...PENDING_IDS, BOUND_ID]) {
      server.simulator.setScript(id, id.endsWith("-bound") ? { steps: [], thereafter: { kind: "bound" } } : []);
      expect((await postBind(server.url, bindBody(id))).status).toBe(201);
    }
    const counts: Record<string, number> = {};
    // Long-polls are kept short here: `wait` values that hold are rewritten to at most 0.2 s.
    const arb = fc.oneof(requestArb(fc.constant("")), wellFormedArb()).map((r) => ({
      ...r,
      query: r.query.replace(/wait=(\d{1,2})(\.\d{1,3})?(?=&|$)/, "wait=0.2"),
    }));
    await fc.assert(
      fc.asyncProperty(arb, async (r) => {
        totals.socketRequests++;
        const res = await send(r);
        tally(counts, `${res.status}`);
        tally(counts, await checkAnswer(r, res.status, res.headers, res.body));
      }),
      { numRuns: 400, seed: SEED + 2 },
    );
    console.info(`fuzz socket: ${JSON.stringify(counts)}`);
    expect(counts.sse ?? 0).toBeGreaterThan(5);

    await waitUntil(
      () => server.streams.size === 0 && server.service.stats().watchers === 0,
      10_000,
      "every stream and watcher released after their clients left",
    );
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const id = newTraceId("fz-health");
    expect((await postBind(server.url, bindBody(id))).status).toBe(201);
    const sse = await openSse(`${server.url}/v1/binds/${id}/events`);
    await sse.waitFor((s) => s.ended, 15_000, "the default script to bind");
    expect(sse.events.at(-1)?.event).toBe("bound");
    await waitUntil(
      () => server.streams.size === 0 && server.service.stats().watchers === 0,
      5_000,
      "nothing attached at the end",
    );
    expect(processFaults).toEqual([]);
  }, 60_000);
});
