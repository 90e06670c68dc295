import { Agent, request as httpRequest } from "node:http";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { KEEP_ALIVE_TIMEOUT_MS } from "../../src/runtime/node-listener.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { bindBody, newTraceId, startTestServer, type TestServer, waitUntil } from "../support/server.js";

/*
 * SPEC §4.8 on real sockets: a request answered before its body was read never ends
 * the connection that carries the next request. Each case runs on one keep-alive
 * client with a single socket (as a proxy's upstream pool would use it): the bad
 * request gets its whole answer, then a good POST, a long-poll held 3 s and an SSE
 * stream open for 3 s follow — on the same socket, or on a fresh one when the answer
 * said `Connection: close` — and all of them end as they should.
 */

const API_KEY = "connection-isolation-api-key";
const ORIGIN = "https://app.example.com";
const HOLD_S = 3;

interface Sent {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** Which of this client's sockets carried it (1, 2, …). */
  readonly socket: number;
  readonly ms: number;
}

interface Outgoing {
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  /** Sent with Content-Length, at once. */
  readonly body?: string;
  /** The body in pieces, `pauseMs` apart: with Content-Length when `chunked` is not set. */
  readonly pieces?: readonly string[];
  /** Transfer-Encoding: chunked, no length. */
  readonly chunked?: boolean;
  readonly pauseMs?: number;
}

/** A keep-alive client with one socket at a time, numbering the sockets it uses. */
function singleSocketClient(port: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const ids = new WeakMap<Socket, number>();
  let opened = 0;
  const socketErrors: string[] = [];
  function send(out: Outgoing): Promise<Sent> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const headers = { ...out.headers };
      const length = out.body ?? (out.chunked ? undefined : out.pieces?.join(""));
      if (length !== undefined) headers["content-length"] = String(Buffer.byteLength(length));
      const req = httpRequest(
        { host: "127.0.0.1", port, method: out.method, path: out.path, headers, agent },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            text += chunk;
          });
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              text,
              socket: ids.get(req.socket as Socket) ?? 0,
              ms: Date.now() - started,
            }),
          );
          res.on("error", reject);
        },
      );
      req.on("socket", (socket) => {
        if (!ids.has(socket)) {
          opened += 1;
          ids.set(socket, opened);
          socket.on("error", (err) => socketErrors.push(err.message));
        }
      });
      req.on("error", reject);
      req.setTimeout(30_000, () => req.destroy(new Error("client timeout")));
      if (out.pieces) void writePieces(out.pieces, out.pauseMs ?? 0);
      else req.end(out.body);
      async function writePieces(pieces: readonly string[], pauseMs: number) {
        for (const [i, piece] of pieces.entries()) {
          if (i > 0 && pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
          if (req.destroyed) return;
          req.write(piece);
        }
        req.end();
      }
    });
  }
  return { send, socketErrors, close: () => agent.destroy() };
}

/**
 * On one raw socket: sends `head`, waits for its header block, then sends `next` and reads
 * until `done` says the whole text has come. Returns the header block and what followed it.
 */
function headThenNext(port: number, head: string, next: string, done: (rest: string) => boolean) {
  return new Promise<{ headBlock: string; rest: string }>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    let headBlock: string | null = null;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no whole answer in 10 s: ${JSON.stringify(text)}`));
    }, 10_000);
    socket.setEncoding("utf8");
    socket.on("error", reject);
    socket.on("connect", () => socket.write(head));
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (headBlock === null) {
        const end = text.indexOf("\r\n\r\n");
        if (end === -1) return;
        headBlock = text.slice(0, end + 4);
        socket.write(next);
      }
      const rest = text.slice(headBlock.length);
      if (done(rest)) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ headBlock, rest });
      }
    });
  });
}

interface EarlyCase {
  readonly name: string;
  readonly request: Outgoing;
  readonly status: number;
  readonly code: string;
  /** Whether the answer keeps the connection (the body is read) or closes it (Connection: close). */
  readonly keeps: boolean;
}

const json = { "content-type": "application/json" };
const auth = { authorization: `Bearer ${API_KEY}` };
const big = "x".repeat(100 * 1024);
const small = JSON.stringify({ note: "y".repeat(200) });
/** A small body whose second half comes 600 ms after the first: past @hono/node-server's 500 ms drain timer. */
const slowSmall = { pieces: [small.slice(0, 100), small.slice(100)], pauseMs: 600 } as const;

const CASES: readonly EarlyCase[] = [
  {
    name: "413 for a declared length past the cap",
    request: { method: "POST", path: "/v1/binds", headers: { ...json, ...auth }, body: big },
    status: 413,
    code: "payload_too_large",
    keeps: false,
  },
  {
    name: "413 for a declared length past the cap, sent slowly",
    request: {
      method: "POST",
      path: "/v1/binds",
      headers: { ...json, ...auth },
      pieces: [big.slice(0, 1000), big.slice(1000, 30_000)],
      pauseMs: 600,
    },
    status: 413,
    code: "payload_too_large",
    keeps: false,
  },
  {
    name: "413 for a chunked body past the cap",
    request: {
      method: "POST",
      path: "/v1/binds",
      headers: { ...json, ...auth },
      chunked: true,
      pieces: [big.slice(0, 9000), big],
    },
    status: 413,
    code: "payload_too_large",
    keeps: false,
  },
  {
    name: "415 for a small body of another type",
    request: { method: "POST", path: "/v1/binds", headers: { "content-type": "text/plain", ...auth }, ...slowSmall },
    status: 415,
    code: "unsupported_media_type",
    keeps: true,
  },
  {
    // The body limit reads a chunked body (up to the cap) before the type is looked at.
    name: "415 for a small chunked body of another type",
    request: {
      method: "POST",
      path: "/v1/binds",
      headers: { "content-type": "text/plain", ...auth },
      chunked: true,
      pieces: [small, small],
    },
    status: 415,
    code: "unsupported_media_type",
    keeps: true,
  },
  {
    name: "401 for a POST without an API key",
    request: { method: "POST", path: "/v1/binds", headers: json, ...slowSmall },
    status: 401,
    code: "unauthorized",
    keeps: true,
  },
  {
    name: "401 for a DELETE with a body and no API key",
    request: { method: "DELETE", path: "/v1/binds/some-trace", headers: json, ...slowSmall },
    status: 401,
    code: "unauthorized",
    keeps: true,
  },
  {
    name: "404 for an unknown path with a body",
    request: { method: "POST", path: "/v1/nowhere", headers: json, ...slowSmall },
    status: 404,
    code: "not_found",
    keeps: true,
  },
  {
    name: "405 for a wrong method with a body",
    request: { method: "PUT", path: "/v1/binds", headers: json, ...slowSmall },
    status: 405,
    code: "method_not_allowed",
    keeps: true,
  },
  {
    name: "400 for a malformed trace_id with a body",
    request: { method: "DELETE", path: "/v1/binds/bad!id", headers: { ...json, ...auth }, ...slowSmall },
    status: 400,
    code: "invalid_request",
    keeps: true,
  },
  {
    name: "404 for a DELETE of an unknown trace with a body",
    request: { method: "DELETE", path: "/v1/binds/nobody-knows-it", headers: { ...json, ...auth }, ...slowSmall },
    status: 404,
    code: "not_found",
    keeps: true,
  },
  {
    name: "400 from the adapter for a backslash in the path, with a body",
    request: { method: "POST", path: "/v1\\binds", headers: json, ...slowSmall },
    status: 400,
    code: "invalid_request",
    keeps: true,
  },
  {
    name: "400 from the adapter for a request target it refuses, with a large body",
    request: { method: "POST", path: "/v1\\binds", headers: json, body: big },
    status: 400,
    code: "invalid_request",
    keeps: false,
  },
  {
    name: "a CORS preflight with a body",
    request: {
      method: "OPTIONS",
      path: "/v1/binds",
      headers: { origin: ORIGIN, "access-control-request-method": "POST", ...json },
      ...slowSmall,
    },
    status: 204,
    code: "",
    keeps: true,
  },
];

describe("connection isolation on one keep-alive socket (SPEC §4.8)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ API_KEYS: API_KEY, CORS_ORIGINS: ORIGIN, POLL_INTERVAL_MS: "200" });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it.concurrent.each(CASES)("$name: then a POST, a held long-poll and a stream on the same client", async (c) => {
    const client = singleSocketClient(server.port);
    try {
      const bad = await client.send(c.request);
      expect(bad.status).toBe(c.status);
      if (c.code !== "") expect((JSON.parse(bad.text) as { error: { code: string } }).error.code).toBe(c.code);

      const traceId = newTraceId("iso");
      server.simulator.setScript(traceId, scriptNever());
      const posted = await client.send({
        method: "POST",
        path: "/v1/binds",
        headers: { ...json, ...auth },
        body: JSON.stringify(bindBody(traceId)),
      });
      expect(posted.status).toBe(201);
      // The first answer from TOP is a change of its own; the long-poll waits for the next one.
      const { version } = await waitUntil(
        async () => {
          const state = (await (await fetch(`${server.url}/v1/binds/${traceId}`)).json()) as BindState;
          return state.upstream !== null ? state : null;
        },
        5_000,
        "the first poll of the trace",
      );

      const held = await client.send({ method: "GET", path: `/v1/binds/${traceId}?wait=${HOLD_S}&after=${version}` });
      expect(held.status).toBe(200);
      expect(held.ms).toBeGreaterThanOrEqual(HOLD_S * 1000 - 50);
      expect((JSON.parse(held.text) as { status: string }).status).toBe("pending");

      // The stream stays open HOLD_S seconds before the device binds; it must end on `bound`.
      const streamed = client.send({ method: "GET", path: `/v1/binds/${traceId}/events` });
      const bindLater = setTimeout(() => server.simulator.setScript(traceId, scriptBoundAfter(0)), HOLD_S * 1000);
      const stream = await streamed.finally(() => clearTimeout(bindLater));
      expect(stream.status).toBe(200);
      expect(stream.ms).toBeGreaterThanOrEqual(HOLD_S * 1000);
      const events = [...stream.text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
      expect(events.at(-1)).toBe("bound");

      // Nothing was cut on the way: no socket error, and the socket still serves.
      const after = await client.send({ method: "GET", path: "/healthz" });
      expect(after.status).toBe(200);
      expect(client.socketErrors).toEqual([]);
      // One socket throughout when the early answer kept it; a fresh one after `Connection: close`.
      expect(bad.headers.connection).toBe(c.keeps ? "keep-alive" : "close");
      expect([posted.socket, held.socket, stream.socket, after.socket]).toEqual(
        Array(4).fill(c.keeps ? bad.socket : bad.socket + 1),
      );
    } finally {
      client.close();
    }
  });

  it.concurrent.each([
    ["the SSE stream", (id: string) => `/v1/binds/${id}/events`],
    ["the long-poll", (id: string) => `/v1/binds/${id}?wait=1`],
  ])("a HEAD of %s gets its headers only, and the next request on the socket its own answer", async (_, path) => {
    const traceId = newTraceId("iso-head");
    server.simulator.setScript(traceId, scriptNever());
    const posted = await fetch(`${server.url}/v1/binds`, {
      method: "POST",
      headers: { ...json, ...auth },
      body: JSON.stringify(bindBody(traceId)),
    });
    expect(posted.status).toBe(201);
    const { headBlock, rest } = await headThenNext(
      server.port,
      `HEAD ${path(traceId)} HTTP/1.1\r\nHost: bindwatch\r\nAccept: text/event-stream\r\n\r\n`,
      "GET /healthz HTTP/1.1\r\nHost: bindwatch\r\n\r\n",
      (text) => text.includes("\r\n\r\n{") && text.endsWith("}"),
    );
    expect(headBlock).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(headBlock.toLowerCase()).toContain("connection: keep-alive");
    // Not a byte of a body (an event, a chunk) between the HEAD's headers and the next answer.
    expect(rest).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(JSON.parse(rest.slice(rest.indexOf("\r\n\r\n") + 4))).toMatchObject({ status: "ok" });
  });

  it.concurrent("keeps an idle keep-alive connection open past the usual proxies' 60 s idle timeout", async () => {
    expect(KEEP_ALIVE_TIMEOUT_MS).toBeGreaterThan(60_000);
    const client = singleSocketClient(server.port);
    try {
      const first = await client.send({ method: "GET", path: "/healthz" });
      expect(first.headers["keep-alive"]).toBe(`timeout=${KEEP_ALIVE_TIMEOUT_MS / 1000}`);
      await new Promise((resolve) => setTimeout(resolve, 61_000));
      const second = await client.send({ method: "GET", path: "/healthz" });
      expect(second.status).toBe(200);
      expect(second.socket).toBe(first.socket);
      expect(client.socketErrors).toEqual([]);
    } finally {
      client.close();
    }
  }, 70_000);
});
