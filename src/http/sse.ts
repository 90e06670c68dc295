import type { BindState } from "../domain/bind.js";
import { encodeRetry, PING_FRAME } from "../domain/sse.js";

const encoder = new TextEncoder();
const PING_BYTES = encoder.encode(PING_FRAME);

/** Every open SSE stream of this instance, so shutdown can end them and metrics can count them. */
export interface StreamRegistry {
  readonly size: number;
  add(stream: OpenStream): void;
  delete(stream: OpenStream): void;
  /** Ends every stream with a `retry` hint so browsers reconnect (to another instance) after it. */
  closeAll(retryMs: (index: number) => number): void;
}

export interface OpenStream {
  end(retryHintMs?: number): void;
}

export function createStreamRegistry(): StreamRegistry {
  const streams = new Set<OpenStream>();
  return {
    get size() {
      return streams.size;
    },
    add(stream) {
      streams.add(stream);
    },
    delete(stream) {
      streams.delete(stream);
    },
    closeAll(retryMs) {
      let i = 0;
      for (const stream of [...streams]) stream.end(retryMs(i++));
    },
  };
}

export interface SseStreamOptions {
  readonly retryMs: number;
  readonly heartbeatMs: number;
  /** Bytes a stream may have queued (unread by its client) before it is dropped. */
  readonly maxQueuedBytes: number;
  readonly signal: AbortSignal;
  readonly registry: StreamRegistry;
  readonly onClose: () => void;
  readonly onEvent?: () => void;
  /**
   * Cuts the client's connection (Node: destroys the socket), which cancels the body
   * quietly; without it a dropped stream is errored, which the adapter may log.
   */
  readonly drop?: () => boolean;
}

export interface SseStream {
  readonly body: ReadableStream<Uint8Array>;
  /** Sends one encoded state event; ends the stream after a final one. */
  send(state: BindState, frame: Uint8Array): void;
  /** Ends the stream (optionally with a `retry` hint first). */
  end(retryHintMs?: number): void;
}

/**
 * One SSE response body. A client that disconnects (the request's abort signal,
 * which @hono/node-server fires when the socket closes, or a cancelled reader) is
 * detached at once; a client that stops reading is dropped once its queue passes
 * the cap, never buffered without limit.
 */
export function createSseStream(opts: SseStreamOptions): SseStream {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let closed = false;
  let lastWriteAt = Date.now();
  let heartbeat: ReturnType<typeof setTimeout> | null = null;

  const cleanup = () => {
    if (closed) return;
    closed = true;
    if (heartbeat) clearTimeout(heartbeat);
    heartbeat = null;
    opts.signal.removeEventListener("abort", onAbort);
    opts.registry.delete(handle);
    opts.onClose();
  };
  const onAbort = () => {
    cleanup();
    try {
      controller.close();
    } catch {
      // already closed or errored
    }
  };

  const write = (chunk: Uint8Array): boolean => {
    if (closed) return false;
    // desiredSize goes negative by the bytes queued beyond the high-water mark.
    if ((controller.desiredSize ?? 0) < -opts.maxQueuedBytes) {
      cleanup();
      if (!opts.drop?.()) controller.error(new Error("slow client dropped"));
      return false;
    }
    controller.enqueue(chunk);
    lastWriteAt = Date.now();
    return true;
  };

  const end = (retryHintMs?: number) => {
    if (closed) return;
    if (retryHintMs !== undefined) write(encoder.encode(encodeRetry(retryHintMs)));
    cleanup();
    try {
      controller.close();
    } catch {
      // already closed
    }
  };

  const handle: OpenStream = { end };

  const body = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      cancel() {
        cleanup();
      },
    },
    { highWaterMark: 16 * 1024, size: (chunk) => chunk.byteLength },
  );

  write(encoder.encode(encodeRetry(opts.retryMs)));
  opts.registry.add(handle);
  if (opts.signal.aborted) onAbort();
  else opts.signal.addEventListener("abort", onAbort, { once: true });

  // A ping once HEARTBEAT_MS pass with nothing written: the timer is re-armed for what is left
  // of the silence, so no gap exceeds HEARTBEAT_MS (a skip-a-tick interval allowed almost twice).
  const beat = () => {
    heartbeat = null;
    if (closed) return;
    const silentMs = Date.now() - lastWriteAt;
    if (silentMs >= opts.heartbeatMs && !write(PING_BYTES)) return;
    heartbeat = setTimeout(beat, silentMs >= opts.heartbeatMs ? opts.heartbeatMs : opts.heartbeatMs - silentMs);
  };
  heartbeat = setTimeout(beat, opts.heartbeatMs);

  return {
    body,
    send(state, frame) {
      if (!write(frame)) return;
      opts.onEvent?.();
      if (state.final) end();
    },
    end,
  };
}

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
} as const;
