import { describe, expect, it } from "vitest";
import { scriptNever } from "../../src/sim/scripts.js";
import { type Cluster, type Instance, openWatcher, useCluster, type Watcher } from "../support/cluster.js";
import { rawCommand } from "../support/redis-server.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";

/*
 * What coordination costs Redis per checkbind call (SPEC §8): every command Redis ran in
 * a steady-state window (INFO commandstats, which counts the commands inside scripts
 * too) divided by the checkbind calls made in it, and the requests the instances sent
 * (a script or a pipeline being one, `bindwatch_redis_requests_total`) likewise —
 * whatever the number of watchers per trace and of instances that watch each trace.
 */

const INTERVAL_MS = 500;
const TRACES = 10;
const WINDOW_INTERVALS = 10;
const MAX_COMMANDS_PER_CALL = 12;
const MAX_ROUND_TRIPS_PER_CALL = 3;

let cluster: Cluster;
const watchers: Watcher[] = [];

useCluster(
  {
    count: 6,
    appKey: "cost-app-key",
    appSecret: "cost-app-secret-0123456789",
    intervalMs: INTERVAL_MS,
    env: { BIND_TIMEOUT_MS: "600000", MAX_STREAMS: "2000" },
    watchers,
  },
  (c) => {
    cluster = c;
  },
);

/** Commands Redis ran so far, by name, from INFO commandstats. */
async function commandStats(port: number): Promise<Record<string, number>> {
  const text = await rawCommand(port, ["INFO", "commandstats"], 5_000);
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) counts[match[1] ?? ""] = Number(match[2]);
  return counts;
}

async function requestsSent(instances: readonly Instance[]): Promise<number> {
  let total = 0;
  for (const instance of instances) {
    const text = await (await fetch(`${instance.url}/metrics`)).text();
    for (const match of text.matchAll(/^bindwatch_redis_requests_total\{[^}]*\} (\d+)/gm)) total += Number(match[1]);
  }
  return total;
}

async function callsSoFar(traceIds: readonly string[]): Promise<number> {
  const reports = await Promise.all(traceIds.map((id) => cluster.gateway.getTrace(id)));
  return reports.reduce((n, r) => n + r.callCount, 0);
}

describe("Redis cost per checkbind call, steady state", () => {
  it.each([
    { instances: 1, watchersPerInstance: 1 },
    { instances: 1, watchersPerInstance: 20 },
    { instances: 3, watchersPerInstance: 5 },
    { instances: 6, watchersPerInstance: 3 },
  ])("$instances instance(s) watching each trace, $watchersPerInstance watcher(s) each: at most 12 commands and 3 round trips", async ({
    instances: count,
    watchersPerInstance,
  }) => {
    const watching = cluster.instances.slice(0, count);
    const traceIds = Array.from({ length: TRACES }, () => newTraceId(`cost-${count}x${watchersPerInstance}`));
    const opened: Watcher[] = [];
    for (const [t, traceId] of traceIds.entries()) {
      await cluster.gateway.setScript(traceId, scriptNever());
      expect((await postBind((watching[t % count] as Instance).url, bindBody(traceId))).status).toBe(201);
      for (const instance of watching) {
        for (let w = 0; w < watchersPerInstance; w += 1) opened.push(await openWatcher(instance, traceId));
      }
    }
    watchers.push(...opened);
    // Past the start-up (registrations, subscriptions, the first lease takes): steady polling.
    const warm = await callsSoFar(traceIds);
    await waitUntil(async () => (await callsSoFar(traceIds)) >= warm + 2 * TRACES, 10_000, "polling to settle", 50);

    const before = { redis: await commandStats(cluster.redis.port), sent: await requestsSent(cluster.instances) };
    const callsBefore = await callsSoFar(traceIds);
    await new Promise((resolve) => setTimeout(resolve, WINDOW_INTERVALS * INTERVAL_MS));
    const calls = (await callsSoFar(traceIds)) - callsBefore;
    const after = { redis: await commandStats(cluster.redis.port), sent: await requestsSent(cluster.instances) };

    const ran: Record<string, number> = {};
    for (const [name, n] of Object.entries(after.redis)) {
      // The test's own INFO does not count.
      if (name === "info") continue;
      const delta = n - (before.redis[name] ?? 0);
      if (delta > 0) ran[name] = delta;
    }
    const commands = Object.values(ran).reduce((a, b) => a + b, 0);
    const roundTrips = after.sent - before.sent;
    console.info(
      `Redis cost, ${count} instance(s) × ${watchersPerInstance} watcher(s) per trace: ${calls} calls, ` +
        `${(commands / calls).toFixed(2)} commands and ${(roundTrips / calls).toFixed(2)} round trips per call ` +
        `${JSON.stringify(ran)}`,
    );
    expect(calls).toBeGreaterThanOrEqual(TRACES * WINDOW_INTERVALS * 0.8);
    expect(commands / calls).toBeLessThanOrEqual(MAX_COMMANDS_PER_CALL);
    expect(roundTrips / calls).toBeLessThanOrEqual(MAX_ROUND_TRIPS_PER_CALL);

    // Done with these traces: their watchers go, so the next case measures its own.
    for (const w of opened) w.reader.close();
    await waitUntil(
      async () => (await Promise.all(watching.map((i) => i.metric("bindwatch_watchers")))).every((n) => n === 0),
      10_000,
      "the watchers to be gone",
    );
  }, 60_000);
});
