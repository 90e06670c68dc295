import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/*
 * The baseline: a minimal SSE server on bare node:http with bindwatch's framing —
 * the same response headers, `retry: N` first, the current state as one
 * `event:/id:/data:` block, a `: ping` comment every HEARTBEAT_MS while nothing else
 * was sent (one timer per stream, as bindwatch has), and a publish that encodes an
 * event once and writes the same bytes to every stream of a channel.
 * It also answers `POST /v1/binds` (read ≤ 16 KiB, JSON.parse, 201 + JSON), the
 * floor for the registration figure. No traces, no store, no framework.
 *
 *   GET  /events?c=<channel>       a stream
 *   POST /publish?c=<channel>      body = a state JSON; sent to every stream of the channel
 *   POST /v1/binds                 registration-shaped JSON in, 201 out
 *
 * Env: PORT (0), HOST (127.0.0.1), HEARTBEAT_MS (15000), RETRY_MS (2000).
 * Logs one JSON line {"msg":"raw sse listening","url":…} on stdout.
 */

const HEARTBEAT_MS = Number(process.env.HEARTBEAT_MS ?? 15_000);
const RETRY_MS = Number(process.env.RETRY_MS ?? 2_000);
const MAX_BODY = 16 * 1024;
const PING = Buffer.from(": ping\n\n");
const HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
  "referrer-policy": "no-referrer",
};

interface Stream {
  readonly res: ServerResponse;
  sent: boolean;
  timer: ReturnType<typeof setInterval> | null;
}

const channels = new Map<string, Set<Stream>>();

function pendingState(channel: string): string {
  const now = new Date().toISOString();
  return JSON.stringify({
    trace_id: channel,
    status: "pending",
    final: false,
    version: 1,
    attempts: 0,
    created_at: now,
    updated_at: now,
    expires_at: new Date(Date.now() + 180_000).toISOString(),
    upstream: null,
    error: null,
  });
}

function frameOf(status: string, version: number, json: string): Buffer {
  return Buffer.from(`event: ${status}\nid: ${version}\ndata: ${json}\n\n`);
}

function openStream(req: IncomingMessage, res: ServerResponse, channel: string): void {
  res.writeHead(200, HEADERS);
  res.write(`retry: ${RETRY_MS}\n\n`);
  res.write(frameOf("pending", 1, pendingState(channel)));
  const stream: Stream = { res, sent: false, timer: null };
  let set = channels.get(channel);
  if (!set) {
    set = new Set();
    channels.set(channel, set);
  }
  set.add(stream);
  stream.timer = setInterval(() => {
    if (!stream.sent) res.write(PING);
    stream.sent = false;
  }, HEARTBEAT_MS);
  res.on("close", () => {
    if (stream.timer) clearInterval(stream.timer);
    set.delete(stream);
    if (set.size === 0) channels.delete(channel);
  });
  void req;
}

function readBody(req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => resolve(size > MAX_BODY ? null : Buffer.concat(chunks).toString("utf8")));
    req.on("error", () => resolve(null));
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://raw");
  if (req.method === "GET" && url.pathname === "/events") {
    openStream(req, res, url.searchParams.get("c") ?? "default");
    return;
  }
  if (req.method === "POST" && url.pathname === "/publish") {
    const body = await readBody(req);
    const set = channels.get(url.searchParams.get("c") ?? "default");
    let delivered = 0;
    if (body !== null && set) {
      const state = JSON.parse(body) as { status: string; version: number; final: boolean };
      // Encoded once; the same bytes go to every stream.
      const frame = frameOf(state.status, state.version, body);
      for (const stream of [...set]) {
        stream.sent = true;
        // A final event ends the stream: one write carries the frame and the chunked terminator.
        if (state.final) stream.res.end(frame);
        else stream.res.write(frame);
        delivered += 1;
      }
    }
    json(res, 200, { delivered });
    return;
  }
  if (req.method === "POST" && url.pathname === "/v1/binds") {
    const body = await readBody(req);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(body ?? "") as Record<string, unknown>;
    } catch {
      json(res, 400, { error: { code: "invalid_request", message: "the body is not valid JSON" } });
      return;
    }
    const traceId = String(parsed.trace_id ?? "");
    json(res, 201, { trace_id: traceId, state: JSON.parse(pendingState(traceId)), events_url: `/events?c=${traceId}` });
    return;
  }
  if (url.pathname === "/healthz") {
    json(res, 200, { status: "ok" });
    return;
  }
  json(res, 404, { error: { code: "not_found" } });
});

server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? "127.0.0.1", () => {
  const { address, port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ msg: "raw sse listening", url: `http://${address}:${port}` })}\n`);
});

const stop = () => {
  for (const set of channels.values()) for (const stream of set) stream.res.destroy();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
