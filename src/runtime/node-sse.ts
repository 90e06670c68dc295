import type { ServerResponse } from "node:http";
import type { HttpBindings } from "@hono/node-server";
import type { Context } from "hono";
import type { SseChannel } from "../http/sse.js";

/**
 * SSE written straight to Node's ServerResponse instead of through a Web
 * ReadableStream: no Request object, stream, reader or pending read per client,
 * and the final event goes out with the end of the response in one write. The
 * handler then answers `x-hono-already-sent` so @hono/node-server writes nothing.
 * Measured by `npm run bench`: about half the memory per stream and a third of the
 * CPU per event of the ReadableStream path.
 */
export function openNodeSseChannel(c: Context, headers: Headers): SseChannel | null {
  const outgoing = (c.env as Partial<HttpBindings> | undefined)?.outgoing as ServerResponse | undefined;
  if (!outgoing || outgoing.headersSent || outgoing.destroyed) return null;
  outgoing.writeHead(200, Object.fromEntries(headers));
  // Headers go out at once: EventSource reports `open` before the first event.
  outgoing.flushHeaders();
  return {
    queuedBytes: () => outgoing.writableLength,
    write: (chunk) => {
      outgoing.write(chunk);
    },
    end: (chunk) => {
      if (chunk) outgoing.end(chunk);
      else outgoing.end();
    },
    destroy: () => {
      outgoing.destroy();
    },
    onClose: (fn) => {
      if (outgoing.destroyed || outgoing.writableFinished) fn();
      else outgoing.once("close", fn);
    },
  };
}
