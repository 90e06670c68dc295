import { Redis } from "ioredis";
import { expect, it } from "vitest";
import { startRedisServer } from "../support/redis-server.js";
import { waitUntil } from "../support/server.js";

it("startRedisServer: a crash, then restart() on the same port, empty", async () => {
  const server = await startRedisServer();
  const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
  client.on("error", () => {});
  try {
    await client.set("k", "v");
    server.kill();
    await waitUntil(() => client.status !== "ready", 5_000, "the client to see the crash");
    await server.restart();
    await waitUntil(async () => (await client.ping().catch(() => null)) === "PONG", 10_000, "a PONG after restart");
    expect(await client.get("k")).toBeNull();
  } finally {
    client.disconnect();
    await server.stop();
  }
});
