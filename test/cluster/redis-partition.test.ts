import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import {
  callStarts,
  type Deployment,
  finalEventsOf,
  gapsOf,
  type Instance,
  openWatcher,
  startDeployment,
  type Watcher,
} from "../support/cluster.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

/*
 * A partition: the instance polling every trace loses Redis without a close — its
 * connections go through a TCP proxy that stops forwarding — while it keeps its
 * watchers. It stops calling TOP (its lease can no longer be vouched for), the others
 * take over in single flight, and once the partition heals its own watchers get the
 * final. Each instance signs with a TOP session of its own, so the gateway double
 * tells whose call each one was.
 */

const INTERVAL_MS = 500;
const TRACES = 6;

describe("an instance cut off from Redis by a black hole", () => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let deployment: Deployment;
  const watchers: Watcher[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    proxy = await startTcpProxy("127.0.0.1", redis.port);
    deployment = await startDeployment({
      count: 3,
      appKey: "partition-app-key",
      appSecret: "partition-app-secret-0123456789",
      intervalMs: INTERVAL_MS,
      storeEnv: { REDIS_URL: redis.url },
      env: { BIND_TIMEOUT_MS: "120000" },
      instanceEnv: (i) => ({
        TOP_SESSION: `session-i${i}`,
        ...(i === 0 ? { REDIS_URL: `redis://${proxy.host}:${proxy.port}` } : {}),
      }),
    });
  }, 120_000);

  afterAll(async () => {
    await deployment?.stop(watchers.splice(0));
    await proxy?.stop();
    await redis?.stop();
  });

  it("stops calling TOP, the others take over in single flight, and its watchers get the final after the heal", async () => {
    const { gateway, instances } = deployment;
    const [cutOff, other] = instances as [Instance, Instance, Instance];
    const traceIds = Array.from({ length: TRACES }, () => newTraceId("partition"));
    for (const traceId of traceIds) {
      await gateway.setScript(traceId, scriptNever());
      expect((await postBind(cutOff.url, bindBody(traceId))).status).toBe(201);
      watchers.push(await openWatcher(cutOff, traceId));
    }
    // The premise: the instance to be cut off polls every trace. The other instance's
    // watchers come once it does, so its polls do not race for the leases first.
    await waitUntil(async () => (await cutOff.activePolls()) === TRACES, 10_000, "every lease on the first instance");
    for (const traceId of traceIds) watchers.push(await openWatcher(other, traceId));
    const sessionOf = (params: Readonly<Record<string, string>>) => params.session;
    await waitUntil(
      async () =>
        (await Promise.all(traceIds.map((id) => gateway.getTrace(id)))).every(
          (r) => r.calls.filter((c) => sessionOf(c.params) === "session-i0").length >= 2,
        ),
      10_000,
      "its calls",
      50,
    );

    const partitionedAt = Date.now();
    proxy.blackhole();
    // The others take over every trace.
    await waitUntil(
      async () =>
        (await Promise.all(traceIds.map((id) => gateway.getTrace(id)))).every((r) =>
          r.calls.some((c) => c.startedAt > partitionedAt && sessionOf(c.params) !== "session-i0"),
        ),
      15_000,
      "the others to take over every trace",
      50,
    );
    const tookOverAt = Date.now();
    // And poll on for a while, with the first instance still cut off.
    const heldUntil = Date.now() + 3 * INTERVAL_MS;
    await waitUntil(() => Date.now() >= heldUntil, 5_000, "the partition to last", 50);
    proxy.heal();

    for (const id of traceIds) await gateway.setScript(id, scriptBoundAfter(0));
    await waitUntil(() => watchers.every((w) => w.reader.ended), 20_000, "every watcher's final", 50);

    const reports = await Promise.all(traceIds.map((id) => gateway.getTrace(id)));
    const lateCalls = reports.flatMap((r) =>
      r.calls.filter(
        (c) => sessionOf(c.params) === "session-i0" && c.startedAt > partitionedAt + 200 && c.startedAt < heldUntil,
      ),
    );
    const gaps = reports.flatMap((r) => gapsOf(callStarts(r)));
    console.info(
      `partition: others took over every trace ${tookOverAt - partitionedAt} ms after the black hole; ` +
        `calls by the cut-off instance meanwhile ${lateCalls.length}; max in flight ${Math.max(...reports.map((r) => r.maxInFlight))}, ` +
        `min gap ${Math.min(...gaps)} ms`,
    );
    expect(lateCalls).toEqual([]);
    for (const report of reports) expect(report.maxInFlight, report.traceId).toBe(1);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
    for (const w of watchers) {
      expect(finalEventsOf(w), `${w.traceId} on ${w.instance.name}`).toEqual([
        { event: "bound", traceId: w.traceId, status: "bound" },
      ]);
    }
  }, 90_000);
});
