import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";

/*
 * One load-generating client process (forked by bench/run.ts, commands over IPC).
 *
 * It opens N Server-Sent Events streams over raw TCP sockets — a hand-written GET and
 * a minimal response scan, so the clients spend as little of the machine's CPU as
 * possible and the same reader serves bindwatch, the raw node:http server and Nchan —
 * reports when all of them are attached, counts `: ping` comments, and records the
 * moment each stream first shows the marker of the fanned-out event, on the clock
 * every process of this machine shares: performance.timeOrigin + performance.now().
 *
 * Bounded: it never opens more than it was told, retries a failed connect at most
 * `retries` times, and exits by itself after BENCH_CLIENT_LIFETIME_MS (default 10 min)
 * or when the parent goes away.
 */

export type ClientCommand =
  | {
      readonly cmd: "open";
      /** One URL per stream (http://host:port/path). */
      readonly targets: readonly string[];
      /** Text whose first appearance on a stream is timed (the fanned-out event). */
      readonly marker: string;
      /** Text that shows the stream is attached (e.g. the initial state); absent → the 200 status line. */
      readonly readyMarker?: string;
      /** Connects in flight at once (keeps the server's accept backlog from overflowing). */
      readonly concurrency: number;
      readonly retries: number;
      readonly localAddress?: string;
    }
  | { readonly cmd: "reset" }
  | { readonly cmd: "report"; readonly includeTimes: boolean }
  | { readonly cmd: "close" };

export interface ClientReady {
  readonly type: "ready";
  readonly ready: number;
  readonly failed: number;
  readonly retried: number;
  readonly ms: number;
  readonly errors: readonly string[];
}

export interface ClientReport {
  readonly type: "report";
  /** Sockets still open. */
  readonly open: number;
  readonly ready: number;
  readonly failed: number;
  /** Streams closed by the server (or reset) before their marker arrived. */
  readonly dropped: number;
  /** `: ping` comments received since the last reset. */
  readonly pings: number;
  /** Streams that received at least one ping since the last reset. */
  readonly pinged: number;
  /** Streams that saw the marker. */
  readonly marked: number;
  /** Receive times (epoch ms, fractional) of the marker, one per stream that saw it. */
  readonly times?: readonly number[];
  readonly statuses: Readonly<Record<string, number>>;
}

export type ClientMessage =
  | ClientReady
  | ClientReport
  | { readonly type: "reset" }
  | { readonly type: "error"; readonly message: string };

interface StreamState {
  readonly index: number;
  socket: Socket | null;
  head: string;
  headerDone: boolean;
  ready: boolean;
  failed: boolean;
  closed: boolean;
  attempts: number;
  markerAt: number | null;
  tail: string;
  pings: number;
}

const LIFETIME_MS = Number(process.env.BENCH_CLIENT_LIFETIME_MS ?? 600_000);
const PING = ": ping";

function send(message: ClientMessage): void {
  process.send?.(message);
}

const lifetime = setTimeout(() => {
  process.stderr.write(`bench client ${process.pid}: lifetime of ${LIFETIME_MS} ms reached, exiting\n`);
  process.exit(3);
}, LIFETIME_MS);
lifetime.unref();
process.on("disconnect", () => process.exit(0));

let streams: StreamState[] = [];
const statuses: Record<string, number> = {};
const errors: string[] = [];
let retried = 0;

function countOf(text: string, needle: string): number {
  let n = 0;
  let at = text.indexOf(needle);
  while (at !== -1) {
    n += 1;
    at = text.indexOf(needle, at + needle.length);
  }
  return n;
}

function open(command: Extract<ClientCommand, { cmd: "open" }>): void {
  const started = performance.now();
  const targets = command.targets.map((raw) => {
    const url = new URL(raw);
    return {
      host: url.hostname,
      port: Number(url.port),
      request: `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n`,
    };
  });
  const { marker, readyMarker } = command;
  const carry = Math.max(marker.length, readyMarker?.length ?? 0, PING.length) - 1;
  streams = targets.map((_, index) => ({
    index,
    socket: null,
    head: "",
    headerDone: false,
    ready: false,
    failed: false,
    closed: false,
    attempts: 0,
    markerAt: null,
    tail: "",
    pings: 0,
  }));
  let next = 0;
  let inFlight = 0;
  let settled = 0;
  let reported = false;

  const settle = () => {
    settled += 1;
    inFlight -= 1;
    pump();
    if (!reported && settled === streams.length) {
      reported = true;
      send({
        type: "ready",
        ready: streams.filter((s) => s.ready).length,
        failed: streams.filter((s) => s.failed).length,
        retried,
        ms: performance.now() - started,
        errors: errors.slice(0, 5),
      });
    }
  };

  const onBody = (s: StreamState, chunk: string, at: number) => {
    const text = s.tail + chunk;
    if (s.markerAt === null && text.includes(marker)) s.markerAt = at;
    if (!s.ready && readyMarker !== undefined && text.includes(readyMarker)) {
      s.ready = true;
      settle();
    }
    s.pings += countOf(chunk, PING);
    s.tail = text.length > carry ? text.slice(text.length - carry) : text;
  };

  const fail = (s: StreamState, why: string) => {
    if (s.ready || s.failed) return;
    const target = targets[s.index];
    if (target && s.attempts <= command.retries && !why.startsWith("status")) {
      retried += 1;
      setTimeout(() => attempt(s), 100 * s.attempts);
      return;
    }
    s.failed = true;
    if (errors.length < 20) errors.push(why);
    settle();
  };

  const attempt = (s: StreamState) => {
    const target = targets[s.index];
    if (!target) return;
    s.attempts += 1;
    s.head = "";
    s.headerDone = false;
    s.tail = "";
    s.closed = false;
    const socket = connect({
      host: target.host,
      port: target.port,
      ...(command.localAddress ? { localAddress: command.localAddress } : {}),
    });
    s.socket = socket;
    socket.setNoDelay(true);
    socket.on("connect", () => socket.write(target.request));
    socket.on("data", (buf: Buffer) => {
      const at = performance.timeOrigin + performance.now();
      const chunk = buf.toString("latin1");
      if (s.headerDone) {
        onBody(s, chunk, at);
        return;
      }
      s.head += chunk;
      const end = s.head.indexOf("\r\n\r\n");
      if (end === -1) return;
      s.headerDone = true;
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(s.head)?.[1] ?? "???";
      statuses[status] = (statuses[status] ?? 0) + 1;
      const rest = s.head.slice(end + 4);
      s.head = "";
      if (status !== "200") {
        fail(s, `status ${status}`);
        s.socket = null;
        s.closed = true;
        socket.destroy();
        return;
      }
      if (readyMarker === undefined && !s.ready) {
        s.ready = true;
        settle();
      }
      if (rest !== "") onBody(s, rest, at);
    });
    // One verdict per attempt: an error is followed by a close, and a retry's socket replaces this one.
    let over = false;
    const end = (why: string) => {
      if (over) return;
      over = true;
      if (s.socket === socket) s.closed = true;
      if (!s.ready && s.socket === socket) fail(s, why);
    };
    socket.on("error", (err: NodeJS.ErrnoException) => end(err.code ?? err.message));
    socket.on("close", () => end("closed before ready"));
  };

  function pump(): void {
    while (inFlight < command.concurrency && next < streams.length) {
      const s = streams[next];
      next += 1;
      if (!s) continue;
      inFlight += 1;
      attempt(s);
    }
  }
  if (streams.length === 0) {
    send({ type: "ready", ready: 0, failed: 0, retried: 0, ms: 0, errors: [] });
    return;
  }
  pump();
}

function report(includeTimes: boolean): ClientReport {
  let openCount = 0;
  let pings = 0;
  let pinged = 0;
  let dropped = 0;
  let marked = 0;
  const times: number[] = [];
  for (const s of streams) {
    if (!s.closed) openCount += 1;
    pings += s.pings;
    if (s.pings > 0) pinged += 1;
    if (s.markerAt !== null) {
      marked += 1;
      if (includeTimes) times.push(s.markerAt);
    } else if (s.ready && s.closed) dropped += 1;
  }
  return {
    type: "report",
    open: openCount,
    ready: streams.filter((s) => s.ready).length,
    failed: streams.filter((s) => s.failed).length,
    dropped,
    pings,
    pinged,
    marked,
    ...(includeTimes ? { times } : {}),
    statuses,
  };
}

process.on("message", (message: ClientCommand) => {
  try {
    switch (message.cmd) {
      case "open":
        open(message);
        break;
      case "reset":
        for (const s of streams) s.pings = 0;
        send({ type: "reset" });
        break;
      case "report":
        send(report(message.includeTimes));
        break;
      case "close":
        for (const s of streams) s.socket?.destroy();
        setImmediate(() => process.exit(0));
        break;
    }
  } catch (err) {
    send({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
});
