import { createServer, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeRequestListener } from "../../src/runtime/node-listener.js";
import { BodyAbortedError, readNodeBody, readNodeHeader } from "../../src/runtime/node-request.js";

/*
 * readNodeBody must give the text c.req.text() gives, `null` past the limit, and reject
 * a body that breaks off. readNodeHeader must answer exactly what c.req.header answers (Headers.get: every value
 * of a name, joined with ", "), on real requests over a socket, whatever the case and
 * repetition of the names on the wire.
 */

const NAMES = ["authorization", "last-event-id", "content-type", "x-missing", "x-repeated"];

let server: Server;
let port: number;
const LIMIT = 64;
/** What readNodeBody did with the last body that broke off. */
let lastBreak: Promise<unknown> | null = null;

beforeAll(async () => {
  const app = new Hono();
  app.get("/headers", (c) =>
    c.json(Object.fromEntries(NAMES.map((name) => [name, { node: readNodeHeader(c, name) ?? null }]))),
  );
  app.get("/both", (c) => {
    // The node reading first: it must not depend on (or cause) the Web Headers being built.
    const node = NAMES.map((name) => readNodeHeader(c, name) ?? null);
    const web = NAMES.map((name) => c.req.header(name) ?? null);
    return c.json({ node, web });
  });
  app.post("/body/node", async (c) => c.json({ text: await readNodeBody(c, LIMIT) }));
  app.post("/body/web", async (c) => c.json({ text: await c.req.text() }));
  app.post("/body/break", async (c) => {
    lastBreak = readNodeBody(c, LIMIT).then(
      (text) => ({ text }),
      (err: unknown) => err,
    );
    await lastBreak;
    return c.json({});
  });
  server = createServer(createNodeRequestListener(app.fetch, { maxDrainBytes: 16_384 }));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** Sends a raw request (header lines as written) and returns the JSON body of the answer. */
function rawGet(path: string, headerLines: readonly string[]): Promise<unknown> {
  return rawRequest("GET", path, headerLines, []);
}

/** A raw request with its body written as the given pieces (bytes as they go on the wire). */
function rawRequest(
  method: string,
  path: string,
  headerLines: readonly string[],
  pieces: readonly Buffer[],
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    socket.on("data", (d) => {
      text += d.toString("latin1");
    });
    socket.on("error", reject);
    socket.on("end", () => {
      const body = text.slice(text.indexOf("\r\n\r\n") + 4);
      try {
        resolve(JSON.parse(body));
      } catch (err) {
        reject(new Error(`not JSON: ${text}`, { cause: err }));
      }
    });
    socket.write(
      `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${headerLines.map((l) => `${l}\r\n`).join("")}\r\n`,
    );
    for (const piece of pieces) socket.write(piece);
  });
}

describe("readNodeHeader", () => {
  it.each([
    ["none of them", []],
    ["one of each, in odd cases", ["AUTHORIZATION: Bearer abc", "Last-Event-Id: 7", "content-TYPE: text/plain"]],
    ["repeated names, mixed case", ["X-Repeated: one", "x-repeated: two", "X-REPEATED: three", "last-event-id: 3"]],
    ["repeated Authorization", ["Authorization: Bearer a", "authorization: Bearer b"]],
    ["empty and spaced values", ["x-repeated:", "Last-Event-ID:   12  ", "x-repeated: after-empty"]],
  ])("answers as c.req.header does: %s", async (_label, lines) => {
    const answer = (await rawGet("/both", lines)) as { node: unknown[]; web: unknown[] };
    expect(answer.node).toEqual(answer.web);
  });

  it("reads the values it is given", async () => {
    const answer = (await rawGet("/headers", ["X-Repeated: one", "x-repeated: two", "Last-Event-ID: 42"])) as Record<
      string,
      { node: string | null }
    >;
    expect(answer["x-repeated"]?.node).toBe("one, two");
    expect(answer["last-event-id"]?.node).toBe("42");
    expect(answer["x-missing"]?.node).toBeNull();
  });

  it("falls back to c.req.header off Node (no IncomingMessage in the context)", async () => {
    const app = new Hono();
    app.get("/", (c) => c.text(readNodeHeader(c, "last-event-id") ?? "none"));
    const res = await app.request("/", { headers: { "Last-Event-ID": "5" } });
    expect(await res.text()).toBe("5");
  });
});

/** One body sent with Content-Length, or chunked in pieces of `pieceSize` bytes. */
function post(path: string, body: Buffer, chunked: boolean, pieceSize = 7): Promise<unknown> {
  if (!chunked) return rawRequest("POST", path, [`Content-Length: ${body.length}`], [body]);
  const pieces: Buffer[] = [];
  for (let i = 0; i < body.length; i += pieceSize) {
    const part = body.subarray(i, i + pieceSize);
    pieces.push(Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from("\r\n"));
  }
  pieces.push(Buffer.from("0\r\n\r\n"));
  return rawRequest("POST", path, ["Transfer-Encoding: chunked"], pieces);
}

describe("readNodeBody", () => {
  const bodies: [string, Buffer][] = [
    ["empty", Buffer.alloc(0)],
    ["JSON", Buffer.from('{"trace_id":"t-1","open_id":"o"}')],
    ["exactly the limit", Buffer.alloc(LIMIT, "a")],
    ["a byte-order mark", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')])],
    [
      "invalid UTF-8 and a character split across pieces",
      Buffer.from([0x7b, 0xff, 0xfe, 0xe2, 0x82, 0xac, 0xc3, 0x7d]),
    ],
  ];
  for (const chunked of [false, true]) {
    it.each(
      bodies,
    )(`gives the text c.req.text() gives (${chunked ? "chunked" : "Content-Length"}): %s`, async (_l, body) => {
      const node = (await post("/body/node", body, chunked, 3)) as { text: string | null };
      const web = (await post("/body/web", body, chunked, 3)) as { text: string };
      expect(node.text).toBe(web.text);
    });
  }

  it("answers null once the body passes the limit, chunked or declared", async () => {
    for (const chunked of [false, true]) {
      const answer = (await post("/body/node", Buffer.alloc(LIMIT + 1, "b"), chunked)) as { text: string | null };
      expect(answer.text).toBeNull();
    }
  });

  it("rejects a body that breaks off before its end", async () => {
    lastBreak = null;
    const socket = connect(port, "127.0.0.1");
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write(`POST /body/break HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{"half":`);
    const started = Date.now();
    while (lastBreak === null && Date.now() - started < 5_000) await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
    expect(await lastBreak).toBeInstanceOf(BodyAbortedError);
  });
});
