import { createServer, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readNodeHeader } from "../../src/runtime/node-headers.js";
import { createNodeRequestListener } from "../../src/runtime/node-listener.js";

/*
 * readNodeHeader must answer exactly what c.req.header answers (Headers.get: every value
 * of a name, joined with ", "), on real requests over a socket, whatever the case and
 * repetition of the names on the wire.
 */

const NAMES = ["authorization", "last-event-id", "content-type", "x-missing", "x-repeated"];

let server: Server;
let port: number;

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
  server = createServer(createNodeRequestListener(app.fetch, { maxDrainBytes: 16_384 }));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** Sends a raw request (header lines as written) and returns the JSON body of the answer. */
function rawGet(path: string, headerLines: readonly string[]): Promise<unknown> {
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
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${headerLines.map((l) => `${l}\r\n`).join("")}\r\n`,
    );
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
