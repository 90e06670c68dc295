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

/**
 * Where one SSE stream's bytes go. The default is a Web `ReadableStream` response body
 * (any runtime); the Node runtime injects a channel that writes straight to the
 * socket's response, which costs a fraction of the memory and CPU per stream.
 */
export interface SseChannel {
  /** Bytes written but not yet taken by the client. */
  queuedBytes(): number;
  write(chunk: Uint8Array): void;
  /** Ends the response, after `chunk` when given. */
  end(chunk?: Uint8Array): void;
  /** Cuts the connection at once (a slow client). */
  destroy(): void;
  /** `fn` runs once when the client goes away or the channel ends. */
  onClose(fn: () => void): void;
}

/**
 * A channel over a `ReadableStream` body. A client that disconnects (the request's
 * abort signal, or a cancelled reader) closes it; `destroy` errors the body.
 */
export function createBodyChannel(signal: AbortSignal): { channel: SseChannel; body: ReadableStream<Uint8Array> } {
  const highWaterMark = 16 * 1024;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let closed = false;
  const closers: (() => void)[] = [];
  const close = () => {
    if (closed) return;
    closed = true;
    signal.removeEventListener("abort", onAbort);
    for (const fn of closers.splice(0)) fn();
  };
  const onAbort = () => {
    close();
    try {
      controller.close();
    } catch {
      // already closed or errored
    }
  };
  const body = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      cancel: close,
    },
    { highWaterMark, size: (chunk) => chunk.byteLength },
  );
  signal.addEventListener("abort", onAbort, { once: true });
  const channel: SseChannel = {
    // desiredSize goes negative by the bytes queued beyond the high-water mark.
    queuedBytes: () => highWaterMark - (controller.desiredSize ?? 0),
    write: (chunk) => controller.enqueue(chunk),
    end(chunk) {
      if (chunk) controller.enqueue(chunk);
      onAbort();
    },
    destroy() {
      close();
      controller.error(new Error("slow client dropped"));
    },
    onClose(fn) {
      if (closed) fn();
      else closers.push(fn);
    },
  };
  if (signal.aborted) onAbort();
  return { channel, body };
}

export interface SseStreamOptions {
  readonly channel: SseChannel;
  readonly retryMs: number;
  readonly heartbeatMs: number;
  /** Bytes a stream may have queued (unread by its client) before it is dropped. */
  readonly maxQueuedBytes: number;
  readonly registry: StreamRegistry;
  readonly onClose: () => void;
  readonly onEvent?: () => void;
}

export interface SseStream {
  /** Sends one encoded state event; ends the stream after a final one. */
  send(state: BindState, frame: Uint8Array): void;
  /** Ends the stream (optionally with a `retry` hint first). */
  end(retryHintMs?: number): void;
}

/**
 * One SSE stream over a channel: the `retry` preamble, heartbeats while silent, the
 * final event ending it, and a client that stops reading dropped once its queue
 * passes the cap, never buffered without limit.
 */
export function createSseStream(opts: SseStreamOptions): SseStream {
  const { channel } = opts;
  let closed = false;
  let lastWriteAt = Date.now();
  let heartbeat: ReturnType<typeof setTimeout> | null = null;

  const cleanup = () => {
    if (closed) return;
    closed = true;
    if (heartbeat) clearTimeout(heartbeat);
    heartbeat = null;
    opts.registry.delete(handle);
    opts.onClose();
  };

  /** Writes a chunk, the last one when `last`; false when the stream is gone or was just dropped. */
  const write = (chunk: Uint8Array, last = false): boolean => {
    if (closed) return false;
    if (channel.queuedBytes() > opts.maxQueuedBytes) {
      cleanup();
      channel.destroy();
      return false;
    }
    if (last) {
      cleanup();
      channel.end(chunk);
    } else {
      channel.write(chunk);
      lastWriteAt = Date.now();
    }
    return true;
  };

  const end = (retryHintMs?: number) => {
    if (closed) return;
    if (retryHintMs !== undefined) write(encoder.encode(encodeRetry(retryHintMs)), true);
    else {
      cleanup();
      channel.end();
    }
  };

  const handle: OpenStream = { end };
  channel.onClose(cleanup);
  if (closed) return { send() {}, end() {} };
  write(encoder.encode(encodeRetry(opts.retryMs)));
  opts.registry.add(handle);

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
    send(state, frame) {
      if (closed) return;
      // The final event and the end of the response go out together.
      if (write(frame, state.final)) opts.onEvent?.();
    },
    end,
  };
}

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
} as const;
