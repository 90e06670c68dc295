import { createRequire } from "node:module";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { createLogger } from "../../src/runtime/logger.js";
import { createMetrics, EVENT_LOOP_SAMPLE_MS } from "../../src/runtime/metrics.js";
import { type RunningServer, startNodeServer } from "../../src/runtime/node-server.js";
import { scriptBoundAfter } from "../../src/sim/scripts.js";

/** The perf_hooks module as prom-client's require() gets it. */
const perfHooks = createRequire(import.meta.url)("node:perf_hooks") as typeof import("node:perf_hooks");

let server: RunningServer;

beforeAll(async () => {
  const config = parseConfig({ PORT: "0", HOST: "127.0.0.1", POLL_INTERVAL_MS: "100", LOG_LEVEL: "silent" });
  server = await startNodeServer(config, createLogger("silent"));
});
afterAll(async () => {
  await server.stop();
});

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("GET /metrics", () => {
  it("exposes calls by outcome, latency, streams, polls, events and finished binds without trace labels", async () => {
    server.simulator?.setScript("m-1", scriptBoundAfter(1));
    const res = await fetch(`${server.url}/v1/binds`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ trace_id: "m-1", open_id: "open-1", product_key: "pk", user_type: "ilop" }),
    });
    expect(res.status).toBe(201);
    const stream = await fetch(`${server.url}/v1/binds/m-1/events`);
    const text = await stream.text();
    expect(text).toContain("event: bound");
    await until(async () => (await fetch(`${server.url}/v1/binds/m-1`).then((r) => r.json())).final === true);

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/bindwatch_checkbind_calls_total\{outcome="waiting"\} 1/);
    expect(metrics).toMatch(/bindwatch_checkbind_calls_total\{outcome="bound"\} 1/);
    expect(metrics).toMatch(/bindwatch_checkbind_duration_seconds_count\{outcome="bound"\} 1/);
    expect(metrics).toMatch(/bindwatch_binds_finished_total\{status="bound"\} 1/);
    expect(metrics).toMatch(/bindwatch_events_sent_total [1-9]/);
    expect(metrics).toMatch(/bindwatch_open_streams 0/);
    expect(metrics).toMatch(/bindwatch_active_polls \d/);
    expect(metrics).not.toContain("m-1");
  });

  it("counts the polls waiting for the call budget when demand passes UPSTREAM_QPS", async () => {
    const slow = await startNodeServer(
      parseConfig({ PORT: "0", HOST: "127.0.0.1", POLL_INTERVAL_MS: "100", UPSTREAM_QPS: "1", LOG_LEVEL: "silent" }),
      createLogger("silent"),
    );
    try {
      const gauge = async () =>
        Number(/bindwatch_polls_waiting_for_budget (\d+)/.exec(await (await fetch(`${slow.url}/metrics`)).text())?.[1]);
      expect(await gauge()).toBe(0);
      for (let i = 0; i < 6; i += 1) {
        const res = await fetch(`${slow.url}/v1/binds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ trace_id: `budget-${i}`, open_id: "open-1", product_key: "pk", user_type: "ilop" }),
        });
        expect(res.status).toBe(201);
      }
      // One call a second for six traces polled every 100 ms: most of them wait their turn.
      await until(async () => (await gauge()) >= 4);
    } finally {
      await slow.stop();
    }
  });

  it("samples the event-loop delay every 100 ms, not at prom-client's default 10 ms (100 wake-ups a second on an idle instance)", () => {
    // prom-client looks the function up on the perf_hooks module when the metrics are made.
    const monitor = vi.spyOn(perfHooks, "monitorEventLoopDelay");
    try {
      createMetrics({
        streams: () => 0,
        stats: () => ({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 }),
      });
      expect(EVENT_LOOP_SAMPLE_MS).toBe(100);
      expect(monitor).toHaveBeenCalledTimes(1);
      expect(monitor).toHaveBeenCalledWith({ resolution: 100 });
    } finally {
      monitor.mockRestore();
    }
  });
});
