import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { createRedisConnections, type RedisConnections } from "../../src/runtime/redis-connections.js";
import { startRedisSentinel } from "../support/redis-sentinel.js";
import { startRedisServer } from "../support/redis-server.js";

/*
 * The command connection of one server (standalone, Sentinel) sends the commands issued
 * in one turn of the event loop in one write (src/runtime/redis-connections.ts), which is
 * what registration under load gains from: without batching every script is a write of
 * its own, and a system call on each side.
 */

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
}, 20_000);

function connect(env: Record<string, string>): RedisConnections {
  const { redis } = parseConfig(env);
  if (!redis) throw new Error("no Redis configured");
  const connections = createRedisConnections(redis);
  cleanups.push(() => connections.close());
  return connections;
}

/** Issues `count` commands in one turn and says how many socket writes carried them. */
async function writesFor(redis: Redis, count: number): Promise<number> {
  await redis.ping();
  const socket = redis.stream;
  const write = vi.spyOn(socket, "write");
  try {
    const key = `batching-${randomUUID()}`;
    const replies = await Promise.all(Array.from({ length: count }, (_, i) => redis.set(`${key}-${i}`, String(i))));
    const writes = write.mock.calls.length;
    expect(replies).toEqual(Array.from({ length: count }, () => "OK"));
    expect(await redis.get(`${key}-${count - 1}`)).toBe(String(count - 1));
    return writes;
  } finally {
    write.mockRestore();
  }
}

describe("the command connection batches one turn's commands", () => {
  it("standalone: 20 commands of one turn go out in one write", async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.stop());
    const { redis } = connect({ REDIS_URL: server.url });
    expect(await writesFor(redis as Redis, 20)).toBe(1);
  });

  it("Sentinel: 20 commands of one turn go out in one write", async () => {
    const password = `pw-${randomUUID()}`;
    const sentinel = await startRedisSentinel({ password });
    cleanups.push(() => sentinel.stop());
    const { redis } = connect(sentinel.env);
    expect(await writesFor(redis as Redis, 20)).toBe(1);
  }, 40_000);
});
