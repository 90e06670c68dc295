import type { HttpBindings } from "@hono/node-server";
import type { Context } from "hono";

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
