import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { createSentinelConnections, type RedisConnections } from "../../src/runtime/redis-connections.js";
import { type FakeSentinel, startFakeSentinel } from "../support/fake-sentinel.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { waitUntil } from "../support/server.js";

/*
 * A failover announced while a Sentinel client is reconnecting: ioredis ends the client
 * for good (its old connection's failover detector disconnects the connector while the
 * connector waits for a sentinel's answer). bindwatch's connections connect again. The
 * race is set up exactly: a sentinel double holds its answer back and announces the
 * switch while the question is pending; the data node is a real redis-server.
 */

describe("Sentinel connections (createSentinelConnections)", () => {
  let data: RedisServer | undefined;
  let sentinel: FakeSentinel | undefined;
  let connections: RedisConnections | undefined;

  afterEach(async () => {
    await connections?.close();
    await sentinel?.stop();
    await data?.stop();
    connections = sentinel = data = undefined;
  });

  it("connect again when a +switch-master arrives while they reconnect, where ioredis alone would end", async () => {
    data = await startRedisServer();
    sentinel = await startFakeSentinel({ host: "127.0.0.1", port: data.port });
    connections = createSentinelConnections({
      mode: "sentinel",
      sentinels: [{ host: "127.0.0.1", port: sentinel.port }],
      masterName: "bw-master",
      tls: false,
      auth: {},
      sentinelAuth: {},
    });
    const clients = [connections.redis, connections.subscriber] as Redis[];
    const ended = clients.map(() => 0);
    for (const [i, client] of clients.entries()) {
      client.on("end", () => {
        ended[i] = (ended[i] ?? 0) + 1;
      });
    }
    await connections.subscriber.subscribe("bw-channel");
    // Both connections are up, and each one's failover detector listens to the sentinel.
    await waitUntil(
      () => clients.every((c) => c.status === "ready") && (sentinel?.subscribers() ?? 0) >= 2,
      10_000,
      "both connections ready and their failover detectors subscribed",
    );

    // Both lose their data connection; their reconnects ask the sentinel, which holds the answer…
    sentinel.answerDelayMs = 400;
    let questions = 0;
    const asked = (async () => {
      while (questions < 2) {
        await sentinel?.nextQuestion();
        questions += 1;
      }
    })();
    const killer = await startKiller(data.port);
    await killer.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    await killer.call("CLIENT", "KILL", "TYPE", "pubsub");
    killer.disconnect();
    await asked;
    // …and announces the failover while both questions wait.
    sentinel.switchMaster("bw-master");
    sentinel.answerDelayMs = 0;

    await waitUntil(
      async () => (await connections?.redis.ping().catch(() => null)) === "PONG",
      10_000,
      "the command connection to answer again",
    );
    await waitUntil(() => connections?.subscriber.status === "ready", 10_000, "the subscriber to be ready again");
    // The subscriber subscribed again: a message published now reaches it.
    const received = new Promise<string>((resolve) => connections?.subscriber.once("message", (_c, m) => resolve(m)));
    await waitUntil(
      async () => ((await connections?.redis.publish("bw-channel", "after").catch(() => 0)) ?? 0) > 0,
      10_000,
      "the subscriber to be subscribed again",
    );
    expect(await received).toBe("after");
    // What this covers happened: ioredis ended both clients on its own (without the
    // reconnect in redis-connections.ts they stay ended and refuse every command).
    for (const count of ended) expect(count).toBeGreaterThanOrEqual(1);
  });
});

async function startKiller(port: number): Promise<Redis> {
  const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true });
  await client.connect();
  return client;
}
