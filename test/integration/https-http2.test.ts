import { mkdtemp, readFile, rm } from "node:fs/promises";
import { type ClientHttp2Session, connect } from "node:http2";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { ConfigError } from "../../src/runtime/config-env.js";
import { createNodeHttpServer } from "../../src/runtime/node-http-server.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { makeSelfSignedCertificate } from "../support/nginx.js";
import { bindBody, newTraceId, startTestServer, type TestServer, waitUntil } from "../support/server.js";

/*
 * TLS_CERT_FILE and TLS_KEY_FILE: Node serves HTTPS itself, HTTP/2 and HTTP/1.1 on one
 * port. On real sockets: a page's many streams share one HTTP/2 connection, an early
 * answer on one stream leaves the others alone, HTTP/1.1 clients still get the whole
 * API, a bad TLS setting stops start-up naming its variable, and a graceful stop ends
 * HTTP/2 streams with their retry hint and closes the connection.
 */

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** When the first byte of the body came, and when the stream ended (ms since the epoch). */
  readonly firstAt: number;
  readonly endedAt: number;
}

/** One request on an HTTP/2 session, its whole answer. */
function h2(
  session: ClientHttp2Session,
  method: string,
  path: string,
  opts: { readonly body?: string; readonly headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": method, ":path": path, ...opts.headers });
    let status = 0;
    let headers: Answer["headers"] = {};
    let text = "";
    let firstAt = 0;
    stream.setEncoding("utf8");
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = h;
    });
    stream.on("data", (chunk: string) => {
      if (firstAt === 0) firstAt = Date.now();
      text += chunk;
    });
    stream.on("end", () => resolve({ status, headers, text, firstAt, endedAt: Date.now() }));
    stream.on("error", reject);
    stream.end(opts.body);
  });
}

const json = { "content-type": "application/json" };

describe("HTTPS with HTTP/2 from Node (TLS_CERT_FILE, TLS_KEY_FILE)", () => {
  let dir = "";
  let certFile = "";
  let keyFile = "";
  let ca: Buffer = Buffer.alloc(0);
  let server: TestServer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bindwatch-tls-"));
    ({ certFile, keyFile } = await makeSelfSignedCertificate(dir));
    ca = await readFile(certFile);
    server = await startTestServer({ TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `use` on one HTTP/2 connection, which must come through it with no error and still open. */
  async function onOneSession(url: string, use: (session: ClientHttp2Session) => Promise<void>): Promise<void> {
    const session = connect(url, { ca });
    const sessionErrors: unknown[] = [];
    session.on("error", (err) => sessionErrors.push(err));
    try {
      await use(session);
      expect(sessionErrors).toEqual([]);
      expect(session.destroyed).toBe(false);
    } finally {
      session.close();
    }
  }

  it("carries 12 registrations and their 12 streams on one HTTP/2 connection, every stream open at once, each to its final event", async () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    await onOneSession(server.url, async (session) => {
      const traceIds = Array.from({ length: 12 }, () => newTraceId("h2"));
      for (const traceId of traceIds) {
        server.simulator.setScript(traceId, scriptBoundAfter(4));
        const posted = await h2(session, "POST", "/v1/binds", {
          body: JSON.stringify(bindBody(traceId)),
          headers: json,
        });
        expect(posted.status).toBe(201);
      }
      const streams = await Promise.all(traceIds.map((id) => h2(session, "GET", `/v1/binds/${id}/events`)));
      for (const [i, stream] of streams.entries()) {
        expect(stream.status, traceIds[i]).toBe(200);
        expect(stream.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
        expect(stream.text).toMatch(/^retry: \d+\n/);
        expect(stream.text).toContain("event: pending\n");
        expect(stream.text).toContain("event: bound\n");
        expect(stream.text.indexOf("event: bound")).toBeGreaterThan(stream.text.indexOf("event: pending"));
      }
      // More than HTTP/1.1's six per origin: every stream had begun before the first one ended.
      const lastStart = Math.max(...streams.map((s) => s.firstAt));
      const firstEnd = Math.min(...streams.map((s) => s.endedAt));
      expect(lastStart).toBeLessThan(firstEnd);
    });
  }, 30_000);

  it("answers 413 and 415 on their own streams while a held long-poll and an SSE stream on the same connection live on and end correctly", async () => {
    await onOneSession(server.url, async (session) => {
      const traceId = newTraceId("h2-early");
      server.simulator.setScript(traceId, scriptNever());
      expect(
        (await h2(session, "POST", "/v1/binds", { body: JSON.stringify(bindBody(traceId)), headers: json })).status,
      ).toBe(201);
      // Held until `wait` runs out: nothing changes a trace that never binds once it has its first answer.
      await waitUntil(() => (server.simulator.getTrace(traceId).calls.length > 0 ? true : null), 5_000, "a first call");
      const { version } = JSON.parse((await h2(session, "GET", `/v1/binds/${traceId}`)).text) as { version: number };
      const startedAt = Date.now();
      const events = h2(session, "GET", `/v1/binds/${traceId}/events`);
      const held = h2(session, "GET", `/v1/binds/${traceId}?wait=3&after=${version}`);

      const tooLarge = await h2(session, "POST", "/v1/binds", { body: "x".repeat(100_000), headers: json });
      expect(tooLarge.status).toBe(413);
      expect(JSON.parse(tooLarge.text)).toMatchObject({ error: { code: "payload_too_large" } });
      const wrongType = await h2(session, "POST", "/v1/binds", {
        body: JSON.stringify(bindBody(newTraceId("h2-type"))),
        headers: { "content-type": "text/plain" },
      });
      expect(wrongType.status).toBe(415);

      const longPoll = await held;
      expect(longPoll.status).toBe(200);
      expect(JSON.parse(longPoll.text)).toMatchObject({ trace_id: traceId, status: "pending" });
      expect(longPoll.endedAt - startedAt).toBeGreaterThanOrEqual(2_900);

      const cancelled = await h2(session, "DELETE", `/v1/binds/${traceId}`);
      expect(cancelled.status).toBe(200);
      const stream = await events;
      expect(stream.status).toBe(200);
      expect(stream.text).toContain("event: cancelled\n");
      expect(stream.endedAt - startedAt).toBeGreaterThanOrEqual(2_900);
    });
  }, 30_000);

  it("speaks HTTP/1.1 on the same port to a client that offers no h2: a registration and its stream to the end", async () => {
    const http1 = (method: string, path: string, body?: string) =>
      new Promise<{ status: number; protocol: string; text: string }>((resolve, reject) => {
        const req = httpsRequest(
          { host: "127.0.0.1", port: server.port, method, path, ca, headers: body ? json : {} },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (chunk: string) => {
              text += chunk;
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, protocol: res.httpVersion, text }));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    const traceId = newTraceId("h1-tls");
    server.simulator.setScript(traceId, scriptBoundAfter(1));
    const posted = await http1("POST", "/v1/binds", JSON.stringify(bindBody(traceId)));
    expect(posted).toMatchObject({ status: 201, protocol: "1.1" });
    const stream = await http1("GET", `/v1/binds/${traceId}/events`);
    expect(stream.status).toBe(200);
    expect(stream.text).toContain("event: pending\n");
    expect(stream.text).toContain("event: bound\n");
    expect(JSON.parse((await http1("GET", "/healthz")).text)).toMatchObject({ status: "ok", mode: "simulator" });
  }, 30_000);

  it("refuses one TLS file without the other, and a file it cannot read or use, naming the variable", async () => {
    expect(() => parseConfig({ TLS_CERT_FILE: certFile })).toThrow(ConfigError);
    expect(() => parseConfig({ TLS_CERT_FILE: certFile })).toThrow(/TLS_KEY_FILE/);
    expect(() => parseConfig({ TLS_KEY_FILE: keyFile })).toThrow(/TLS_CERT_FILE/);
    await expect(startTestServer({ TLS_CERT_FILE: join(dir, "missing.pem"), TLS_KEY_FILE: keyFile })).rejects.toThrow(
      /TLS_CERT_FILE: cannot be read/,
    );
    // The key given as the certificate: not a certificate and its key.
    await expect(startTestServer({ TLS_CERT_FILE: keyFile, TLS_KEY_FILE: keyFile })).rejects.toThrow(
      /TLS_CERT_FILE: is not a certificate that TLS_KEY_FILE's private key fits/,
    );
  });

  it("closes an HTTP/2 connection once no stream has been open on it for the idle time, never one with a quiet stream open", async () => {
    const IDLE_MS = 300;
    const QUIET_MS = 1_000;
    const idle = createNodeHttpServer(
      (req, res) => {
        if (req.url === "/quiet") {
          // Open, with nothing on the wire, for longer than the idle time.
          res.writeHead(200);
          setTimeout(() => res.end("done"), QUIET_MS);
        } else res.end("ok");
      },
      { cert: await readFile(certFile), key: await readFile(keyFile) },
      IDLE_MS,
    );
    const port = await idle.listen(0, "127.0.0.1");
    try {
      const closedAfter = async (path: string): Promise<{ text: string; closedMs: number }> => {
        const session = connect(`https://127.0.0.1:${port}`, { ca });
        session.on("error", () => {});
        const closed = new Promise<number>((resolve) => session.once("close", () => resolve(Date.now())));
        const answer = await h2(session, "GET", path);
        return { text: answer.text, closedMs: (await closed) - answer.endedAt };
      };
      const quick = await closedAfter("/");
      expect(quick.text).toBe("ok");
      expect(quick.closedMs).toBeGreaterThanOrEqual(IDLE_MS - 50);
      expect(quick.closedMs).toBeLessThan(IDLE_MS + 2_000);
      // The quiet stream outlived the idle time and ended as the server meant; the close came after.
      const quiet = await closedAfter("/quiet");
      expect(quiet.text).toBe("done");
      expect(quiet.closedMs).toBeGreaterThanOrEqual(IDLE_MS - 50);
    } finally {
      idle.cutAll();
      await idle.close();
    }
  }, 30_000);

  it("stops gracefully: an open HTTP/2 stream gets its retry hint and ends, and the connection closes", async () => {
    const stopping = await startTestServer({ TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile });
    const session = connect(stopping.url, { ca });
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    session.on("error", () => {});
    const traceId = newTraceId("h2-stop");
    stopping.simulator.setScript(traceId, scriptNever());
    expect(
      (await h2(session, "POST", "/v1/binds", { body: JSON.stringify(bindBody(traceId)), headers: json })).status,
    ).toBe(201);
    const events = h2(session, "GET", `/v1/binds/${traceId}/events`);
    // The stream is open once the server holds it.
    for (let i = 0; i < 200 && stopping.streams.size === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(stopping.streams.size).toBe(1);
    const stopStarted = Date.now();
    await stopping.stop();
    expect(Date.now() - stopStarted).toBeLessThan(10_000);
    const stream = await events;
    expect(stream.text).toContain("event: pending\n");
    // The stop's hint, after the state: reconnect (elsewhere) after 0.5–2 s.
    const hint = /\nretry: (\d+)\n/.exec(stream.text.slice(stream.text.indexOf("event: pending")));
    expect(Number(hint?.[1])).toBeGreaterThanOrEqual(500);
    expect(Number(hint?.[1])).toBeLessThanOrEqual(2_000);
    await closed;
  }, 30_000);
});
