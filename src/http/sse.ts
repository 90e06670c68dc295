import type { BindState } from "../domain/bind.js";
import { encodeRetry, PING_FRAME } from "../domain/sse.js";

const encoder = new TextEncoder();
const PING_BYTES = encoder.encode(PING_FRAME);

/**
 * Every open SSE stream of this instance, so shutdown can end them and metrics can count
 * them, and their heartbeats: a stream silent for its HEARTBEAT_MS gets a ping.
 */
export interface StreamRegistry {
  readonly size: number;
  /** Registers an open stream; its first heartbeat is due `stream.heartbeatMs` from now. */
  add(stream: OpenStream): void;
  delete(stream: OpenStream): void;
  /** The stream wrote: its next heartbeat is due a whole HEARTBEAT_MS from now. */
  wrote(stream: OpenStream): void;
  /** Ends every stream with a `retry` hint so browsers reconnect (to another instance) after it. */
  closeAll(retryMs: (index: number) => number): void;
}

export interface OpenStream {
  readonly heartbeatMs: number;
  end(retryHintMs?: number): void;
  /** Writes a heartbeat comment (which drops a stream whose client stopped reading). */
  ping(): void;
}

/**
 * The streams that share one HEARTBEAT_MS, in the order of their last write (a write moves
 * a stream to the end), and one timer for the first of them: a ping is due exactly when a
 * stream has been silent for HEARTBEAT_MS, as with a timer per stream, without a timer's
 * memory for each of thousands of streams.
 */
class HeartbeatSchedule {
  readonly #lastWriteAt = new Map<OpenStream, number>();
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly heartbeatMs: number) {}

  get size(): number {
    return this.#lastWriteAt.size;
  }

  wrote(stream: OpenStream): void {
    this.#lastWriteAt.delete(stream);
    this.#lastWriteAt.set(stream, Date.now());
    // An armed timer is at or before the first stream's heartbeat, and a write only moves that later.
    if (!this.#timer) this.#arm();
  }

  delete(stream: OpenStream): void {
    this.#lastWriteAt.delete(stream);
    if (this.#lastWriteAt.size === 0) this.#disarm();
  }

  /** Sets the timer for the first stream's heartbeat (it fires early if that stream writes first). */
  #arm(): void {
    this.#disarm();
    const first = this.#lastWriteAt.values().next();
    if (first.done) return;
    this.#timer = setTimeout(() => this.#beat(), Math.max(0, first.value + this.heartbeatMs - Date.now()));
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #beat(): void {
    this.#timer = null;
    const now = Date.now();
    for (;;) {
      const first = this.#lastWriteAt.entries().next();
      if (first.done) return;
      const [stream, lastWriteAt] = first.value;
      if (now - lastWriteAt < this.heartbeatMs) break;
      // Moved to the end before the ping, so the loop ends even if the ping writes nothing.
      this.#lastWriteAt.delete(stream);
      this.#lastWriteAt.set(stream, now);
      stream.ping();
    }
    this.#arm();
  }
}

export function createStreamRegistry(): StreamRegistry {
  const streams = new Set<OpenStream>();
  const schedules = new Map<number, HeartbeatSchedule>();
  const scheduleOf = (stream: OpenStream): HeartbeatSchedule => {
    let schedule = schedules.get(stream.heartbeatMs);
    if (!schedule) {
      schedule = new HeartbeatSchedule(stream.heartbeatMs);
      schedules.set(stream.heartbeatMs, schedule);
    }
    return schedule;
  };
  return {
    get size() {
      return streams.size;
    },
    add(stream) {
      streams.add(stream);
      scheduleOf(stream).wrote(stream);
    },
    delete(stream) {
      if (!streams.delete(stream)) return;
      const schedule = scheduleOf(stream);
      schedule.delete(stream);
      if (schedule.size === 0) schedules.delete(stream.heartbeatMs);
    },
    wrote(stream) {
      if (streams.has(stream)) scheduleOf(stream).wrote(stream);
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

/** What every stream of an app shares: one object, not a copy per stream. */
export interface SseSettings {
  readonly retryMs: number;
  readonly heartbeatMs: number;
  /** Bytes a stream may have queued (unread by its client) before it is dropped. */
  readonly maxQueuedBytes: number;
  readonly registry: StreamRegistry;
  /** A state event was written (metrics). */
  readonly onEvent?: () => void;
}

export interface SseStream {
  /** Sends one encoded state event; ends the stream after a final one. */
  send(state: BindState, frame: Uint8Array): void;
  /** Ends the stream (optionally with a `retry` hint first). */
  end(retryHintMs?: number): void;
  /** `watch` is detached when the stream closes, at once if it has closed already. */
  detachOnClose(watch: { detach(): void }): void;
}

/**
 * One SSE stream over a channel: the `retry` preamble, heartbeats while silent (the
 * registry's schedule), the final event ending it, and a client that stops reading
 * dropped once its queue passes the cap, never buffered without limit.
 *
 * A class rather than closures: one small object per stream with its methods shared,
 * since past Node's own socket and response that is what a held stream costs.
 */
class Stream implements SseStream, OpenStream {
  readonly #channel: SseChannel;
  readonly #settings: SseSettings;
  #closed = false;
  #watch: { detach(): void } | null = null;

  constructor(channel: SseChannel, settings: SseSettings) {
    this.#channel = channel;
    this.#settings = settings;
  }

  get heartbeatMs(): number {
    return this.#settings.heartbeatMs;
  }

  /** Sends the preamble and registers the stream, unless the channel closed already. */
  open(): void {
    this.#channel.onClose(() => this.#cleanup());
    if (this.#closed) return;
    this.#channel.write(encoder.encode(encodeRetry(this.#settings.retryMs)));
    this.#settings.registry.add(this);
  }

  send(state: BindState, frame: Uint8Array): void {
    if (this.#closed) return;
    // The final event and the end of the response go out together.
    if (this.#write(frame, state.final)) this.#settings.onEvent?.();
  }

  end(retryHintMs?: number): void {
    if (this.#closed) return;
    if (retryHintMs !== undefined) this.#write(encoder.encode(encodeRetry(retryHintMs)), true);
    else {
      this.#cleanup();
      this.#channel.end();
    }
  }

  ping(): void {
    this.#write(PING_BYTES);
  }

  detachOnClose(watch: { detach(): void }): void {
    if (this.#closed) watch.detach();
    else this.#watch = watch;
  }

  #cleanup(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#settings.registry.delete(this);
    const watch = this.#watch;
    this.#watch = null;
    watch?.detach();
  }

  /** Writes a chunk, the last one when `last`; false when the stream is gone or was just dropped. */
  #write(chunk: Uint8Array, last = false): boolean {
    if (this.#closed) return false;
    const channel = this.#channel;
    if (channel.queuedBytes() > this.#settings.maxQueuedBytes) {
      this.#cleanup();
      channel.destroy();
      return false;
    }
    if (last) {
      this.#cleanup();
      channel.end(chunk);
    } else {
      channel.write(chunk);
      this.#settings.registry.wrote(this);
    }
    return true;
  }
}

/**
 * Opens an SSE stream on `channel`: writes the `retry` preamble and registers it for
 * heartbeats and shutdown (nothing when the channel closed already).
 * @example const stream = createSseStream(channel, settings); stream.send(state, frame);
 */
export function createSseStream(channel: SseChannel, settings: SseSettings): SseStream {
  const stream = new Stream(channel, settings);
  stream.open();
  return stream;
}

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
} as const;
