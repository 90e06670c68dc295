import type { HttpBindings } from "@hono/node-server";
import type { Context } from "hono";
import { type BodyReader, decodeBody, readWebBody } from "../http/body.js";

/**
 * A request header as `Headers.get` answers it (every value of the name, joined with
 * ", "), read from Node's IncomingMessage.rawHeaders.
 *
 * @hono/node-server 1.19 (dist/request.mjs, the lightweight request's `headers` getter)
 * builds a Web `Headers` from rawHeaders on the first `c.req.header()`, and its response
 * `close` listener (dist/listener.mjs) holds the request, so that Headers lives as long
 * as an SSE stream does: about half a KiB per held stream (heap snapshots, `npm run bench
 * -- --profile`). Read here, nothing is built.
 */
export function readNodeHeader(c: Context, name: string): string | undefined {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return c.req.header(name);
  const raw = incoming.rawHeaders;
  let value: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i] as string;
    if (key.length !== name.length || key.toLowerCase() !== name) continue;
    const v = raw[i + 1] as string;
    value = value === undefined ? v : `${value}, ${v}`;
  }
  return value;
}

/** The request body broke off before its end (the client went away, or sent a bad chunk). */
export class BodyAbortedError extends Error {
  override readonly name = "BodyAbortedError";
}

/**
 * The body read from Node's IncomingMessage, up to `maxBytes` (`null` past it; the request
 * is paused there, and node-listener.ts closes the connection after the answer).
 *
 * @hono/node-server 1.19 turns the first read of `c.req.raw.body` into a whole Web
 * `Request` (an AbortController, a ReadableStream over the IncomingMessage, undici's
 * Request), which was a quarter of the CPU of a registration (`npm run bench -- --only
 * register --profile`); the bytes come from the same stream here without it.
 */
export const readNodeBody: BodyReader = (c, maxBytes) => {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return readWebBody(c, maxBytes);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onBreak);
      incoming.off("close", onBreak);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) {
        chunks.push(chunk);
        return;
      }
      done();
      incoming.pause();
      resolve(null);
    };
    const onEnd = () => {
      done();
      resolve(decodeBody(chunks, size));
    };
    const onBreak = () => {
      done();
      reject(new BodyAbortedError("the request body ended before it was complete"));
    };
    if (incoming.complete && incoming.readableEnded) {
      resolve("");
      return;
    }
    incoming.on("data", onData);
    incoming.on("end", onEnd);
    incoming.on("error", onBreak);
    incoming.on("close", onBreak);
  });
};
