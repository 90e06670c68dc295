import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { type Deployment, type Instance, startDeployment } from "../support/cluster.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { startRedisServer } from "../support/redis-server.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";
import { startWebhookReceiver, type WebhookReceiver } from "../support/webhook-receiver.js";

/*
 * Webhook deliveries survive the death of the instance that polled the binds (SPEC §3):
 * three instances on Redis — standalone, and a Redis Cluster — with the backend down
 * while 30 binds end on one instance, which is then killed -9; the backend comes back.
 * Every final is delivered, with one webhook-id per final. Ten more binds of that
 * instance, not final yet when it died, are adopted by the others, polled to their end
 * and delivered too.
 */

const SECRET = `whsec_${randomBytes(24).toString("base64")}`;
const INTERVAL_MS = 500;
const ENDED = 30;
const OPEN = 10;

const TOPOLOGIES = [
  {
    name: "one Redis server",
    async start() {
      const redis = await startRedisServer();
      return { env: { REDIS_URL: redis.url }, stop: () => redis.stop() };
    },
  },
  {
    name: "a Redis Cluster",
    async start() {
      const cluster = await startRedisCluster();
      return {
        env: { REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",") },
        stop: () => cluster.stop(),
      };
    },
  },
] as const;

describe.each(TOPOLOGIES)("webhooks on $name across a kill -9", (topology) => {
  let store: Awaited<ReturnType<(typeof TOPOLOGIES)[number]["start"]>>;
  let backend: WebhookReceiver;
  let deployment: Deployment;

  beforeAll(async () => {
    store = await topology.start();
    backend = await startWebhookReceiver(SECRET);
    deployment = await startDeployment({
      count: 3,
      appKey: "webhook-app-key",
      appSecret: "webhook-app-secret-0123456789",
      intervalMs: INTERVAL_MS,
      storeEnv: store.env,
      env: {
        WEBHOOK_URL: backend.url,
        WEBHOOK_SECRET: SECRET,
        WEBHOOK_RETRY_MS: "300",
        WEBHOOK_TIMEOUT_MS: "1000",
        BIND_TIMEOUT_MS: "120000",
      },
    });
  }, 120_000);

  afterAll(async () => {
    await deployment?.stop();
    await backend?.close();
    await store?.stop();
  });

  it("delivers every final once the backend is back, one webhook-id each, and the unfinished binds are polled to their end", async () => {
    const { gateway, instances } = deployment;
    const [doomed] = instances as [Instance, Instance, Instance];
    // The warm-up's binds were delivered; from here on the backend is down.
    await waitUntil(() => backend.delivered().length >= instances.length, 10_000, "the warm-up deliveries", 20);
    const warmUps = new Set(backend.delivered().map((r) => r.id));
    await backend.down();

    const ended = Array.from({ length: ENDED }, () => newTraceId("wh-ended"));
    const open = Array.from({ length: OPEN }, () => newTraceId("wh-open"));
    for (const id of ended) await gateway.setScript(id, scriptBoundAfter(0));
    for (const id of open) await gateway.setScript(id, scriptNever());
    for (const id of [...ended, ...open]) expect((await postBind(doomed.url, bindBody(id))).status).toBe(201);
    await waitUntil(
      async () => {
        const states = await Promise.all(
          ended.map(async (id) => (await (await fetch(`${doomed.url}/v1/binds/${id}`)).json()) as BindState),
        );
        return states.every((s) => s.status === "bound");
      },
      20_000,
      "the 30 binds to end",
      50,
    );
    await waitUntil(
      async () => (await doomed.metric('bindwatch_webhook_deliveries_total{outcome="failed"}')) >= ENDED,
      20_000,
      "a failed attempt of each",
      50,
    );
    expect(await doomed.activePolls()).toBe(OPEN);

    await doomed.signal("SIGKILL");
    const killedAt = Date.now();
    await backend.up();
    for (const id of open) await gateway.setScript(id, scriptBoundAfter(0));

    const wanted = new Set([...ended, ...open]);
    const deliveredOf = () => backend.delivered().filter((r) => wanted.has(String(r.payload?.data?.trace_id)));
    await waitUntil(
      () => new Set(deliveredOf().map((r) => r.payload?.data?.trace_id)).size === wanted.size,
      45_000,
      "every final delivered",
      50,
    );
    const delivered = deliveredOf();
    const byTrace = new Map<string, Set<string>>();
    for (const r of delivered) {
      const traceId = String(r.payload?.data?.trace_id);
      byTrace.set(traceId, (byTrace.get(traceId) ?? new Set()).add(r.id));
    }
    const duplicates = delivered.length - new Set(delivered.map((r) => r.id)).size;
    console.info(
      `webhooks on ${topology.name}: ${wanted.size} finals delivered ${Date.now() - killedAt} ms after the kill, ` +
        `${delivered.length} deliveries, ${duplicates} duplicates, all verified ${backend.received.every((r) => r.verified)}`,
    );
    expect(backend.received.every((r) => r.verified)).toBe(true);
    for (const [traceId, ids] of byTrace) expect(ids.size, traceId).toBe(1);
    for (const r of delivered) expect(warmUps.has(r.id)).toBe(false);
    // The backend was down until after the kill: nothing could have been delivered twice.
    expect(duplicates).toBe(0);
    for (const r of delivered) expect(r.payload?.type).toBe("bind.bound");
  }, 90_000);
});
