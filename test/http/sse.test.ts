import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { createSseStream, createStreamRegistry, type SseChannel, type SseSettings } from "../../src/http/sse.js";

const decoder = new TextDecoder();
const HEARTBEAT_MS = 15_000;

/** A channel that records what was written and when (the fake clock's time). */
function recordingChannel() {
  const writes: { at: number; text: string }[] = [];
  let closeFns: (() => void)[] = [];
  let queued = 0;
  const state = { ended: false, destroyed: false };
  const channel: SseChannel = {
    queuedBytes: () => queued,
    write: (chunk) => {
      writes.push({ at: Date.now(), text: decoder.decode(chunk) });
    },
    end: (chunk) => {
      if (chunk) writes.push({ at: Date.now(), text: decoder.decode(chunk) });
      state.ended = true;
    },
    destroy: () => {
      state.destroyed = true;
    },
    onClose: (fn) => {
      closeFns.push(fn);
    },
  };
  return {
    channel,
    writes,
    state,
    pings: () => writes.filter((w) => w.text === ": ping\n\n").map((w) => w.at),
    setQueued: (bytes: number) => {
      queued = bytes;
    },
    /** The client goes away. */
    close: () => {
      for (const fn of closeFns) fn();
      closeFns = [];
    },
  };
}

const state = (version: number, final = false): BindState =>
  ({ version, final, status: final ? "bound" : "pending" }) as unknown as BindState;

describe("SSE heartbeats (one schedule per registry)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const settings = (registry = createStreamRegistry()): SseSettings => ({
    retryMs: 2_000,
    heartbeatMs: HEARTBEAT_MS,
    maxQueuedBytes: 1024,
    registry,
  });

  it("pings a silent stream every HEARTBEAT_MS, and a write puts its next ping a whole HEARTBEAT_MS later", async () => {
    const start = Date.now();
    const a = recordingChannel();
    const stream = createSseStream(a.channel, settings());
    expect(a.writes[0]?.text).toBe("retry: 2000\n\n");

    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS - 1);
    expect(a.pings()).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(a.pings()).toEqual([start + HEARTBEAT_MS]);

    // An event 10 s after that ping: the next ping is 15 s after the event, not 5 s.
    await vi.advanceTimersByTimeAsync(10_000);
    stream.send(state(2), new TextEncoder().encode("event: pending\nid: 2\ndata: {}\n\n"));
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS - 1);
    expect(a.pings()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(a.pings()).toEqual([start + HEARTBEAT_MS, start + 2 * HEARTBEAT_MS + 10_000]);

    // Over a long silence no gap between writes exceeds HEARTBEAT_MS.
    await vi.advanceTimersByTimeAsync(10 * HEARTBEAT_MS);
    const times = a.writes.map((w) => w.at);
    for (let i = 1; i < times.length; i++)
      expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeLessThanOrEqual(HEARTBEAT_MS);
    expect(a.pings()).toHaveLength(12);
  });

  it("keeps each of many streams on its own time, whatever order they write in", async () => {
    const registry = createStreamRegistry();
    const shared = settings(registry);
    const channels = Array.from({ length: 50 }, () => recordingChannel());
    const opened: number[] = [];
    const streams = [];
    for (const ch of channels) {
      opened.push(Date.now());
      streams.push(createSseStream(ch.channel, shared));
      await vi.advanceTimersByTimeAsync(97);
    }
    // Streams written to out of opening order, each at its own moment.
    const wroteAt = new Map<number, number>();
    for (const i of [49, 3, 17, 0, 25]) {
      await vi.advanceTimersByTimeAsync(311);
      streams[i]?.send(state(2), new TextEncoder().encode("event: pending\nid: 2\ndata: {}\n\n"));
      wroteAt.set(i, Date.now());
    }
    await vi.advanceTimersByTimeAsync(3 * HEARTBEAT_MS);
    channels.forEach((ch, i) => {
      const last = wroteAt.get(i) ?? opened[i] ?? 0;
      const pings = ch.pings();
      // Pings made before the write came at the stream's own time since it opened.
      const first = pings.find((at) => at > last);
      expect(first).toBe(last + HEARTBEAT_MS);
      const all = ch.writes.map((w) => w.at);
      for (let k = 1; k < all.length; k++) expect((all[k] ?? 0) - (all[k - 1] ?? 0)).toBeLessThanOrEqual(HEARTBEAT_MS);
    });
    expect(registry.size).toBe(50);
    registry.closeAll(() => 1_000);
    expect(registry.size).toBe(0);
    // Nothing left scheduled once no stream is open.
    expect(vi.getTimerCount()).toBe(0);
  });

  it("drops a stream whose client stopped reading when its heartbeat is due, and stops pinging it", async () => {
    const registry = createStreamRegistry();
    const slow = recordingChannel();
    const fine = recordingChannel();
    createSseStream(slow.channel, settings(registry));
    createSseStream(fine.channel, settings(registry));
    slow.setQueued(4096);
    await vi.advanceTimersByTimeAsync(HEARTBEAT_MS);
    expect(slow.state.destroyed).toBe(true);
    expect(slow.pings()).toEqual([]);
    expect(fine.pings()).toHaveLength(1);
    expect(registry.size).toBe(1);
    await vi.advanceTimersByTimeAsync(2 * HEARTBEAT_MS);
    expect(slow.pings()).toEqual([]);
    expect(fine.pings()).toHaveLength(3);
  });

  it("stops pinging a stream once its client goes or its final event is sent, and detaches its watch then", async () => {
    const registry = createStreamRegistry();
    const gone = recordingChannel();
    const done = recordingChannel();
    const goneStream = createSseStream(gone.channel, settings(registry));
    const doneStream = createSseStream(done.channel, settings(registry));
    const detached: string[] = [];
    goneStream.detachOnClose({ detach: () => detached.push("gone") });
    doneStream.detachOnClose({ detach: () => detached.push("done") });
    gone.close();
    doneStream.send(state(3, true), new TextEncoder().encode("event: bound\nid: 3\ndata: {}\n\n"));
    expect(done.state.ended).toBe(true);
    expect(detached).toEqual(["gone", "done"]);
    expect(registry.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(2 * HEARTBEAT_MS);
    expect(gone.pings()).toEqual([]);
    expect(done.pings()).toEqual([]);
    // A watch handed to a stream that has closed is detached at once.
    goneStream.detachOnClose({ detach: () => detached.push("late") });
    expect(detached).toEqual(["gone", "done", "late"]);
  });
});
