import { SELF, env as testEnv } from "cloudflare:test";
import { inject } from "vitest";
import type { EdgeEnv } from "../../src/runtime/edge-env.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL of the TOP gateway double served by test/edge/gateway-double.setup.ts. */
    gatewayUrl: string;
  }
}

/** The Worker's bindings as the runtime entry declares them. */
export const env = testEnv as EdgeEnv;

/** Any origin will do: SELF reaches the Worker without the network. */
export const BASE = "http://bindwatch.test";

export function workerFetch(path: string, init?: RequestInit): Promise<Response> {
  return SELF.fetch(`${BASE}${path}`, init);
}

let traceSeq = 0;
/** A fresh trace_id per test: each trace gets its own Durable Object. */
export function newTraceId(label: string): string {
  traceSeq += 1;
  return `edge-${label}-${Date.now().toString(36)}-${traceSeq}-${crypto.randomUUID().slice(0, 8)}`;
}

export function registration(traceId: string, extra: Record<string, unknown> = {}) {
  return {
    trace_id: traceId,
    open_id: "open-id-1234",
    product_key: "pk-edge",
    user_type: "ilop",
    params: { authCode: "auth-1", ssProductKey: "ss-1" },
    ...extra,
  };
}

export function postBind(body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return workerFetch("/v1/binds", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** The gateway double's control API (test/edge/gateway-double.setup.ts), over loopback HTTP. */
export const gateway = {
  url: (): string => inject("gatewayUrl"),
  async script(traceId: string, spec: unknown): Promise<void> {
    const res = await fetch(`${inject("gatewayUrl")}/sim/traces/${traceId}/script`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(spec),
    });
    if (res.status !== 200) throw new Error(`scripting ${traceId}: HTTP ${res.status} ${await res.text()}`);
  },
  /** Has the receiver double answer 500 to the first `fail` webhook attempts of the trace. */
  async failWebhooks(traceId: string, fail: number): Promise<void> {
    const res = await fetch(`${inject("gatewayUrl")}/webhook-control/${traceId}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ fail }),
    });
    if (res.status !== 200) throw new Error(`scripting webhooks of ${traceId}: HTTP ${res.status}`);
  },
  /** The webhook attempts the receiver double got for the trace. */
  async webhooks(traceId: string): Promise<ReceivedWebhook[]> {
    return (await (await fetch(`${inject("gatewayUrl")}/webhook-control/${traceId}`)).json()) as ReceivedWebhook[];
  },
  async trace(traceId: string): Promise<GatewayTraceReport> {
    const res = await fetch(`${inject("gatewayUrl")}/sim/traces/${traceId}`);
    return (await res.json()) as GatewayTraceReport;
  },
};

export interface ReceivedWebhook {
  readonly id: string;
  readonly at: string;
  readonly verified: boolean;
  readonly type: string | undefined;
  readonly answered: number;
}

export interface GatewayTraceReport {
  readonly call_count: number;
  readonly max_in_flight: number;
  readonly in_flight: number;
  readonly min_start_gap_ms: number | null;
  readonly calls: readonly {
    started_at: string;
    ended_at: string | null;
    step: string;
    outcome: string | null;
    eagleeye_id: string;
  }[];
}

/** Polls `condition` until it holds; real time only ever waits for a condition here. */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  what: string,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
