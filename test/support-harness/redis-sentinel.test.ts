import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { queryNode } from "../support/redis-process.js";
import { type RedisSentinel, startRedisSentinel } from "../support/redis-sentinel.js";
import { waitUntil } from "../support/server.js";

describe("startRedisSentinel({ password })", () => {
  const password = `pw-${randomUUID()}`;
  let sentinel: RedisSentinel;
  let client: Redis | undefined;

  beforeAll(async () => {
    const started = performance.now();
    sentinel = await startRedisSentinel({ password });
    console.info(`sentinel set up in ${Math.round(performance.now() - started)} ms`);
  }, 40_000);
  afterAll(async () => {
    client?.disconnect();
    await sentinel?.stop();
  });

  it("names the first data node the master and asks for the password", async () => {
    const master = await sentinel.masterAddress();
    expect(master.port).toBe(sentinel.dataPorts[0]);
    expect(await queryNode(master.port, [["PING"]])).toBeNull();
    expect(await queryNode(master.port, [["PING"]], { password })).toEqual(["PONG"]);
  });

  it("promotes the replica when the master dies; a Sentinel client follows", async () => {
    // A command bounded in time, so a write sent into the failover fails and is retried
    // rather than waiting in the offline queue past the test's own bounds.
    client = new Redis({
      sentinels: sentinel.sentinels,
      name: sentinel.name,
      password,
      connectTimeout: 2_000,
      commandTimeout: 2_000,
    });
    client.on("error", () => {});
    const key = `harness:${randomUUID()}`;
    await client.set(key, "before");

    const started = performance.now();
    const old = await sentinel.killMaster();
    const promoted = await sentinel.waitForFailover();
    const tookMs = Math.round(performance.now() - started);
    console.info(`sentinel failover took ${tookMs} ms`);
    expect(promoted.port).toBe(sentinel.dataPorts[1]);
    expect(tookMs).toBeLessThan(15_000);

    await waitUntil(async () => (await client?.set(key, "after").catch(() => null)) === "OK", 10_000, "a write");
    expect(((await client.call("ROLE")) as unknown[])[0]).toBe("master");

    const rejoinStarted = performance.now();
    await sentinel.restart(old.port);
    console.info(`former master rejoined in ${Math.round(performance.now() - rejoinStarted)} ms`);
    const [role] = (await queryNode(old.port, [["ROLE"]], { password })) ?? [];
    expect((role as unknown[]).slice(0, 3)).toEqual(["slave", "127.0.0.1", promoted.port]);
    await waitUntil(
      async () => (await queryNode(old.port, [["GET", key]], { password }))?.[0] === "after",
      5_000,
      "the write on the rejoined replica",
    );
    // Each step above has its own bound and message (failover 20 s, the write 10 s, the
    // rejoin 30 s); the test's limit is above their sum so a slow step names itself.
  }, 70_000);
});
