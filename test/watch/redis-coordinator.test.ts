import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { BindRegistration, BindState } from "../../src/domain/bind.js";
import { createStandaloneConnections, type RedisConnections } from "../../src/runtime/redis-connections.js";
import { type Coordinator, CoordinatorUnavailableError, type TraceEvent } from "../../src/watch/coordinator.js";
import { createRedisCoordinator } from "../../src/watch/redis-coordinator.js";
import { createRedisKeys } from "../../src/watch/redis-keys.js";
import { redisContractSubject } from "../support/redis-contract.js";
import { startRedisServer, useRedis } from "../support/redis-server.js";
import { describeCoordinatorContract } from "./coordinator-contract.js";

const OPTIONS = { retentionMs: 120_000, resultTtlMs: 60_000, upstreamQps: 5 };
const standalone = (url: string) => ({ mode: "standalone", url, auth: {} }) as const;

let redisUrl: string;
let stopRedis: () => Promise<void> = async () => {};
let first: RedisConnections;
let other: RedisConnections;

beforeAll(async () => {
  const server = await useRedis();
  redisUrl = server.url;
  stopRedis = () => server.stop();
  first = createStandaloneConnections(standalone(redisUrl), { connectionName: "bindwatch-test-a" });
  other = createStandaloneConnections(standalone(redisUrl), { connectionName: "bindwatch-test-b" });
});

afterAll(async () => {
  await first?.close();
  await other?.close();
  await stopRedis();
});

describeCoordinatorContract("Redis", async (options) => redisContractSubject(first, other, options), {
  sharedByInstances: true,
});

function registration(): BindRegistration {
  return { trace_id: `trace-${randomUUID()}`, open_id: "open-1", product_key: "pk-1", user_type: "ilop" };
}

function bump(state: BindState): BindState {
  return {
    ...state,
    version: state.version + 1,
    error: { code: "upstream_unavailable", message: `v${state.version}` },
  };
}

async function register(c: Coordinator, reg: BindRegistration): Promise<BindState> {
  const result = await c.register(reg, 180_000);
  if (result.kind === "conflict") throw new Error("conflict");
  return result.state;
}

/** A listener that keeps the states among its events. */
function collectStates(into: BindState[]): (event: TraceEvent) => void {
  return (event) => {
    if (event.kind === "state") into.push(event.state);
  };
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

describe("Redis coordinator", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("re-reads subscribed traces when its subscriber reconnects, so a change published meanwhile is not lost", async () => {
    const prefix = `bwtest:${randomUUID()}:`;
    // A subscriber that waits a full second before reconnecting, so the publish below
    // surely happens while it is away.
    const subscriber = new Redis(redisUrl, { retryStrategy: () => 1_000, maxRetriesPerRequest: 1 });
    subscriber.on("error", () => {});
    cleanups.push(async () => subscriber.disconnect());
    // Connected first: ioredis 5.9 writes an SSUBSCRIBE issued while the connection is between
    // TCP connect and its ready check (SSUBSCRIBE may run while Redis loads), which puts it in
    // subscriber mode; the ready check's INFO is then refused and the connection starts over
    // (lib/Redis.ts sendCommand). The coordinator's re-read after that reconnect covers it;
    // this test's premise is a subscriber that is connected when the trace is subscribed.
    await waitFor(() => subscriber.status === "ready", "the subscriber to be ready");
    const watcher = createRedisCoordinator({ redis: first.redis, subscriber, prefix, ...OPTIONS });
    const writer = createRedisCoordinator({ redis: other.redis, subscriber: other.subscriber, prefix, ...OPTIONS });
    cleanups.push(
      () => watcher.close(),
      () => writer.close(),
    );

    const reg = registration();
    await register(writer, reg);
    const received: BindState[] = [];
    await watcher.subscribe(reg.trace_id, collectStates(received));
    const channel = createRedisKeys(prefix).trace(reg.trace_id).events;
    const subscribers = async () => {
      const reply = (await other.redis.call("PUBSUB", "SHARDNUMSUB", channel)) as [string, number];
      return reply[1];
    };
    expect(await subscribers()).toBe(1);

    await other.redis.call("CLIENT", "KILL", "TYPE", "pubsub");
    await waitFor(async () => (await subscribers()) === 0, "the subscriber to be gone");
    const next = await writer.updateState(reg.trace_id, bump);
    // The premise: nobody was subscribed when the new state was published.
    expect(await subscribers()).toBe(0);
    expect(received.map((s) => s.version)).not.toContain(next?.version);

    await waitFor(() => received.some((s) => s.version === next?.version), "the re-read after reconnecting");
    expect(received.at(-1)).toEqual(next);
    expect(await subscribers()).toBe(1);

    // And live delivery works again.
    const after = await writer.updateState(reg.trace_id, bump);
    await waitFor(() => received.at(-1)?.version === after?.version, "delivery after reconnecting");
  });

  it("ignores malformed and foreign messages on a trace's channel", async () => {
    const prefix = `bwtest:${randomUUID()}:`;
    const coordinator = createRedisCoordinator({
      redis: first.redis,
      subscriber: first.subscriber,
      prefix,
      ...OPTIONS,
    });
    cleanups.push(() => coordinator.close());
    const reg = registration();
    await register(coordinator, reg);
    const received: BindState[] = [];
    await coordinator.subscribe(reg.trace_id, collectStates(received));
    const channel = createRedisKeys(prefix).trace(reg.trace_id).events;
    for (const junk of [
      "not json",
      "s not json",
      "s[]",
      "snull",
      's{"trace_id":"other","version":5}',
      `s{"trace_id":"${reg.trace_id}"}`,
      "x",
    ]) {
      await other.redis.call("SPUBLISH", channel, junk);
    }
    const next = await coordinator.updateState(reg.trace_id, bump);
    await waitFor(() => received.length > 0, "the valid state");
    expect(received).toEqual([next]);
  });

  it("after losing its command connection, begins no call for the quiet period (SPEC §4.9)", async () => {
    const prefix = `bwtest:${randomUUID()}:`;
    const connections = createStandaloneConnections(standalone(redisUrl), { connectionName: "bindwatch-test-quiet" });
    cleanups.push(() => connections.close());
    const coordinator = createRedisCoordinator({
      redis: connections.redis,
      subscriber: connections.subscriber,
      prefix,
      failoverQuietMs: 1_500,
      ...OPTIONS,
    });
    cleanups.push(() => coordinator.close());
    const reg = registration();
    const state = await register(coordinator, reg);
    const take = await coordinator.acquireLease(reg.trace_id, 30_000);
    if (take.kind !== "acquired") throw new Error("no lease");
    const call = { minGapMs: 10, leaseMs: 30_000, deadlineMs: Date.parse(state.expires_at) };
    expect(await coordinator.beginCall(reg.trace_id, take.token, call)).toEqual({ kind: "go" });

    const id = (await connections.redis.call("CLIENT", "ID")) as number;
    await other.redis.call("CLIENT", "KILL", "ID", String(id));
    await waitFor(() => coordinator.isReady(), "the reconnect");
    const quiet = await coordinator.beginCall(reg.trace_id, take.token, call);
    expect(quiet.kind).toBe("wait");
    expect(quiet.kind === "wait" ? quiet.ms : 0).toBeGreaterThan(500);
    await waitFor(
      async () => (await coordinator.beginCall(reg.trace_id, take.token, call)).kind === "go",
      "a call after the quiet period",
    );
  });

  it("rejects a prefix that would change the hash tag", () => {
    expect(() =>
      createRedisCoordinator({ redis: first.redis, subscriber: first.subscriber, prefix: "bw:{x}:", ...OPTIONS }),
    ).toThrow(TypeError);
  });
});

// Always on a redis-server of its own, even when REDIS_URL names a shared one: it stops and restarts it.
describe("Redis coordinator while Redis is down", () => {
  it("fails calls fast with CoordinatorUnavailableError, is not ready, and recovers after a restart", async () => {
    const server = await startRedisServer();
    const connections = createStandaloneConnections(standalone(server.url));
    const prefix = `bwtest:${randomUUID()}:`;
    const coordinator = createRedisCoordinator({
      redis: connections.redis,
      subscriber: connections.subscriber,
      prefix,
      ...OPTIONS,
    });
    try {
      const reg = registration();
      await register(coordinator, reg);
      const received: BindState[] = [];
      await coordinator.subscribe(reg.trace_id, collectStates(received));
      expect(await coordinator.isReady()).toBe(true);

      await server.stop();
      const calls: [string, () => Promise<unknown>][] = [
        ["getState", () => coordinator.getState(reg.trace_id)],
        ["updateState", () => coordinator.updateState(reg.trace_id, bump)],
        ["acquireLease", () => coordinator.acquireLease(reg.trace_id, 5_000)],
        ["takeCallPermit", () => coordinator.takeCallPermit()],
        ["subscribe", () => coordinator.subscribe(`trace-${randomUUID()}`, () => {})],
      ];
      for (const [name, call] of calls) {
        const started = Date.now();
        const error = await call().then(
          () => new Error(`${name} succeeded while Redis was down`),
          (err: unknown) => err,
        );
        expect(error, name).toBeInstanceOf(CoordinatorUnavailableError);
        expect((error as Error).cause, name).toBeDefined();
        expect(Date.now() - started, name).toBeLessThan(6_000);
      }
      expect(await coordinator.isReady()).toBe(false);

      await server.restart();
      await waitFor(() => coordinator.isReady(), "readiness after the restart");
      // The restarted server is empty; the trace is registered anew and its subscription still works.
      await register(coordinator, reg);
      const next = await coordinator.updateState(reg.trace_id, bump);
      await waitFor(() => received.at(-1)?.version === next?.version, "delivery after the restart");
    } finally {
      await coordinator.close();
      await connections.close();
      await server.stop();
    }
  });
});
