// Global setup of the `workers` test project; runs in Node, not in workerd. Serves the
// TOP gateway double (the simulator, which verifies signatures and timestamps) on a
// loopback port, with its control API under /sim so the tests in workerd can script
// traces and read what the gateway saw (call counts, concurrency, gaps).
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import type { TestProject } from "vitest/node";
import { createSimulatorControl } from "../../src/sim/control.js";
import { createTopSimulator } from "../../src/sim/gateway.js";
import { GATEWAY_APP_KEY, GATEWAY_APP_SECRET } from "./constants.js";

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const sim = createTopSimulator({ appKey: GATEWAY_APP_KEY, appSecret: GATEWAY_APP_SECRET });
  const app = new Hono();
  app.route("/sim", createSimulatorControl(sim));
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
