import type { Writable } from "node:stream";
import { parseConfig } from "../../src/runtime/config.js";
import { createLogger } from "../../src/runtime/logger.js";
import { type RunningServer, startNodeServer } from "../../src/runtime/node-server.js";
import type { TopSimulator } from "../../src/sim/gateway.js";
import type { Coordinator } from "../../src/watch/coordinator.js";

/** A bindwatch server started in this process, in simulator mode, on a loopback port of its own. */
export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly simulator: TopSimulator;
  /** The simulator as a TOP sandbox for other clients: its URL and credentials. */
  readonly sandbox: NonNullable<RunningServer["sandbox"]>;
  readonly service: RunningServer["service"];
  readonly streams: RunningServer["streams"];
  readonly pollIntervalMs: number;
  stop(): Promise<void>;
}

/** Short timings so a whole bind plays out in a second or two. */
const TEST_ENV: Readonly<Record<string, string>> = {
  PORT: "0",
  HOST: "127.0.0.1",
  POLL_INTERVAL_MS: "200",
  POLL_LINGER_MS: "1000",
  HEARTBEAT_MS: "15000",
  LOG_LEVEL: "silent",
};

/**
 * Starts `startNodeServer` on 127.0.0.1, port 0, with the TOP gateway simulator;
 * `env` overrides the test defaults with the same variables as production; `logTo` keeps the log lines;
 * `coordinator` replaces the in-memory store.
 * @example const server = await startTestServer({ MAX_STREAMS: "3" }); … await server.stop();
 */
export async function startTestServer(
  env: Readonly<Record<string, string>> = {},
  opts: { readonly logTo?: Writable; readonly coordinator?: Coordinator } = {},
): Promise<TestServer> {
  const merged = { ...TEST_ENV, ...env };
  if (merged.TOP_APP_KEY !== undefined || merged.TOP_APP_SECRET !== undefined) {
    throw new Error("startTestServer runs in simulator mode: do not set TOP credentials");
  }
  const config = parseConfig(merged);
  const running = await startNodeServer(
    config,
    createLogger(config.logLevel, opts.logTo ? { destination: opts.logTo } : {}),
    opts.coordinator ? { coordinator: opts.coordinator } : {},
  );
  const { simulator, sandbox } = running;
  if (!simulator || !sandbox) {
    await running.stop();
    throw new Error("expected simulator mode");
  }
  return {
    url: running.url,
    port: running.port,
    simulator,
    sandbox,
    service: running.service,
    streams: running.streams,
    pollIntervalMs: config.pollIntervalMs,
    stop: () => running.stop(),
  };
}

/**
 * Polls `condition` until it returns a truthy value (which it then resolves to) or
 * `timeoutMs` passes; the timeout error carries `what` and the last value seen.
 */
export async function waitUntil<T>(
  condition: () => T | Promise<T>,
  timeoutMs: number,
  what = "condition",
  everyMs = 10,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await condition();
    if (last) return last as NonNullable<T>;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${safeJson(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

let traceCounter = 0;

/** A trace_id unique to this run: `<prefix>-<pid>-<time>-<n>`. */
export function newTraceId(prefix = "it"): string {
  traceCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${traceCounter}`;
}

/** A registration body for POST /v1/binds. */
export function bindBody(traceId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    trace_id: traceId,
    open_id: "open-id-0123456789",
    product_key: "a1PrOdUcTkEy",
    user_type: "ilop",
    ...extra,
  };
}

/** POSTs a registration and returns the status and parsed JSON body. */
export async function postBind(
  baseUrl: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${baseUrl}/v1/binds`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
