import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Socket } from "node:net";
import { getRequestListener } from "@hono/node-server";

/*
 * Connection isolation on Node (SPEC §4.8): nothing one request does may end a
 * connection that has moved on to another request.
 *
 * @hono/node-server 1.19 (`drainIncoming` in dist/listener.mjs) answers a request
 * whose body was not read by draining the body and, if that has not ended within
 * 500 ms, calling `socket.destroySoon()` — on the socket, whatever request it
 * carries by then. A keep-alive client or a proxy's upstream pool that sent its
 * next request on that socket loses it. So its clean-up is switched off
 * (`autoCleanupIncoming: false`) and this listener settles an unread body itself,
 * once the answer's headers go out:
 *
 * - a body declared within `maxDrainBytes` is read and discarded, so the socket
 *   carries the next request once it is in; the only timer (a body that stalls)
 *   acts while the body is still unread, when no other request can be on the socket;
 * - any other body (larger, or chunked with no length) gets its answer with
 *   `Connection: close` and a lingering close: the server half-closes after the
 *   answer and reads and discards what the client still sends for a while, so
 *   the client reads the answer instead of a reset (what nginx does).
 */

/** How long a body declared small may take to arrive after its early answer. */
const DRAIN_TIMEOUT_MS = 10_000;
/** How long a connection closed after an early answer keeps reading before it is dropped. */
const LINGER_MS = 5_000;

/**
 * Idle keep-alive connections stay open this long: above the upstream idle timeouts of
 * the usual proxies (nginx `keepalive_timeout` 60 s, load balancers 60 s), so a proxy
 * never sends a request on a connection that bindwatch is closing.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 75_000;

export interface NodeListenerOptions {
  /** Passed to @hono/node-server: the host used to build request URLs. */
  readonly hostname?: string;
  /** An answer for a request the adapter itself refuses (bad target or Host). */
  readonly errorHandler?: (err: unknown) => Response | Promise<Response>;
  /** A body declared up to this many bytes is read after an early answer; a larger one closes the connection. */
  readonly maxDrainBytes: number;
}

type FetchCallback = Parameters<typeof getRequestListener>[0];
/** A request listener for node:http and node:http2 (whose HTTP/1.1 requests come as node:http's). */
export type Listener = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

function noop(): void {}

/** A request declares a body with Content-Length above zero or with Transfer-Encoding. */
function declaresBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/**
 * Reads and discards the rest of a body nobody will read. Readable.toWeb (which the
 * adapter's Request body is made of) pauses the request when its queue is full and
 * nobody pulls any more: its listener goes, so the body flows to the end.
 */
function drainBody(req: IncomingMessage): void {
  req.removeAllListeners("data");
  req.on("data", noop);
  req.resume();
  const stalled = setTimeout(() => req.socket?.destroy(), DRAIN_TIMEOUT_MS);
  stalled.unref();
  const done = () => clearTimeout(stalled);
  req.once("end", done);
  req.once("close", done);
}

/**
 * Node ends the socket of a `Connection: close` answer with `socket.destroySoon()`
 * (lib/_http_server.js, resOnFinish), which closes it while the client may still be
 * sending a body: the kernel then answers that data with a reset, which can reach the
 * client before it has read the answer. A lingering close instead: half-close after the
 * answer, read and discard until the client closes its side or LINGER_MS pass. The
 * HTTP parser is detached first: nothing after this answer is a request to answer.
 */
function lingerOnClose(socket: Socket): void {
  socket.destroySoon = function lingeringClose(this: Socket) {
    this.removeAllListeners("data");
    this.on("data", noop);
    this.resume();
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once("end", () => this.destroy());
    this.once("close", () => clearTimeout(timer));
  };
}

/** Settles a body that is still unread when the answer's headers go out (see the top of this file). */
function settleUnreadBody(req: IncomingMessage, res: ServerResponse, maxDrainBytes: number): void {
  if (req.complete || !declaresBody(req)) return;
  const length = Number(req.headers["content-length"]);
  const chunked = req.headers["transfer-encoding"] !== undefined;
  if (!chunked && Number.isSafeInteger(length) && length <= maxDrainBytes) {
    drainBody(req);
    return;
  }
  // Node then answers with `Connection: close` and ends the socket after this response.
  res.shouldKeepAlive = false;
  lingerOnClose(req.socket);
}

function isHttp1(
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
): res is ServerResponse {
  return req.httpVersionMajor < 2 && "shouldKeepAlive" in res;
}

/**
 * The request listener for bindwatch's Hono app on node:http, with connection
 * isolation (SPEC §4.8) around @hono/node-server's listener.
 * @example createServer(createNodeRequestListener(app.fetch, { maxDrainBytes: 16_384 }))
 */
export function createNodeRequestListener(fetch: FetchCallback, opts: NodeListenerOptions): Listener {
  const inner = getRequestListener(fetch, {
    autoCleanupIncoming: false,
    ...(opts.hostname === undefined ? {} : { hostname: opts.hostname }),
    ...(opts.errorHandler === undefined ? {} : { errorHandler: opts.errorHandler }),
  });
  return (req, res) => {
    // On HTTP/2 a request is a stream of its own: an early answer ends that stream (with
    // RST_STREAM NO_ERROR for the unread body), never the connection the others share.
    if (!isHttp1(req, res)) {
      void inner(req, res);
      return;
    }
    // Every way to send headers (writeHead, an implicit header on the first write) passes here.
    const writeHead = res.writeHead;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      res.writeHead = writeHead;
      settleUnreadBody(req as IncomingMessage, res, opts.maxDrainBytes);
      return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as ServerResponse["writeHead"];
    void inner(req, res);
  };
}

/**
 * Keep-alive timing for a server behind proxies: idle connections outlive the proxies'
 * own idle timeouts, and the headers timeout stays above the keep-alive one (as Node's
 * documentation advises, so an idle connection is never cut by the headers timer).
 */
export function applyKeepAliveTiming(server: Server): void {
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;
}
