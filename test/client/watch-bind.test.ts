import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BindwatchError, type ClientEnvironment, type EventSourceLike, watchBind } from "../../src/client/index.js";
import type { BindState } from "../../src/domain/bind.js";

function state(version: number, status: BindState["status"] = "pending"): BindState {
  return {
    trace_id: "t",
    status,
    final: status !== "pending",
    version,
    attempts: version,
    created_at: "2026-11-29T10:00:00.000Z",
    updated_at: "2026-11-29T10:00:00.000Z",
    expires_at: "2026-11-29T10:03:00.000Z",
    upstream: null,
    error: null,
  };
}

/** A scriptable stand-in for the browser's EventSource. */
class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = [];
  readyState = 0;
  onerror: ((event: Event) => void) | null = null;
  onopen: ((event: Event) => void) | null = null;
  closed = false;
  private listeners = new Map<string, ((event: MessageEvent) => void)[]>();
  constructor(readonly url: string) {
    FakeEventSource.instances.push(this);
  }
  addEventListener(type: string, listener: (event: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  emit(s: BindState) {
    this.readyState = 1;
    for (const l of this.listeners.get(s.status) ?? []) l(new MessageEvent(s.status, { data: JSON.stringify(s) }));
  }
  /** A dropped connection: the browser will reconnect by itself. */
  drop() {
    this.readyState = 0;
    this.onerror?.(new Event("error"));
  }
  /** A refused stream (non-200 or 204): EventSource gives up. */
  refuse() {
    this.readyState = 2;
    this.onerror?.(new Event("error"));
  }
}

function environment(fetchImpl: (url: string, init?: RequestInit) => Promise<Response>, withEventSource = true) {
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  const env: ClientEnvironment = {
    EventSource: withEventSource ? FakeEventSource : undefined,
    fetch: vi.fn(fetchImpl) as unknown as typeof fetch,
    window: win,
    document: doc,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  };
  return { env, win, doc };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/** A long-poll answer that resolves only when aborted or after `ms`. */
function hanging(ms: number, body: BindState, init?: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve(json(200, body)), ms);
    init?.signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeEventSource.instances = [];
});
afterEach(() => {
  vi.useRealTimers();
});

describe("watchBind", () => {
  it("streams updates in order, resolves on the final event and closes the stream", async () => {
    const { env } = environment(async () => json(500, {}));
    const updates: number[] = [];
    const done = watchBind({
      baseUrl: "https://bw.example/",
      traceId: "t",
      token: "tok",
      environment: env,
      onUpdate: (s) => updates.push(s.version),
    });
    const es = FakeEventSource.instances[0];
    expect(es?.url).toBe("https://bw.example/v1/binds/t/events?token=tok");
    es?.emit(state(1));
    es?.emit(state(2));
    es?.emit(state(2));
    es?.emit(state(3, "bound"));
    await expect(done).resolves.toMatchObject({ status: "bound", version: 3 });
    expect(updates).toEqual([1, 2, 3]);
    expect(es?.closed).toBe(true);
  });

  it("reopens the stream from the last event id when the page becomes visible again", async () => {
    const { env, doc } = environment(async () => json(500, {}));
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    FakeEventSource.instances[0]?.emit(state(4));
    (doc as { visibilityState: string }).visibilityState = "visible";
    doc.dispatchEvent(new Event("visibilitychange"));
    const second = FakeEventSource.instances[1];
    expect(FakeEventSource.instances[0]?.closed).toBe(true);
    expect(second?.url).toBe("/v1/binds/t/events?last_event_id=4");
    second?.emit(state(5, "expired"));
    await expect(done).resolves.toMatchObject({ status: "expired" });
  });

  it("reconnects when the network returns, and ignores the page being hidden", async () => {
    const { env, win, doc } = environment(async () => json(500, {}));
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    FakeEventSource.instances[0]?.emit(state(2));
    (doc as { visibilityState: string }).visibilityState = "hidden";
    doc.dispatchEvent(new Event("visibilitychange"));
    expect(FakeEventSource.instances).toHaveLength(1);
    win.dispatchEvent(new Event("online"));
    expect(FakeEventSource.instances).toHaveLength(2);
    FakeEventSource.instances[1]?.emit(state(3, "cancelled"));
    await expect(done).resolves.toMatchObject({ status: "cancelled" });
  });

  it("falls back to long-poll after repeated stream failures and resumes from the last version", async () => {
    const urls: string[] = [];
    const { env } = environment(async (url, init) => {
      urls.push(url);
      return urls.length === 1 ? hanging(1000, state(6), init) : json(200, state(7, "bound"));
    });
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env, maxStreamFailures: 3 });
    const es = FakeEventSource.instances[0];
    es?.emit(state(5));
    es?.drop();
    es?.drop();
    expect(urls).toHaveLength(0);
    es?.drop();
    expect(es?.closed).toBe(true);
    await vi.advanceTimersByTimeAsync(1000);
    await expect(done).resolves.toMatchObject({ status: "bound" });
    expect(urls[0]).toBe("/v1/binds/t?wait=30&after=5");
    expect(urls[1]).toBe("/v1/binds/t?wait=30&after=6");
  });

  it("uses long-poll where EventSource is missing, and backs off on network errors", async () => {
    let calls = 0;
    const { env } = environment(async () => {
      calls += 1;
      if (calls <= 2) throw new TypeError("network down");
      return json(200, state(2, "failed"));
    }, false);
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(2000);
    await expect(done).resolves.toMatchObject({ status: "failed" });
  });

  it("a refused stream is explained by the state endpoint: final state resolves", async () => {
    const { env } = environment(async () => json(200, state(3, "bound")));
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    FakeEventSource.instances[0]?.refuse();
    await expect(done).resolves.toMatchObject({ status: "bound" });
  });

  it.each([
    [401, "unauthorized"],
    [403, "forbidden"],
    [404, "not_found"],
  ])("rejects with a typed error on %i", async (status, code) => {
    const { env } = environment(async () => json(status, { error: { code, message: "nope" } }));
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    FakeEventSource.instances[0]?.refuse();
    const err = await done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BindwatchError);
    expect(err).toMatchObject({ code, status });
    expect(FakeEventSource.instances[0]?.closed).toBe(true);
  });

  it("rejects with the abort reason and closes everything when aborted", async () => {
    const { env } = environment(async () => json(500, {}));
    const controller = new AbortController();
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env, signal: controller.signal });
    controller.abort(new Error("left the page"));
    await expect(done).rejects.toThrow("left the page");
    expect(FakeEventSource.instances[0]?.closed).toBe(true);
  });

  it("a wake during a held long-poll repeats the poll at once", async () => {
    const urls: string[] = [];
    const { env, win } = environment(async (url, init) => {
      urls.push(url);
      return urls.length === 1 ? hanging(30_000, state(1), init) : json(200, state(2, "bound"));
    }, false);
    const done = watchBind({ baseUrl: "", traceId: "t", environment: env });
    await vi.advanceTimersByTimeAsync(10);
    win.dispatchEvent(new Event("pageshow"));
    await vi.advanceTimersByTimeAsync(10);
    await expect(done).resolves.toMatchObject({ status: "bound" });
    expect(urls).toHaveLength(2);
  });
});
