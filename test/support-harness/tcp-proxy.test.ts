import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { waitUntil } from "../support/server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const COMMAND_TIMEOUT_MS = 300;

describe("startTcpProxy in front of a standalone Redis", () => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let direct: Redis;
  const clients: Redis[] = [];

  /** An ioredis client through the proxy, with the connection events it emitted. */
  async function connect(): Promise<{ client: Redis; events: string[] }> {
    const client = new Redis({ host: proxy.host, port: proxy.port, commandTimeout: COMMAND_TIMEOUT_MS });
    clients.push(client);
    const events: string[] = [];
    for (const event of ["close", "end", "reconnecting"]) client.on(event, () => events.push(event));
    client.on("error", () => {});
    await new Promise<void>((resolve) => client.once("ready", resolve));
    return { client, events };
  }

  beforeAll(async () => {
    redis = await startRedisServer();
    direct = new Redis(redis.url);
  });
  afterAll(async () => {
    direct?.disconnect();
    await redis?.stop();
  });
  beforeEach(async () => {
    proxy = await startTcpProxy("127.0.0.1", redis.port);
  });
  afterEach(async () => {
    for (const client of clients.splice(0)) client.disconnect();
    await proxy.stop();
  });

  it("forwards many connections at once, commands and pub/sub", async () => {
    const many = await Promise.all(Array.from({ length: 20 }, () => connect()));
    const { client: subscriber } = await connect();
    const channel = `harness:${randomUUID()}`;
    const received: string[] = [];
    subscriber.on("message", (_channel: string, message: string) => received.push(message));
    await subscriber.subscribe(channel);
    expect(proxy.connections).toBe(21);
    expect(await Promise.all(many.map(({ client }) => client.ping()))).toEqual(Array(20).fill("PONG"));
    await many[0]?.client.publish(channel, "hello");
    await waitUntil(() => received.includes("hello"), 2_000, "the message");
  });

  it("black-holes: commands time out with no close; heal() delivers what waited and works again", async () => {
    const { client, events } = await connect();
    const { client: subscriber, events: subscriberEvents } = await connect();
    const channel = `harness:${randomUUID()}`;
    const received: string[] = [];
    subscriber.on("message", (_channel: string, message: string) => received.push(message));
    await subscriber.subscribe(channel);

    proxy.blackhole();
    await expect(client.ping()).rejects.toThrow("Command timed out");
    await direct.publish(channel, "during");
    await expect(client.get("anything")).rejects.toThrow("Command timed out");
    expect(received).toEqual([]);
    expect([...events, ...subscriberEvents]).toEqual([]);
    expect([client.status, subscriber.status, proxy.connections]).toEqual(["ready", "ready", 2]);

    proxy.heal();
    expect(await client.ping()).toBe("PONG");
    await waitUntil(() => received.includes("during"), 2_000, "the message sent during the black hole");
    expect([...events, ...subscriberEvents]).toEqual([]);
  });

  it("holds a connection opened during a black hole until heal()", async () => {
    proxy.blackhole();
    const late = new Redis({ host: proxy.host, port: proxy.port, commandTimeout: COMMAND_TIMEOUT_MS });
    clients.push(late);
    late.on("error", () => {});
    await expect(late.ping()).rejects.toThrow("Command timed out");
    expect(proxy.connections).toBe(1);
    proxy.heal();
    await waitUntil(async () => (await late.ping().catch(() => null)) === "PONG", 5_000, "a PONG after heal()");
  });

  it("cutAll() resets every connection; clients reconnect through it", async () => {
    const { client, events } = await connect();
    proxy.cutAll();
    await waitUntil(() => events.includes("close"), 2_000, "the close event");
    expect(proxy.connections).toBe(0);
    await waitUntil(async () => (await client.ping().catch(() => null)) === "PONG", 5_000, "a PONG after the reset");
    expect(events).toContain("reconnecting");
  });
});
