import { EventSource } from "eventsource";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { type Cluster, startCluster } from "../support/cluster.js";
import { errorLines, type Nginx, startNginx } from "../support/nginx.js";
import { bindBody, newTraceId, waitUntil } from "../support/server.js";
import { openSse, type SseReader } from "../support/sse-reader.js";

/*
 * bindwatch behind Debian's nginx running the README's recipe (deploy/nginx.conf):
 * an upstream keep-alive pool in front of two instances on one Redis. Under load from
 * watchers, long-polls and clients sending bad requests at the same time, no request
 * cuts another's connection (SPEC §4.8), events are not buffered, and a graceful stop
 * of one instance hands its streams over to the other through nginx.
 */

const APP_KEY = "proxy-app-key";
const APP_SECRET = "proxy-app-secret-0123456789";
const INTERVAL_MS = 500;
const TRACES = 20;
const WATCHERS_PER_TRACE = 2;
const BAD_CLIENTS = 4;
const BAD_PHASE_MS = 5_000;

interface BadRequest {
  readonly name: string;
  readonly init: RequestInit;
  readonly path: string;
  readonly status: number;
  readonly code: string;
}

const json = { "content-type": "application/json" };
const BAD_REQUESTS: readonly BadRequest[] = [
  {
    name: "oversized body",
    path: "/v1/binds",
    init: { method: "POST", headers: json, body: JSON.stringify({ pad: "x".repeat(100 * 1024) }) },
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "wrong content type",
    path: "/v1/binds",
    init: { method: "POST", headers: { "content-type": "text/plain" }, body: "trace_id=x" },
    status: 415,
    code: "unsupported_media_type",
  },
  {
    name: "broken JSON",
    path: "/v1/binds",
    init: { method: "POST", headers: json, body: '{"trace_id": "x", "open_id":' },
    status: 400,
    code: "invalid_request",
  },
  { name: "unknown trace", path: "/v1/binds/nobody-registered-this", init: {}, status: 404, code: "not_found" },
  {
    name: "unknown trace's events",
    path: "/v1/binds/nobody-registered-this/events",
    init: {},
    status: 404,
    code: "not_found",
  },
  {
    name: "DELETE of an unknown trace",
    path: "/v1/binds/nobody-registered-this",
    init: { method: "DELETE", headers: json, body: "{}" },
    status: 404,
    code: "not_found",
  },
  {
    name: "wrong method with a body",
    path: "/v1/binds",
    init: { method: "PUT", headers: json, body: JSON.stringify({ pad: "y".repeat(2_000) }) },
    status: 405,
    code: "method_not_allowed",
  },
];

/** Sends bad requests one after another until `untilMs`; returns what each got. */
async function sendBadRequests(baseUrl: string, untilMs: number, seed: number) {
  const results: { name: string; status: number; code: string | undefined; expected: BadRequest }[] = [];
  for (let i = seed; Date.now() < untilMs; i += 1) {
    const bad = BAD_REQUESTS[i % BAD_REQUESTS.length] as BadRequest;
    const res = await fetch(`${baseUrl}${bad.path}`, { ...bad.init, signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
    } catch {
      code = `not JSON: ${text.slice(0, 80)}`;
    }
    results.push({ name: bad.name, status: res.status, code, expected: bad });
  }
  return results;
}

/** Long-polls one trace (`wait=2`) until its final state; returns every answer's status and duration. */
async function longPollLoop(baseUrl: string, traceId: string) {
  const answers: { status: number; ms: number }[] = [];
  let after = 0;
  for (;;) {
    const started = Date.now();
    const res = await fetch(`${baseUrl}/v1/binds/${traceId}?wait=2&after=${after}`, {
      signal: AbortSignal.timeout(30_000),
    });
    answers.push({ status: res.status, ms: Date.now() - started });
    if (res.status !== 200) return answers;
    const state = (await res.json()) as BindState;
    if (state.final) return answers;
    after = state.version;
  }
}

async function register(baseUrl: string, traceId: string): Promise<void> {
  const res = await fetch(`${baseUrl}/v1/binds`, {
    method: "POST",
    headers: json,
    body: JSON.stringify(bindBody(traceId)),
  });
  expect(res.status).toBe(201);
}

describe("behind nginx with the README's recipe (deploy/nginx.conf)", () => {
  let cluster: Cluster;
  let nginx: Nginx;
  const readers: SseReader[] = [];
  const sources: EventSource[] = [];

  beforeAll(async () => {
    cluster = await startCluster({ count: 2, appKey: APP_KEY, appSecret: APP_SECRET, intervalMs: INTERVAL_MS });
    nginx = await startNginx({ upstreams: cluster.instances.map((i) => new URL(i.url).host) });
  }, 120_000);

  afterAll(async () => {
    for (const reader of readers) reader.close();
    for (const source of sources) source.close();
    await nginx?.stop();
    await cluster?.stop();
  });

  it("40 watchers and 20 long-polls all end correctly while other clients send bad requests; no upstream cut", async () => {
    const traceIds = Array.from({ length: TRACES }, () => newTraceId("px"));
    for (const id of traceIds) {
      await cluster.gateway.setScript(id, scriptNever());
      await register(nginx.httpUrl, id);
    }
    const watchers: { traceId: string; reader: SseReader }[] = [];
    for (const traceId of traceIds) {
      for (let w = 0; w < WATCHERS_PER_TRACE; w += 1) {
        const reader = await openSse(`${nginx.httpUrl}/v1/binds/${traceId}/events`);
        readers.push(reader);
        expect(reader.status).toBe(200);
        watchers.push({ traceId, reader });
      }
    }
    const loops = traceIds.map((id) => longPollLoop(nginx.httpUrl, id));
    const badUntil = Date.now() + BAD_PHASE_MS;
    const bad = await Promise.all(
      Array.from({ length: BAD_CLIENTS }, (_, i) => sendBadRequests(nginx.httpUrl, badUntil, i)),
    );
    // Everything still pending, with its first event through nginx long before the end.
    for (const { reader } of watchers) expect(reader.events.map((e) => e.event)).toEqual(["pending"]);

    const boundAt = Date.now();
    for (const id of traceIds) await cluster.gateway.setScript(id, scriptBoundAfter(0));
    await Promise.all(watchers.map(({ reader }) => reader.waitFor((r) => r.ended, 20_000, "the stream to end")));
    const answers = await Promise.all(loops);

    for (const { traceId, reader } of watchers) {
      expect(reader.error).toBeNull();
      const events = reader.events.map((e) => e.event);
      expect(events, traceId).toEqual(["pending", "bound"]);
      // Not buffered: the pending event arrived at once, the final one when it happened.
      const [first, last] = [reader.events[0], reader.events.at(-1)];
      expect(first?.at).toBeLessThan(1_000);
      expect((last?.at ?? 0) - (first?.at ?? 0)).toBeGreaterThanOrEqual(BAD_PHASE_MS - 500);
      expect(reader.frames.at(-1)?.event).toBe("bound");
    }
    expect(Date.now() - boundAt).toBeLessThan(10_000);

    const polls = answers.flat();
    expect(polls.filter((a) => a.status !== 200)).toEqual([]);
    // Most of them were held (wait=2) through the bad phase.
    expect(polls.filter((a) => a.ms >= 1_900).length).toBeGreaterThanOrEqual(TRACES * 2);

    const sent = bad.flat();
    expect(sent.length).toBeGreaterThan(BAD_REQUESTS.length * BAD_CLIENTS);
    for (const r of sent)
      expect({ name: r.name, status: r.status, code: r.code }).toEqual({
        name: r.name,
        status: r.expected.status,
        code: r.expected.code,
      });
    console.info(
      `behind nginx: ${watchers.length} streams, ${polls.length} long-poll answers, ${sent.length} bad requests, ` +
        `${errorLines(await nginx.errorLog()).length} nginx error lines`,
    );
    expect(errorLines(await nginx.errorLog())).toEqual([]);
  }, 90_000);

  it("SIGTERM of one instance ends its streams with a retry hint; EventSources reconnect through nginx and get the final", async () => {
    const traceId = newTraceId("px-stop");
    await cluster.gateway.setScript(traceId, scriptNever());
    await register(nginx.httpUrl, traceId);
    const requests: number[] = [];
    const finals: string[] = [];
    for (let i = 0; i < 6; i += 1) {
      const source = new EventSource(`${nginx.httpUrl}/v1/binds/${traceId}/events`, {
        fetch: async (input, init) => {
          const res = await fetch(input, init as RequestInit);
          requests.push(res.status);
          return res;
        },
      });
      sources.push(source);
      source.addEventListener("bound", () => {
        finals.push("bound");
        source.close();
      });
      await waitUntil(() => source.readyState === EventSource.OPEN, 5_000, "the EventSource to open");
    }
    const [leaving, staying] = cluster.instances as [(typeof cluster.instances)[0], (typeof cluster.instances)[0]];
    const onLeaving = await leaving.metric("bindwatch_open_streams");
    expect(onLeaving).toBeGreaterThan(0);
    expect(await staying.metric("bindwatch_open_streams")).toBeGreaterThan(0);

    const exit = await leaving.signal("SIGTERM");
    expect(exit.code).toBe(0);
    // The streams of the stopped instance come back on the other one through nginx.
    await waitUntil(
      async () => (await staying.metric("bindwatch_open_streams")) === 6,
      15_000,
      "6 streams on the other",
    );
    expect(requests.length).toBe(6 + onLeaving);
    expect(requests.every((status) => status === 200)).toBe(true);

    await cluster.gateway.setScript(traceId, scriptBoundAfter(0));
    await waitUntil(() => finals.length === 6, 15_000, "every EventSource to get the final");
  }, 60_000);
});
