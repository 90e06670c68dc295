/*
 * A raw Server-Sent Events reader over `fetch`: unlike EventSource it shows the
 * bytes as sent — status, headers, `retry:` lines, `: ping` comments, how the
 * stream ends — and it never reconnects.
 */

/** One block of the stream, up to a blank line. */
export interface SseFrame {
  readonly event?: string;
  readonly id?: string;
  /** `data` lines joined with "\n"; absent when the block had none. */
  readonly data?: string;
  readonly retry?: number;
  /** Comment lines, without the leading ":" and one optional space. */
  readonly comments: readonly string[];
  /** Milliseconds since the reader opened. */
  readonly at: number;
}

/** A frame that carries data: what an EventSource would dispatch. */
export interface SseEvent extends SseFrame {
  readonly event: string;
  readonly data: string;
}

export interface SseReader {
  readonly status: number;
  readonly headers: Headers;
  /** Every block received, in order. */
  readonly frames: readonly SseFrame[];
  /** The blocks with data, in order. */
  readonly events: readonly SseEvent[];
  /** Every decoded byte received (for a non-SSE answer: its body). */
  readonly text: string;
  /** True once the server ended the body (or it failed, see `error`). */
  readonly ended: boolean;
  readonly error: unknown;
  /** Resolves when the body ends, fails or is closed from this side. */
  readonly done: Promise<void>;
  /** `data` of each event parsed as JSON. */
  states<T = Record<string, unknown>>(): T[];
  /** Polls `predicate` until true; rejects after `timeoutMs` with a description of what arrived. */
  waitFor(predicate: (reader: SseReader) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Aborts the request: the client goes away. */
  close(): void;
}

export interface OpenSseOptions {
  readonly headers?: Record<string, string>;
  /** How long to wait for the response headers (default 10 s). */
  readonly timeoutMs?: number;
  /** The fetch to open it with (default the global one; in workerd tests, the Worker's `SELF.fetch`). */
  readonly fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

/**
 * Opens `url` with fetch and reads it as an SSE stream in the background.
 * Resolves once the response headers arrived, whatever the status.
 * @example const sse = await openSse(`${url}/v1/binds/t1/events`); await sse.waitFor((r) => r.events.length > 0);
 */
export async function openSse(url: string, opts: OpenSseOptions = {}): Promise<SseReader> {
  const controller = new AbortController();
  const started = Date.now();
  const headerTimer = setTimeout(
    () => controller.abort(new Error(`no response headers within ${opts.timeoutMs ?? 10_000} ms`)),
    opts.timeoutMs ?? 10_000,
  );
  let response: Response;
  try {
    response = await (opts.fetch ?? fetch)(url, {
      headers: { accept: "text/event-stream", ...opts.headers },
      signal: controller.signal,
    });
  } finally {
    clearTimeout(headerTimer);
  }

  const frames: SseFrame[] = [];
  const events: SseEvent[] = [];
  let text = "";
  let pending = "";
  let ended = false;
  let error: unknown = null;
  let closedHere = false;

  const parseBlock = (block: string): void => {
    const frame: {
      event?: string;
      id?: string;
      data?: string;
      retry?: number;
      comments: string[];
      at: number;
    } = { comments: [], at: Date.now() - started };
    const data: string[] = [];
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (line === "") continue;
      if (line.startsWith(":")) {
        frame.comments.push(line.slice(1).replace(/^ /, ""));
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") frame.event = value;
      else if (field === "id") frame.id = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) frame.retry = Number(value);
    }
    if (data.length > 0) frame.data = data.join("\n");
    frames.push(frame);
    if (frame.data !== undefined) events.push({ ...frame, event: frame.event ?? "message", data: frame.data });
  };

  const isSse = (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
  const done = (async () => {
    const body = response.body;
    if (!body) {
      ended = true;
      return;
    }
    const reader = body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done: finished } = await reader.read();
        if (finished) break;
        const chunk = decoder.decode(value, { stream: true });
        text += chunk;
        if (!isSse) continue;
        pending += chunk;
        // A block ends at a blank line, whatever the line endings.
        for (;;) {
          const match = /\r\n\r\n|\n\n|\r\r/.exec(pending);
          if (!match) break;
          parseBlock(pending.slice(0, match.index));
          pending = pending.slice(match.index + match[0].length);
        }
      }
      text += decoder.decode();
    } catch (err) {
      if (!closedHere) error = err;
    } finally {
      ended = true;
    }
  })();

  const self: SseReader = {
    status: response.status,
    headers: response.headers,
    frames,
    events,
    get text() {
      return text;
    },
    get ended() {
      return ended;
    },
    get error() {
      return error;
    },
    done,
    states<T>() {
      return events.map((e) => JSON.parse(e.data) as T);
    },
    async waitFor(predicate, timeoutMs = 10_000, what = "the stream condition") {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(self)) {
        if (Date.now() >= deadline) {
          const seen = frames.map((f) => f.event ?? (f.retry !== undefined ? `retry:${f.retry}` : `:${f.comments[0]}`));
          throw new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; status ${response.status}, ended ${ended}, frames [${seen.join(", ")}]`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    close() {
      closedHere = true;
      controller.abort();
    },
  };
  return self;
}
