import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scriptNever } from "../../src/sim/scripts.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import {
  type ApiDocument,
  createSchemaChecker,
  type DocumentedResponse,
  type Operation,
  operationsOf,
  type Schema,
} from "../support/api-description.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { bindBody, newTraceId, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import { openSse, type SseReader } from "../support/sse-reader.js";
import { startWebhookReceiver, type WebhookReceiver } from "../support/webhook-receiver.js";

/*
 * The API description against the server's real answers: for every documented status
 * of every endpoint, a request on a real socket that provokes it, whose body (and
 * content type, and documented headers) is validated against the documented schema
 * with ajv (JSON Schema 2020-12, objects closed: no undocumented field either). An
 * answer whose status the document does not list fails at once; a documented status
 * that no request provoked fails the last test. The webhook a final sends is checked
 * against the document's `webhooks` entry too.
 */

const API_KEY = "doc-api-key-0123456789";
const TOKEN_SECRET = "doc-watch-token-secret-0123456789";
const WEBHOOK_SECRET = `whsec_${Buffer.from("api-description-webhook-secret").toString("base64")}`;
const json = { "content-type": "application/json" };

let doc: ApiDocument;
let check: (schema: Schema, value: unknown) => string[];
const operations = new Map<string, Operation>();
/** `"<METHOD> <path> <status>"` of every documented answer a request got. */
const exercised = new Set<string>();

function documented(op: string, status: number): DocumentedResponse {
  const operation = operations.get(op);
  if (!operation) throw new Error(`the document has no operation ${op}`);
  const response = operation.responses[String(status)];
  if (!response) {
    throw new Error(`${op} answered ${status}, which the document does not list (${Object.keys(operation.responses)})`);
  }
  exercised.add(`${op} ${status}`);
  return response;
}

function mediaTypeOf(headers: Headers): string {
  return (headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function checkHeaders(what: string, response: DocumentedResponse, headers: Headers): void {
  for (const [name, header] of Object.entries(response.headers ?? {})) {
    const value = headers.get(name);
    if (value === null) {
      expect(header.required, `${what}: header ${name} is documented as required`).not.toBe(true);
      continue;
    }
    const typed = header.schema.type === "integer" && /^\d+$/.test(value) ? Number(value) : value;
    expect(check(header.schema, typed), `${what}: header ${name}: ${value}`).toEqual([]);
  }
}

/** Checks an answer of `op` against the document and returns its body (parsed when JSON). */
async function expectDocumented(op: string, res: Response): Promise<unknown> {
  const text = await res.text();
  const what = `${op} → ${res.status} ${text.slice(0, 160)}`;
  const response = documented(op, res.status);
  checkHeaders(what, response, res.headers);
  const content = Object.entries(response.content ?? {});
  if (content.length === 0) {
    expect(text, what).toBe("");
    return undefined;
  }
  expect(content, `${what}: one media type per answer`).toHaveLength(1);
  const [mediaType, { schema }] = content[0] as [string, { schema: Schema }];
  expect(mediaTypeOf(res.headers), what).toBe(mediaType);
  const value: unknown = mediaType === "application/json" ? JSON.parse(text) : text;
  if (mediaType !== "application/json") expect(text.length, what).toBeGreaterThan(0);
  expect(check(schema, value), what).toEqual([]);
  return value;
}

/** Checks a stream of the events endpoint: `retry:` first, then only documented events and pings. */
function expectDocumentedStream(reader: SseReader): void {
  const op = "GET /v1/binds/{trace_id}/events";
  const what = `${op} → ${reader.status} ${reader.text.slice(0, 300)}`;
  const response = documented(op, reader.status);
  checkHeaders(what, response, reader.headers);
  expect(Object.keys(response.content ?? {}), what).toEqual([mediaTypeOf(reader.headers)]);
  const [first, ...rest] = reader.frames;
  expect(first, what).toMatchObject({ retry: expect.any(Number), comments: [] });
  expect(first?.event ?? first?.data, what).toBeUndefined();
  const bindEvent = doc.components.schemas.BindEvent as Schema;
  for (const frame of rest) {
    if (frame.data === undefined) {
      expect(frame.comments, what).toEqual(["ping"]);
      continue;
    }
    const event = { event: frame.event, id: frame.id, data: JSON.parse(frame.data) as unknown };
    expect(check(bindEvent, event), `${what}: ${JSON.stringify(event)}`).toEqual([]);
  }
}

async function post(server: TestServer, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}/v1/binds`, {
    method: "POST",
    headers: { ...json, ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** One request to each route that touches a trace's store (`traceId` registered, the POST a new trace). */
function askEveryTraceRoute(server: TestServer, traceId: string): [string, Promise<Response>][] {
  const url = `${server.url}/v1/binds/${traceId}`;
  return [
    ["POST /v1/binds", post(server, bindBody(newTraceId("doc-route")))],
    ["GET /v1/binds/{trace_id}/events", fetch(`${url}/events`)],
    ["GET /v1/binds/{trace_id}", fetch(url)],
    ["DELETE /v1/binds/{trace_id}", fetch(url, { method: "DELETE" })],
  ];
}

/** Registers a trace that never binds by itself and returns the POST's answer (checked). */
async function registerPending(server: TestServer, headers: Record<string, string> = {}) {
  const traceId = newTraceId("doc");
  server.simulator.setScript(traceId, scriptNever());
  const body = (await expectDocumented("POST /v1/binds", await post(server, bindBody(traceId), headers))) as {
    trace_id: string;
    token?: string;
  };
  return { traceId, token: body.token };
}

beforeAll(async () => {
  // The document as served.
  const server = await startTestServer();
  try {
    const res = await fetch(`${server.url}/openapi.json`);
    doc = (await res.clone().json()) as ApiDocument;
    for (const [key, op] of operationsOf(doc)) operations.set(key, op);
    check = createSchemaChecker(doc);
    await expectDocumented("GET /openapi.json", res);
  } finally {
    await server.stop();
  }
});

describe("open access, one stream per instance, webhooks on", () => {
  let server: TestServer;
  let receiver: WebhookReceiver;
  beforeAll(async () => {
    receiver = await startWebhookReceiver(WEBHOOK_SECRET);
    server = await startTestServer({
      MAX_STREAMS: "1",
      HEARTBEAT_MS: "300",
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET,
    });
  });
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
  });

  it("POST /v1/binds: 201, 200, 400, 405, 409, 413, 415", async () => {
    const traceId = newTraceId("doc-post");
    server.simulator.setScript(traceId, scriptNever());
    const body = bindBody(traceId, { device_name: "lamp", params: { ssProductKey: "k", authCode: "c" } });
    const op = "POST /v1/binds";
    expect(await expectDocumented(op, await post(server, body))).toMatchObject({ trace_id: traceId });
    expect(await expectDocumented(op, await post(server, body))).toMatchObject({ state: { trace_id: traceId } });
    await expectDocumented(op, await post(server, { ...body, open_id: "someone-else" }));
    await expectDocumented(op, await post(server, { ...body, open_id: "" }));
    await expectDocumented(op, await post(server, "{"));
    await expectDocumented(op, await post(server, bindBody(newTraceId("x"), { params: { pad: "x".repeat(17_000) } })));
    await expectDocumented(op, await post(server, body, { "content-type": "text/plain" }));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds`));
  });

  it("GET /v1/binds/{trace_id}/events: 200 (retry, events, pings, the end), 503 past MAX_STREAMS, 204, 400, 404, 405", async () => {
    const op = "GET /v1/binds/{trace_id}/events";
    const { traceId } = await registerPending(server);
    const url = `${server.url}/v1/binds/${traceId}/events`;
    const reader = await openSse(url);
    try {
      await reader.waitFor((r) => r.frames.some((f) => f.comments.includes("ping")), 5_000, "a ping");
      // The one stream this instance may hold is taken.
      await expectDocumented(op, await fetch(url));
      await expectDocumented(
        "DELETE /v1/binds/{trace_id}",
        await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" }),
      );
      await reader.waitFor((r) => r.ended, 5_000, "the end of the stream after the final event");
    } finally {
      reader.close();
    }
    expect(reader.events.map((e) => e.event).join(" ")).toMatch(/^(pending )+cancelled$/);
    expectDocumentedStream(reader);
    await waitUntil(() => server.streams.size === 0, 5_000, "the stream to be released");
    const final = reader.events.at(-1)?.id ?? "";
    await expectDocumented(op, await fetch(url, { headers: { "last-event-id": final } }));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/bad!id/events`));
    await expectDocumented(op, await fetch(`${url}?last_event_id=-1`));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/${newTraceId("nobody")}/events`));
    await expectDocumented(op, await fetch(url, { method: "POST" }));
  });

  it("GET /v1/binds/{trace_id}: 200 (at once and after a wait), 400, 404, 405", async () => {
    const op = "GET /v1/binds/{trace_id}";
    const { traceId } = await registerPending(server);
    const url = `${server.url}/v1/binds/${traceId}`;
    expect(await expectDocumented(op, await fetch(url))).toMatchObject({ status: "pending" });
    await expectDocumented(op, await fetch(`${url}?wait=0.3&after=999`));
    await expectDocumented(op, await fetch(`${url}?wait=61`));
    await expectDocumented(op, await fetch(`${url}?after=1.5`));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/a%20b`));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/${newTraceId("nobody")}?wait=5`));
    await expectDocumented(op, await fetch(url, { method: "PUT", headers: json, body: "{}" }));
  });

  it("DELETE /v1/binds/{trace_id}: 200, 400, 404, 405", async () => {
    const op = "DELETE /v1/binds/{trace_id}";
    const { traceId } = await registerPending(server);
    const url = `${server.url}/v1/binds/${traceId}`;
    expect(await expectDocumented(op, await fetch(url, { method: "DELETE" }))).toMatchObject({ status: "cancelled" });
    expect(await expectDocumented(op, await fetch(url, { method: "DELETE" }))).toMatchObject({ status: "cancelled" });
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/bad!id`, { method: "DELETE" }));
    await expectDocumented(op, await fetch(`${server.url}/v1/binds/${newTraceId("nobody")}`, { method: "DELETE" }));
    await expectDocumented(op, await fetch(url, { method: "PATCH", headers: json, body: "{}" }));
  });

  it("the operations and the description: /healthz, /readyz, /metrics, /v1/client.js, /openapi.json, /docs", async () => {
    expect(await expectDocumented("GET /healthz", await fetch(`${server.url}/healthz`))).toEqual({
      status: "ok",
      mode: "simulator",
    });
    await expectDocumented("GET /readyz", await fetch(`${server.url}/readyz`));
    expect(await expectDocumented("GET /metrics", await fetch(`${server.url}/metrics`))).toContain("# TYPE");
    expect(await expectDocumented("GET /v1/client.js", await fetch(`${server.url}/v1/client.js`))).toContain(
      "watchBind",
    );
    await expectDocumented("GET /openapi.json", await fetch(`${server.url}/openapi.json`));
    expect(await expectDocumented("GET /docs", await fetch(`${server.url}/docs`))).toContain('src="/docs/scalar.js"');
  });

  it("the webhook of a final: the documented body and webhook-* headers", async () => {
    const { traceId } = await registerPending(server);
    await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
    const delivery = await waitUntil(
      () => receiver.delivered().find((d) => d.payload?.data?.trace_id === traceId),
      10_000,
      "the webhook of the cancelled bind",
    );
    expect(delivery.verified).toBe(true);
    const webhook = doc.webhooks?.["bind.final"]?.post;
    const body = webhook?.requestBody?.content["application/json"]?.schema as Schema;
    expect(check(body, JSON.parse(delivery.body))).toEqual([]);
    for (const parameter of webhook?.parameters ?? []) {
      const value = delivery.headers[parameter.name as keyof typeof delivery.headers];
      expect(check(parameter.schema, value), `${parameter.name}: ${value}`).toEqual([]);
    }
  });
});

describe("API keys, watch tokens and a registration quota", () => {
  let server: TestServer;
  const key = { authorization: `Bearer ${API_KEY}` };
  beforeAll(async () => {
    server = await startTestServer({
      API_KEYS: API_KEY,
      WATCH_TOKEN_SECRET: TOKEN_SECRET,
      REGISTRATIONS_PER_MINUTE: "1",
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("401 without a key or token, 403 with another trace's token, 429 past the quota; the token opens its trace", async () => {
    await expectDocumented("POST /v1/binds", await post(server, bindBody(newTraceId("doc-nokey"))));
    const { traceId, token } = await registerPending(server, key);
    expect(token).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{43}$/);
    await expectDocumented("POST /v1/binds", await post(server, bindBody(newTraceId("doc-quota")), key));
    const other = `/v1/binds/${newTraceId("doc-other")}`;
    for (const op of ["GET /v1/binds/{trace_id}", "GET /v1/binds/{trace_id}/events"] as const) {
      const path = `/v1/binds/${traceId}${op.endsWith("/events") ? "/events" : ""}`;
      await expectDocumented(op, await fetch(`${server.url}${path}`));
      await expectDocumented(
        op,
        await fetch(`${server.url}${other}${op.endsWith("/events") ? "/events" : ""}?token=${token}`),
      );
    }
    expect(
      await expectDocumented(
        "GET /v1/binds/{trace_id}",
        await fetch(`${server.url}/v1/binds/${traceId}?token=${token}`),
      ),
    ).toMatchObject({
      trace_id: traceId,
    });
    await expectDocumented(
      "DELETE /v1/binds/{trace_id}",
      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" }),
    );
    await expectDocumented(
      "DELETE /v1/binds/{trace_id}",
      await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE", headers: key }),
    );
  });
});

describe("a Redis that is gone", () => {
  let redis: RedisServer;
  let server: TestServer;
  beforeAll(async () => {
    redis = await startRedisServer();
    server = await startTestServer({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await server?.stop();
    await redis?.stop();
  });

  it("503 with Retry-After from every trace route, 503 from /readyz", async () => {
    const { traceId } = await registerPending(server);
    await redis.stop();
    const readyz = async (): Promise<Response | null> => {
      const res = await fetch(`${server.url}/readyz`);
      if (res.status !== 200) return res;
      await res.body?.cancel();
      return null;
    };
    await expectDocumented("GET /readyz", await waitUntil(readyz, 5_000, "/readyz to answer 503", 50));
    for (const [op, res] of askEveryTraceRoute(server, traceId)) {
      const answer = await res;
      expect(answer.headers.get("retry-after"), op).toMatch(/^\d+$/);
      expect(await expectDocumented(op, answer)).toMatchObject({ error: { code: "unavailable" } });
    }
  });
});

describe("a store that fails in a way bindwatch does not expect", () => {
  let server: TestServer;
  let registered = "";
  beforeAll(async () => {
    const store = createMemoryCoordinator({ retentionMs: 600_000, resultTtlMs: 600_000, upstreamQps: 40 });
    // Once broken, every read and write of a trace throws a plain Error (not "store unavailable").
    let broken = false;
    const fault = () => Promise.reject(new Error("injected store fault"));
    const coordinator: Coordinator = {
      ...store,
      register: (...args) => (broken ? fault() : store.register(...args)),
      getState: (...args) => (broken ? fault() : store.getState(...args)),
      updateState: (...args) => (broken ? fault() : store.updateState(...args)),
      subscribe: (...args) => (broken ? fault() : store.subscribe(...args)),
    };
    server = await startTestServer({}, { coordinator });
    ({ traceId: registered } = await registerPending(server));
    broken = true;
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("500 internal from every trace route, with no detail in the answer", async () => {
    for (const [op, res] of askEveryTraceRoute(server, registered)) {
      const answer = await res;
      expect(answer.status, op).toBe(500);
      const body = await expectDocumented(op, answer);
      expect(body).toEqual({ error: { code: "internal", message: "internal error" } });
    }
  });
});

describe("coverage", () => {
  it("answered every documented status of every endpoint", () => {
    const all = operationsOf(doc).flatMap(([op, o]) => Object.keys(o.responses).map((status) => `${op} ${status}`));
    const missing = all.filter((pair) => !exercised.has(pair));
    expect(missing, "documented answers no request provoked").toEqual([]);
    console.info(
      `api description: ${operations.size} endpoints, ${all.length} documented endpoint × status answers, each validated against a real one`,
    );
  });
});
