import { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { HttpBindings } from "@hono/node-server";
import type { Context } from "hono";
import type { SseChannel } from "../http/sse.js";

/*
 * SSE written straight to the socket instead of through a Web ReadableStream or
 * ServerResponse.write: the response's headers go out through Node, then every event is
 * one `socket.write` of one buffer, already framed as an HTTP/1.1 chunk and shared by
 * every stream that sends the same event (the hub encodes each state once). Node's
 * ServerResponse.write on a chunked response writes a chunk-size line, the data and a
 * CRLF as three buffers and runs the OutgoingMessage machinery per call; for 10,000
 * streams that per-write cost was the fan-out time (`npm run bench`, profiled).
 *
 * The wire format is the same: Transfer-Encoding: chunked, keep-alive after the end.
 * The final event goes out with the terminating chunk at once; the response is then
 * marked ended (`chunkedEncoding` off, so Node writes nothing more) in a batch after
 * the fan-out, so no stream's bytes wait for another's bookkeeping.
 */

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/** The chunk of a frame, and of a frame that ends the body; computed once per frame, whatever the streams. */
const chunks = new WeakMap<Uint8Array, Buffer>();
const lastChunks = new WeakMap<Uint8Array, Buffer>();

function chunkOf(frame: Uint8Array): Buffer {
  let chunk = chunks.get(frame);
  if (!chunk) {
    chunk = Buffer.concat([Buffer.from(`${frame.byteLength.toString(16)}\r\n`), frame, CRLF]);
    chunks.set(frame, chunk);
  }
  return chunk;
}

function lastChunkOf(frame: Uint8Array): Buffer {
  let chunk = lastChunks.get(frame);
  if (!chunk) {
    chunk = Buffer.concat([chunkOf(frame), LAST_CHUNK]);
    lastChunks.set(frame, chunk);
  }
  return chunk;
}

/** Responses whose last chunk is out, to be marked ended once the fan-out under way is done. */
let toEnd: ServerResponse[] = [];

function endLater(outgoing: ServerResponse): void {
  if (toEnd.length === 0) {
    setImmediate(() => {
      const batch = toEnd;
      toEnd = [];
      for (const response of batch) if (!response.writableEnded) response.end();
    });
  }
  toEnd.push(outgoing);
}

/** `fn` runs once the response closes (`close` is emitted once; `on` spares the `once` wrapper). */
function onResponseClose(outgoing: ServerResponse, fn: () => void): void {
  if (outgoing.destroyed || outgoing.writableFinished) fn();
  else outgoing.on("close", fn);
}

/** The plain ServerResponse path, for a response Node does not frame in chunks (an HTTP/1.0 client). */
class ResponseChannel implements SseChannel {
  constructor(readonly outgoing: ServerResponse) {}

  queuedBytes(): number {
    return this.outgoing.writableLength;
  }

  write(chunk: Uint8Array): void {
    this.outgoing.write(chunk);
  }

  end(chunk?: Uint8Array): void {
    if (chunk) this.outgoing.end(chunk);
    else this.outgoing.end();
  }

  destroy(): void {
    this.outgoing.destroy();
  }

  onClose(fn: () => void): void {
    onResponseClose(this.outgoing, fn);
  }
}

/** Chunks written to the socket itself (see the top of this file). */
class SocketChannel implements SseChannel {
  #ended = false;

  constructor(
    readonly outgoing: ServerResponse,
    readonly socket: Socket,
  ) {}

  // The socket's queue is the stream's: nothing is buffered in the response.
  queuedBytes(): number {
    return this.socket.writableLength;
  }

  write(frame: Uint8Array): void {
    if (!this.#ended) this.socket.write(chunkOf(frame));
  }

  end(frame?: Uint8Array): void {
    if (this.#ended) return;
    this.#ended = true;
    this.socket.write(frame ? lastChunkOf(frame) : LAST_CHUNK);
    // The body is complete on the wire: Node only has to know, without writing a terminator of its own.
    this.outgoing.chunkedEncoding = false;
    endLater(this.outgoing);
  }

  destroy(): void {
    this.#ended = true;
    this.outgoing.destroy();
  }

  onClose(fn: () => void): void {
    onResponseClose(this.outgoing, fn);
  }
}

/**
 * Opens the SSE response of a Node request (status 200, `headers`) and returns the channel
 * its events go through; `null` when this is not a Node HTTP/1 response (the Web body then).
 * The handler answers `x-hono-already-sent` so @hono/node-server writes nothing itself.
 */
export function openNodeSseChannel(c: Context, headers: Headers): SseChannel | null {
  const outgoing = (c.env as Partial<HttpBindings> | undefined)?.outgoing;
  if (!(outgoing instanceof ServerResponse) || outgoing.headersSent || outgoing.destroyed) return null;
  outgoing.writeHead(200, Object.fromEntries(headers));
  // Headers go out at once: EventSource reports `open` before the first event.
  outgoing.flushHeaders();
  const socket: Socket | null = outgoing.socket;
  if (!outgoing.chunkedEncoding || !socket) return new ResponseChannel(outgoing);
  return new SocketChannel(outgoing, socket);
}
