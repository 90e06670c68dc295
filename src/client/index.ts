/**
 * bindwatch browser client: one call that resolves when a bind attempt is over.
 *
 * @example
 * import { watchBind } from "/v1/client.js";
 * const state = await watchBind({ baseUrl: "https://bindwatch.example.com", traceId, token, onUpdate: render });
 * if (state.status === "bound") showSuccess();
 *
 * It streams with EventSource and falls back to long-polling where EventSource is
 * missing or keeps failing. Mobile browsers drop background streams silently, so
 * it reconnects when the page becomes visible again or the network returns, and
 * resumes from the last event id. No runtime dependencies; this file is served
 * as is by the server, so it must not import anything at run time.
 */
import type { BindState, BindStatus } from "../domain/bind.js";

export type { BindState, BindStatus };

export interface WatchBindOptions {
  /** Origin (and optional path prefix) of the bindwatch server; "" for the page's own origin. */
  readonly baseUrl: string;
  readonly traceId: string;
  /** The watch token from POST /v1/binds, when the server requires one. */
  readonly token?: string;
  /** Aborting stops watching; the promise rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Called with every new state, in version order. */
  readonly onUpdate?: (state: BindState) => void;
  /** Use long-polling only (for tests, or environments where streams are known to fail). */
  readonly transport?: "auto" | "long-poll";
  /** Stream errors in a row, without an event between them, before falling back to long-poll (default 3). */
  readonly maxStreamFailures?: number;
  /** Seconds a long-poll is held by the server (default 30). */
  readonly longPollWaitSeconds?: number;
  /** Injected for tests; default the browser's globals. */
  readonly environment?: ClientEnvironment;
}

/** What the client uses from the browser. */
export interface ClientEnvironment {
  readonly EventSource?: EventSourceConstructor | undefined;
  readonly fetch: typeof fetch;
  /** Receives `online` and `pageshow`. */
  readonly window?: EventTarget | undefined;
  /** Receives `visibilitychange`; `visibilityState` says whether the page is shown. */
  readonly document?: (EventTarget & { readonly visibilityState?: string }) | undefined;
  readonly setTimeout: (fn: () => void, ms: number) => unknown;
  readonly clearTimeout: (handle: unknown) => void;
}

export interface EventSourceLike {
  readonly readyState: number;
  onerror: ((event: Event) => void) | null;
  onopen: ((event: Event) => void) | null;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

export type BindwatchErrorCode = "unauthorized" | "forbidden" | "not_found" | "bad_request";

/** Why watching failed for good: access refused (401/403), unknown trace (404), or a bad request. */
export class BindwatchError extends Error {
  override readonly name = "BindwatchError";
  constructor(
    readonly code: BindwatchErrorCode,
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const STATUSES: readonly BindStatus[] = ["pending", "bound", "failed", "expired", "cancelled"];
const CLOSED = 2;

function defaultEnvironment(): ClientEnvironment {
  const g = globalThis as unknown as {
    EventSource?: EventSourceConstructor;
    window?: EventTarget;
    document?: EventTarget & { visibilityState?: string };
  };
  return {
    EventSource: g.EventSource,
    fetch: globalThis.fetch.bind(globalThis),
    window: g.window,
    document: g.document,
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof globalThis.setTimeout>),
  };
}

function errorFor(status: number, message: string): BindwatchError | null {
  if (status === 401) return new BindwatchError("unauthorized", status, message);
  if (status === 403) return new BindwatchError("forbidden", status, message);
  if (status === 404) return new BindwatchError("not_found", status, message);
  if (status === 400) return new BindwatchError("bad_request", status, message);
  return null;
}

/**
 * Watches one bind attempt until its final state.
 * @returns the final state (`bound`, `failed`, `expired` or `cancelled`)
 * @throws BindwatchError on 400/401/403/404; the abort reason when `signal` aborts
 */
export function watchBind(options: WatchBindOptions): Promise<BindState> {
  const env = options.environment ?? defaultEnvironment();
  const base = `${options.baseUrl.replace(/\/+$/, "")}/v1/binds/${encodeURIComponent(options.traceId)}`;
  const maxFailures = options.maxStreamFailures ?? 3;
  const waitSeconds = options.longPollWaitSeconds ?? 30;
  const tokenQuery = options.token ? `token=${encodeURIComponent(options.token)}` : "";

  return new Promise<BindState>((resolve, reject) => {
    let lastVersion = 0;
    let done = false;
    let source: EventSourceLike | null = null;
    let failures = 0;
    let mode: "stream" | "long-poll" = options.transport === "long-poll" || !env.EventSource ? "long-poll" : "stream";
    let pollController: AbortController | null = null;
    let retryTimer: unknown = null;
    let backoffMs = 1000;
    let woken = false;

    const cleanup = () => {
      done = true;
      source?.close();
      source = null;
      pollController?.abort();
      if (retryTimer !== null) env.clearTimeout(retryTimer);
      env.document?.removeEventListener("visibilitychange", onWake);
      env.window?.removeEventListener("pageshow", onWake);
      env.window?.removeEventListener("online", onWake);
      options.signal?.removeEventListener("abort", onAbort);
    };
    const finish = (state: BindState) => {
      cleanup();
      resolve(state);
    };
    const fail = (err: unknown) => {
      cleanup();
      reject(err);
    };
    const onAbort = () => fail(options.signal?.reason);

    const accept = (state: BindState) => {
      if (done || state.version <= lastVersion) return;
      lastVersion = state.version;
      try {
        options.onUpdate?.(state);
      } catch {
        // a throwing callback must not stop the watch
      }
      if (state.final) finish(state);
    };

    /** One GET of the state endpoint: the answer, or an error that ends the watch. */
    const fetchState = async (query: string, signal?: AbortSignal): Promise<BindState | "retry" | null> => {
      let res: Response;
      try {
        res = await env.fetch(`${base}?${[query, tokenQuery].filter(Boolean).join("&")}`, {
          headers: { accept: "application/json" },
          cache: "no-store",
          ...(signal ? { signal } : {}),
        });
      } catch {
        return "retry";
      }
      const body = (await res.json().catch(() => null)) as
        | (BindState & { error?: { message?: string } })
        | { error?: { message?: string } }
        | null;
      const err = errorFor(res.status, body?.error?.message ?? `HTTP ${res.status}`);
      if (err) {
        fail(err);
        return null;
      }
      if (!res.ok || !body || !("status" in body)) return "retry";
      return body as BindState;
    };

    const scheduleRetry = (fn: () => void) => {
      if (done || retryTimer !== null) return;
      retryTimer = env.setTimeout(() => {
        retryTimer = null;
        fn();
      }, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 30_000);
    };

    const longPoll = async () => {
      while (!done && mode === "long-poll") {
        pollController = new AbortController();
        const answer = await fetchState(`wait=${waitSeconds}&after=${lastVersion}`, pollController.signal);
        if (done || answer === null) return;
        if (answer === "retry") {
          // A poll cut short by onWake is repeated at once; a failed one after a backoff.
          if (woken) {
            woken = false;
            continue;
          }
          scheduleRetry(() => void longPoll());
          return;
        }
        backoffMs = 1000;
        accept(answer);
      }
    };

    const openStream = () => {
      if (done || !env.EventSource) return;
      source?.close();
      const query = [lastVersion > 0 ? `last_event_id=${lastVersion}` : "", tokenQuery].filter(Boolean).join("&");
      const es = new env.EventSource(`${base}/events${query ? `?${query}` : ""}`);
      source = es;
      for (const status of STATUSES) {
        es.addEventListener(status, (event) => {
          if (source !== es) return;
          failures = 0;
          backoffMs = 1000;
          try {
            accept(JSON.parse(String(event.data)) as BindState);
          } catch {
            // an unreadable event is skipped; the next one carries the full state again
          }
        });
      }
      es.onerror = () => {
        if (source !== es || done) return;
        failures += 1;
        if (es.readyState === CLOSED) {
          // The server refused the stream (204 after final, 4xx, 503): ask the state endpoint why.
          es.close();
          source = null;
          void resolveClosedStream();
        } else if (failures >= maxFailures) {
          es.close();
          source = null;
          mode = "long-poll";
          void longPoll();
        }
      };
    };

    const resolveClosedStream = async () => {
      const answer = await fetchState("");
      if (done || answer === null) return;
      if (answer === "retry") {
        scheduleRetry(openStream);
        return;
      }
      accept(answer);
      if (!done) scheduleRetry(failures >= maxFailures ? switchToLongPoll : openStream);
    };

    const switchToLongPoll = () => {
      mode = "long-poll";
      void longPoll();
    };

    /** The page is shown again or the network is back: a silently dropped stream is replaced. */
    function onWake(event: Event) {
      if (done) return;
      if (event.type === "visibilitychange" && env.document?.visibilityState === "hidden") return;
      if (retryTimer !== null) {
        env.clearTimeout(retryTimer);
        retryTimer = null;
      }
      backoffMs = 1000;
      if (mode === "stream") openStream();
      else if (pollController && !pollController.signal.aborted) {
        woken = true;
        pollController.abort();
      } else void longPoll();
    }

    if (options.signal?.aborted) {
      fail(options.signal.reason);
      return;
    }
    options.signal?.addEventListener("abort", onAbort, { once: true });
    env.document?.addEventListener("visibilitychange", onWake);
    env.window?.addEventListener("pageshow", onWake);
    env.window?.addEventListener("online", onWake);
    if (mode === "stream") openStream();
    else void longPoll();
  });
}
