import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { Agent, type ClientRequest, type IncomingMessage, request } from "node:http";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type ScriptStep, scriptNever } from "../../src/sim/scripts.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";

/*
 * 1,000 SSE clients that never read, on five traces that change at every poll with
 * large states, while 20 normal readers watch the same traces. A slow client must be
 * dropped once its queue passes the cap — never buffered without limit — and must not
 * hold the others back.
 *
 * Why the 1,000 come from a python3 child: on loopback (MSS 64 KiB, send buffers that
 * autotune to tcp_wmem's 4 MiB) the kernel takes ~4 MB for each paused Node socket
 * before the server sees any backpressure; 1,000 of them would need ~4 GB of kernel
 * socket memory, above this machine's whole tcp_mem limit. Node cannot set a socket's
 * receive buffer or MSS; python can. With TCP_MAXSEG 536 and a 4 KiB receive buffer —
 * a slow mobile client rather than a loopback one — the kernel takes ~50 KB per
 * connection, so what piles up beyond that is bindwatch's own queue, as in production.
 * Ten paused node:http clients (res.pause(), ~4 MB of kernel buffer each) are added to
 * cover the Node client too.
 *
 * A dropped client is cut at its socket, so the adapter cancels its body quietly: an
 * errored body would cost a stack trace on console.error per client (@hono/node-server's
 * handleResponseError), outside the structured log. The test counts console.error calls.
 */

const TRACES = 5;
const SLOW_RAW = 1_000;
const SLOW_NODE = 10;
const NORMAL = 20;
const POLL_INTERVAL_MS = 100;
/** Each state carries an upstream message this long: ~64 KiB events, ten a second per trace. */
const MESSAGE_BYTES = 64 * 1024;
/** Answers that change the state (one new version each), then bound. */
const CHURN_STEPS = 150;

/** Raw sockets that send one GET each and never read (see above). Prints "ready <n>" once all are sent. */
const SLOW_CLIENTS_PY = `
import json, socket, sys
cfg = json.loads(sys.stdin.readline())
socks = []
for path in cfg["paths"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.connect(("127.0.0.1", cfg["port"]))
    s.sendall(("GET %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAccept: text/event-stream\\r\\n\\r\\n" % path).encode())
    socks.append(s)
print("ready %d" % len(socks), flush=True)
sys.stdin.read()
`;

interface SlowRaw {
  readonly child: ChildProcessWithoutNullStreams;
  readonly ready: Promise<number>;
  stop(): void;
}

function startSlowRawClients(port: number, paths: readonly string[]): SlowRaw {
  const child = spawn("python3", ["-c", SLOW_CLIENTS_PY], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const ready = new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /ready (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on("error", (err) => reject(new Error(`python3 is needed for the slow raw clients: ${err.message}`)));
    child.on("exit", (code) => reject(new Error(`slow clients exited with ${code}: ${stderr}`)));
  });
  child.stdin.write(`${JSON.stringify({ port, paths })}\n`);
  return {
    child,
    ready,
    stop() {
      child.stdin.end();
      child.kill();
    },
  };
}

/** A reader that keeps only what it checks (ids and event names), not 64 KiB bodies. */
interface NormalReader {
  readonly traceId: string;
  readonly req: ClientRequest;
  readonly events: { id: number; event: string }[];
  ended: boolean;
  status: number;
}

function openNormalReader(agent: Agent, baseUrl: string, traceId: string): Promise<NormalReader> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${baseUrl}/v1/binds/${traceId}/events`,
      { agent, headers: { accept: "text/event-stream" } },
      (res: IncomingMessage) => {
        const reader: NormalReader = { traceId, req, events: [], ended: false, status: res.statusCode ?? 0 };
        res.setEncoding("utf8");
        let pending = "";
        res.on("data", (chunk: string) => {
          pending += chunk;
          for (;;) {
            const end = pending.indexOf("\n\n");
            if (end === -1) break;
            const block = pending.slice(0, end);
            pending = pending.slice(end + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const id = /^id: (\d+)$/m.exec(block)?.[1];
            if (event !== undefined && id !== undefined) reader.events.push({ id: Number(id), event });
          }
        });
        res.on("end", () => {
          reader.ended = true;
        });
        res.on("error", () => {});
        resolve(reader);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** A node:http client that pauses the response at once and never consumes it. */
function openPausedNodeClient(agent: Agent, baseUrl: string, traceId: string): Promise<ClientRequest> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${baseUrl}/v1/binds/${traceId}/events`,
      { agent, headers: { accept: "text/event-stream" } },
      (res) => {
        res.pause();
        res.on("error", () => {});
        resolve(req);
      },
    );
    req.on("error", (err) => {
      // Once the server drops it, the socket closing is expected.
      if (!req.destroyed) reject(err);
    });
    req.end();
  });
}

/** Alternating messages, each answer a change: one new version per poll. */
function churnScript(): { steps: ScriptStep[]; thereafter: ScriptStep } {
  const a = "a".repeat(MESSAGE_BYTES);
  const b = "b".repeat(MESSAGE_BYTES);
  return {
    steps: Array.from(
      { length: CHURN_STEPS },
      (_, i): ScriptStep => ({
        kind: "not_ok",
        retCode: 2001,
        message: i % 2 === 0 ? a : b,
      }),
    ),
    thereafter: { kind: "bound" },
  };
}

interface MemorySample {
  readonly at: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly streams: number;
}

const MB = 1024 * 1024;

describe("slow clients", () => {
  let server: TestServer;
  let agent: Agent;
  let slowRaw: SlowRaw | null = null;
  const normal: NormalReader[] = [];
  const paused: ClientRequest[] = [];

  let droppedLogged = 0;
  beforeAll(async () => {
    const original = console.error.bind(console);
    vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
      droppedLogged++;
      original(...args);
    });
    server = await startTestServer({
      POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
      POLL_LINGER_MS: "1000",
      HEARTBEAT_MS: "15000",
      BIND_TIMEOUT_MS: "120000",
      MAX_STREAMS: "5000",
      // The churn must not wait on the budget: five traces at ten calls a second.
      UPSTREAM_QPS: "1000",
    });
    agent = new Agent({ keepAlive: false, maxSockets: 2_000 });
  });

  afterAll(async () => {
    slowRaw?.stop();
    for (const r of normal) r.req.destroy();
    for (const req of paused) req.destroy();
    agent?.destroy();
    await server?.stop();
    vi.restoreAllMocks();
  });

  it("drops every client that does not read, keeps memory bounded, and the readers get every version", async () => {
    const traceIds = Array.from({ length: TRACES }, () => newTraceId("slow"));
    for (const traceId of traceIds) {
      // Quiet until every client is attached; then the churn starts.
      server.simulator.setScript(traceId, scriptNever());
      expect((await postBind(server.url, bindBody(traceId))).status).toBe(201);
    }

    for (let i = 0; i < NORMAL; i++) {
      const reader = await openNormalReader(agent, server.url, traceIds[i % TRACES] as string);
      expect(reader.status).toBe(200);
      normal.push(reader);
    }
    for (let i = 0; i < SLOW_NODE; i++)
      paused.push(await openPausedNodeClient(agent, server.url, traceIds[i % TRACES] as string));
    const paths = Array.from({ length: SLOW_RAW }, (_, i) => `/v1/binds/${traceIds[i % TRACES]}/events`);
    slowRaw = startSlowRawClients(server.port, paths);
    expect(await slowRaw.ready).toBe(SLOW_RAW);
    const total = NORMAL + SLOW_NODE + SLOW_RAW;
    await waitUntil(
      () => server.streams.size === total && server.service.stats().watchers === total,
      20_000,
      `${total} streams attached`,
      50,
    );

    // ---- the churn: every poll a new ~64 KiB version on every trace ----
    const samples: MemorySample[] = [];
    const sample = () => {
      const m = process.memoryUsage();
      samples.push({ at: Date.now(), rss: m.rss, heapUsed: m.heapUsed, streams: server.streams.size });
    };
    sample();
    const baseline = samples[0] as MemorySample;
    const sampler = setInterval(sample, 100);
    const started = Date.now();
    for (const traceId of traceIds) server.simulator.setScript(traceId, churnScript());

    const versionNow = () => Math.min(...normal.map((r) => r.events.at(-1)?.id ?? 0));
    const versionAtStart = versionNow();
    let allSlowDroppedAt: number | null = null;
    let versionsUntilRawDropped = Number.POSITIVE_INFINITY;
    try {
      // The raw clients' kernels take ~50 KB each; past that, a stream holds at most the cap
      // (256 KiB) plus the stream's and the socket's 16 KiB high-water marks and one event:
      // ~6 events of 64 KiB. Twice that, and the cap is not what drops them.
      await waitUntil(
        () => server.streams.size <= NORMAL + SLOW_NODE,
        30_000,
        `the ${SLOW_RAW} raw slow streams to be dropped (streams open: ${server.streams.size})`,
        20,
      );
      versionsUntilRawDropped = versionNow() - versionAtStart;
      // Every client that does not read is dropped while the traces still change.
      await waitUntil(
        () => server.streams.size <= NORMAL,
        30_000,
        `the ${SLOW_RAW + SLOW_NODE} slow streams to be dropped (streams open: ${server.streams.size})`,
        50,
      );
      allSlowDroppedAt = Date.now();
      await waitUntil(
        () => normal.every((r) => r.ended),
        30_000,
        "every normal reader to get its final event and the end of its stream",
        50,
      );
    } finally {
      clearInterval(sampler);
    }
    const finished = Date.now();

    // ---- the slow ones were dropped while the traces still changed, not ended by the final event ----
    const firstBoundCall = Math.min(
      ...traceIds.map(
        (id) =>
          server.simulator.getTrace(id).calls.find((c) => c.outcome === "bound")?.startedAt ?? Number.POSITIVE_INFINITY,
      ),
    );
    expect(allSlowDroppedAt, "all slow streams dropped before any trace was bound").toBeLessThan(firstBoundCall);
    expect(versionsUntilRawDropped, "versions sent before the raw slow streams were all dropped").toBeLessThanOrEqual(
      12,
    );

    // ---- the normal readers: every version, in order, no gaps, one final event ----
    for (const reader of normal) {
      const ids = reader.events.map((e) => e.id);
      expect(ids[0], reader.traceId).toBeLessThanOrEqual(2);
      const gaps = ids.flatMap((id, i) => (i > 0 && id !== (ids[i - 1] as number) + 1 ? [`${ids[i - 1]}→${id}`] : []));
      expect(gaps, `${reader.traceId}: versions out of order or missing`).toEqual([]);
      expect(reader.events.filter((e) => e.event !== "pending")).toEqual([{ id: ids.at(-1), event: "bound" }]);
      // The churn's versions all arrived: at least one per answer that changed the state.
      expect(ids.length, reader.traceId).toBeGreaterThanOrEqual(CHURN_STEPS);
    }

    // ---- memory stayed bounded while 1,010 clients read nothing ----
    const peak = samples.reduce(
      (p, s) => ({ rss: Math.max(p.rss, s.rss), heapUsed: Math.max(p.heapUsed, s.heapUsed) }),
      { rss: 0, heapUsed: 0 },
    );
    const droppedTimeline = samples
      .filter((_, i) => i % 10 === 0)
      .map((s) => `${((s.at - started) / 1000).toFixed(1)}s:${s.streams}`)
      .join(" ");
    const eventsPerReader = normal.reduce((n, r) => n + r.events.length, 0) / NORMAL;
    console.info(
      `slow clients: ${SLOW_RAW} raw + ${SLOW_NODE} node:http slow streams, ${NORMAL} readers, ${TRACES} traces; ` +
        `churn ${((finished - started) / 1000).toFixed(1)} s, raw slow streams all dropped after ${versionsUntilRawDropped} versions, ` +
        `all slow streams dropped after ${(((allSlowDroppedAt ?? 0) - started) / 1000).toFixed(1)} s; ` +
        `~${eventsPerReader.toFixed(0)} events of ~${MESSAGE_BYTES / 1024} KiB per reader; ` +
        `rss ${(baseline.rss / MB).toFixed(0)} → peak ${(peak.rss / MB).toFixed(0)} MB, ` +
        `heapUsed ${(baseline.heapUsed / MB).toFixed(0)} → peak ${(peak.heapUsed / MB).toFixed(0)} MB; ` +
        `streams open over time: ${droppedTimeline}; console.error calls: ${droppedLogged}`,
    );
    // Measured ~40 MB of heap and ~50 MB of rss; the test's own readers parse ~13 MB/s meanwhile.
    expect(peak.heapUsed - baseline.heapUsed, "heap growth").toBeLessThan(160 * MB);
    expect(peak.rss - baseline.rss, "rss growth").toBeLessThan(320 * MB);
    expect(droppedLogged, "console.error calls (a dropped stream must not be errored)").toBe(0);

    // ---- afterwards nothing is left ----
    slowRaw.stop();
    for (const req of paused) req.destroy();
    await waitUntil(
      () => server.streams.size === 0 && server.service.stats().watchers === 0,
      10_000,
      "no stream or watcher left",
    );
    await waitUntil(() => server.service.stats().hubs === 0, 5_000, "no hub left");
  }, 90_000);
});
