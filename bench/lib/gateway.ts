import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createTopSimulator, type TopSimulator } from "../../src/sim/gateway.js";
import { scriptNever } from "../../src/sim/scripts.js";

/*
 * The TOP gateway double every bindwatch instance of the bench polls: the simulator
 * over real HTTP on loopback, in the bench process, so scenarios can script a trace's
 * answers and read its call log. Unscripted traces stay pending.
 */

export interface Gateway {
  readonly sim: TopSimulator;
  /** The gateway URL bindwatch's TOP_GATEWAY_URL points at. */
  readonly url: string;
  readonly appKey: string;
  readonly appSecret: string;
  close(): Promise<void>;
}

export async function startGateway(): Promise<Gateway> {
  const appKey = "bench-app-key";
  const appSecret = "bench-app-secret-0123456789abcdef";
  const sim = createTopSimulator({ appKey, appSecret, defaultScript: scriptNever(), maxTraces: 200_000 });
  const server = serve({ fetch: sim.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  return {
    sim,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/router/rest`,
    appKey,
    appSecret,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
