import { describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import {
  finalEventsOf,
  type Gateway,
  gapsOf,
  type Instance,
  openWatcher,
  useCluster,
  type Watcher,
  waitForCallAfter,
} from "../support/cluster.js";
import type { RedisServer } from "../support/redis-server.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * Redis dies mid-watch and comes back empty. Meanwhile the
 * instances say they are not ready, refuse registrations with a 503 JSON error and
 * keep their streams open; afterwards they put back the registrations they hold in
 * memory, polling resumes and every watcher gets its final event. No process crashes.
 */

const APP_KEY = "45678901";
const APP_SECRET = "cluster-redis-restart-secret";
const INTERVAL_MS = 1000;
const HEARTBEAT_MS = 500;
const TRACES = 3;
const INSTANCES = 3;
const WATCHERS_PER_INSTANCE = 2;

let redis: RedisServer;
let gateway: Gateway;
let instances: Instance[] = [];
const watchers: Watcher[] = [];

useCluster(
  {
    count: INSTANCES,
    appKey: APP_KEY,
    appSecret: APP_SECRET,
    intervalMs: INTERVAL_MS,
    env: {
      // Pings show that a stream is alive while no state can change.
      HEARTBEAT_MS: String(HEARTBEAT_MS),
    },
    watchers,
  },
  (cluster) => {
    ({ redis, gateway, instances } = cluster);
  },
);

async function statusesOf(path: string): Promise<number[]> {
  return Promise.all(
    instances.map(async (i) => (await fetch(`${i.url}${path}`, { signal: AbortSignal.timeout(5_000) })).status),
  );
}

describe("Redis killed and restarted empty mid-watch", () => {
  it("keeps streams open, answers 503 meanwhile, re-asserts the traces and delivers every final event", async () => {
    const traceIds = Array.from({ length: TRACES }, () => newTraceId("redis-restart"));
    for (const id of traceIds) await gateway.setScript(id, scriptNever());
    const posted = await Promise.all(
      traceIds.map((id, n) => postBind((instances[n % INSTANCES] as Instance).url, bindBody(id))),
    );
    expect(posted.map((p) => p.status)).toEqual(traceIds.map(() => 201));
    for (const id of traceIds) {
      for (const instance of instances) {
        for (let n = 0; n < WATCHERS_PER_INSTANCE; n += 1) watchers.push(await openWatcher(instance, id));
      }
    }
    await waitUntil(() => watchers.every((w) => w.reader.events.length >= 1), 5_000, "the current state everywhere");
    // Polling runs: at least two calls per trace before Redis goes away.
    await waitUntil(
      async () => (await Promise.all(traceIds.map((id) => gateway.getTrace(id)))).every((r) => r.callCount >= 2),
      5_000,
      "two calls of every trace",
    );

    const framesAtKill = watchers.map((w) => w.reader.frames.length);
    redis.kill("SIGKILL");
    const killedAt = Date.now();

    // Every instance says it is not ready…
    await waitUntil(
      async () => (await statusesOf("/readyz")).every((s) => s === 503),
      10_000,
      "/readyz 503 everywhere",
    );
    // …refuses a registration with a 503 JSON error…
    const refused = await fetch(`${(instances[1] as Instance).url}/v1/binds`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(bindBody(newTraceId("redis-down"))),
      signal: AbortSignal.timeout(10_000),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await refused.json()).toMatchObject({ error: { code: "unavailable" } });
    // …and keeps every stream open: each one still gets heartbeats after the kill.
    await waitUntil(
      () => watchers.every((w, n) => w.reader.frames.slice(framesAtKill[n]).some((f) => f.comments.includes("ping"))),
      10 * HEARTBEAT_MS,
      "a ping on every stream after the kill",
    );
    expect(watchers.filter((w) => w.reader.ended).map((w) => `${w.traceId} on ${w.instance.name}`)).toEqual([]);

    const restartingAt = Date.now();
    await redis.restart();
    const restartedAt = Date.now();
    const outageMs = restartedAt - killedAt;

    await waitUntil(
      async () => (await statusesOf("/readyz")).every((s) => s === 200),
      15_000,
      "/readyz 200 everywhere",
    );
    // The registrations come back from the instances' memory: the traces are known again everywhere.
    await waitUntil(
      async () =>
        (await Promise.all(traceIds.flatMap((id) => instances.map((i) => fetch(`${i.url}/v1/binds/${id}`))))).every(
          (r) => r.status === 200,
        ),
      15_000,
      "every trace known again on every instance",
      100,
    );
    const firstAfter = await Promise.all(
      traceIds.map((id) => waitForCallAfter(gateway, id, restartingAt, 10_000, "the first call after the restart")),
    );

    for (const id of traceIds) await gateway.setScript(id, scriptBoundAfter(1));
    await waitUntil(() => watchers.every((w) => w.reader.ended), 15_000, "every stream to end", 20);

    const reports = await Promise.all(traceIds.map((id) => gateway.getTrace(id)));
    const acrossMs = reports.map((r, n) => {
      const first = firstAfter[n]?.startedAt ?? Number.NaN;
      return first - (r.calls.filter((c) => c.startedAt < first).at(-1)?.startedAt ?? Number.NaN);
    });
    console.info(
      `[redis-restart] outage ${outageMs} ms; first call after the restart ` +
        `${firstAfter.map((c) => c.startedAt - restartedAt).join("/")} ms later, ${acrossMs.join("/")} ms after the last one before it; ` +
        `calls per trace ${reports.map((r) => r.callCount).join("/")}`,
    );
    expect(watchers.map((w) => ({ error: w.reader.error, finals: finalEventsOf(w) }))).toEqual(
      watchers.map((w) => ({ error: null, finals: [{ event: "bound", traceId: w.traceId, status: "bound" }] })),
    );
    for (const [n, report] of reports.entries()) {
      const id = traceIds[n];
      const first = firstAfter[n]?.startedAt ?? Number.NaN;
      expect(report.maxInFlight, id).toBe(1);
      // No call while Redis was down (one that passed beginCall just before the kill may land a moment after it).
      expect(report.calls.filter((c) => c.startedAt > killedAt + INTERVAL_MS && c.startedAt < restartingAt)).toEqual(
        [],
      );
      // The 0.8 × interval floor holds across the outage too: Redis came back without the last
      // call's start, and the instance that re-asserts the trace records the re-assertion as one.
      expect(Number.isFinite(first), id).toBe(true);
      expect(Math.min(...gapsOf(report.calls.map((c) => c.startedAt))), id).toBeGreaterThanOrEqual(0.8 * INTERVAL_MS);
    }
    // No instance crashed.
    expect(instances.map((i) => i.exitInfo())).toEqual(instances.map(() => null));
    expect(await statusesOf("/healthz")).toEqual(instances.map(() => 200));
  }, 60_000);
});
