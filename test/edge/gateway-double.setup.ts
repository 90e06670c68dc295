// Global setup of the `workers` test project; runs in Node, not in workerd. Serves the
// TOP gateway double (the simulator, which verifies signatures and timestamps) on a
// loopback port, with its control API under /sim so the tests in workerd can script
// traces and read what the gateway saw (call counts, concurrency, gaps).
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Webhook } from "standardwebhooks";
import type { TestProject } from "vitest/node";
import { createSimulatorControl } from "../../src/sim/control.js";
import { createTopSimulator } from "../../src/sim/gateway.js";
import { GATEWAY_APP_KEY, GATEWAY_APP_SECRET, WEBHOOK_TEST_SECRET } from "./constants.js";

/** One webhook delivery the receiver double got, for the tests in workerd to read. */
interface ReceivedWebhook {
  readonly id: string;
  readonly at: string;
  readonly verified: boolean;
  readonly type: string | undefined;
  readonly answered: number;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const sim = createTopSimulator({ appKey: GATEWAY_APP_KEY, appSecret: GATEWAY_APP_SECRET });
  const app = new Hono();
  app.route("/sim", createSimulatorControl(sim));
  // The backend's webhook endpoint: verifies with the standardwebhooks package, answers 500
  // to the first `fail` attempts of a trace (PUT /webhook-control/:traceId), records them all.
  const verifier = new Webhook(WEBHOOK_TEST_SECRET);
  const received = new Map<string, ReceivedWebhook[]>();
  const failFirst = new Map<string, number>();
  app.post("/webhooks", async (c) => {
    const body = await c.req.text();
    type Payload = { type?: string; data?: { trace_id?: string } };
    let payload: Payload | null = null;
    let verified = false;
    try {
      payload = verifier.verify(body, {
        "webhook-id": c.req.header("webhook-id") ?? "",
        "webhook-timestamp": c.req.header("webhook-timestamp") ?? "",
        "webhook-signature": c.req.header("webhook-signature") ?? "",
      }) as Payload;
      verified = true;
    } catch {
      // recorded as not verified
    }
    const traceId = payload?.data?.trace_id ?? "unknown";
    const fails = failFirst.get(traceId) ?? 0;
    const answered = fails > 0 ? 500 : 200;
    if (fails > 0) failFirst.set(traceId, fails - 1);
    const list = received.get(traceId) ?? [];
    list.push({
      id: c.req.header("webhook-id") ?? "",
      at: new Date().toISOString(),
      verified,
      type: payload?.type,
      answered,
    });
    received.set(traceId, list);
    return c.body(null, answered === 200 ? 204 : 500);
  });
  app.put("/webhook-control/:traceId", async (c) => {
    const { fail } = (await c.req.json()) as { fail: number };
    failFirst.set(c.req.param("traceId"), fail);
    return c.json({ ok: true });
  });
  app.get("/webhook-control/:traceId", (c) => c.json(received.get(c.req.param("traceId")) ?? []));
  app.all("*", (c) => sim.fetch(c.req.raw));
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  project.provide("gatewayUrl", `http://127.0.0.1:${port}`);
  return async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}
