import { readFile } from "node:fs/promises";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import type { Logger as PinoLogger } from "pino";
import { createApp } from "../http/app.js";
import { errorBody } from "../http/errors.js";
import { createStreamRegistry } from "../http/sse.js";
import { MAX_BODY_BYTES } from "../http/validation.js";
import { createSimulatorControl } from "../sim/control.js";
import { renderDemoPage } from "../sim/demo-page.js";
import { createTopSimulator, type TopSimulator } from "../sim/gateway.js";
import { createSandboxCredentials, SANDBOX_GATEWAY_PATH, type SandboxCredentials } from "../sim/sandbox.js";
import { createTopClient } from "../top/client.js";
import { type BindService, createBindService } from "../watch/bind-service.js";
import type { Coordinator } from "../watch/coordinator.js";
import { createMemoryCoordinator } from "../watch/memory-coordinator.js";
import { takeoverMs } from "../watch/poll-driver.js";
import { createRedisCoordinator } from "../watch/redis-coordinator.js";
import type { Config } from "./config.js";
import { createMetrics } from "./metrics.js";
import { createNodeHttpServer, listening, readTlsMaterial } from "./node-http-server.js";
import { createNodeRequestListener } from "./node-listener.js";
import { readNodeBody, readNodeHeader } from "./node-request.js";
import { openNodeSseChannel } from "./node-sse.js";
import { createRedisConnections, type RedisConnections } from "./redis-connections.js";
import { webhookDeps } from "./webhooks.js";

const TOPOLOGY_NAMES = {
  standalone: "a standalone Redis",
  cluster: "a Redis Cluster",
  sentinel: "Redis Sentinel",
} as const;

/** How long a graceful stop in memory tries the webhooks left (the whole stop has 10 s, SPEC §4.6). */
const FLUSH_MS = 6_000;

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly simulator: TopSimulator | null;
  /** Simulator mode: the same simulator as a TOP sandbox for other clients, at `url` (SPEC §6). */
  readonly sandbox: (SandboxCredentials & { readonly url: string }) | null;
  readonly service: ReturnType<typeof createBindService>;
  readonly streams: ReturnType<typeof createStreamRegistry>;
  /** Graceful stop (SPEC §4.6): stop accepting, hand polls over, end streams with a retry hint. */
  stop(): Promise<void>;
}

/**
 * A file of the build's dist/assets/ (scripts/build-assets.ts), the same the Worker serves:
 * `client.js` (/v1/client.js), `demo.html` (/) or `scalar.js` (/docs/scalar.js). From dist/
 * the folder is two levels up from this file's; from the TypeScript sources (tests) it is under dist/.
 */
export async function loadAsset(name: "client.js" | "demo.html" | "scalar.js"): Promise<string | undefined> {
  for (const dir of ["../../assets/", "../../dist/assets/"]) {
    try {
      return await readFile(new URL(dir + name, import.meta.url), "utf8");
    } catch {
      // try the next place
    }
  }
  return undefined;
}

/** At most one "redis connection error" line per connection and this interval; the rest are counted. */
const REDIS_ERROR_LOG_INTERVAL_MS = 5_000;

/**
 * Logs Redis connection errors, a few at most: while a Cluster master is down, ioredis's
 * sharded subscriber for it tries again dozens of times a second until a replica takes
 * over (see createClusterConnections), each failure an 'error' event.
 */
function createRedisErrorLog(logger: PinoLogger): (err: Error, connection: "command" | "subscriber") => void {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (err, connection) => {
    const now = Date.now();
    const previous = last.get(connection);
    if (previous && now - previous.at < REDIS_ERROR_LOG_INTERVAL_MS) {
      previous.suppressed += 1;
      return;
    }
    const suppressed = previous?.suppressed ?? 0;
    logger.warn(
      { err: { message: err.message }, connection, ...(suppressed > 0 ? { suppressed } : {}) },
      "redis connection error",
    );
    last.set(connection, { at: now, suppressed: 0 });
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // Keep-alive sockets would hold close() open; idle ones can go at once.
    server.closeIdleConnections();
  });
}

/**
 * Starts bindwatch on Node with a parsed config: the in-process TOP simulator when
 * no credentials are set, the in-memory coordinator unless one is given.
 */
export async function startNodeServer(
  config: Config,
  logger: PinoLogger,
  opts: { coordinator?: Coordinator } = {},
): Promise<RunningServer> {
  // First, so an unusable certificate stops start-up before anything is set up.
  const tls = await readTlsMaterial(config.tls);
  let simulator: TopSimulator | null = null;
  let sandbox: SandboxCredentials | null = null;
  let simServer: Server | null = null;
  let top = config.top;
  if (config.simulator) {
    // Simulator mode (SPEC §6): a gateway on loopback, reached over real HTTP with real signing.
    // The same instance answers other TOP clients at /sim/router/rest with the same credentials.
    sandbox = createSandboxCredentials(config.sandbox);
    simulator = createTopSimulator(sandbox);
    // serve() returns an http.Server unless told to use http2, which bindwatch never does.
    simServer = serve({ fetch: simulator.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    const simPort = await listening(simServer);
    top = { ...top, ...sandbox, gatewayUrl: `http://127.0.0.1:${simPort}/router/rest` };
    logger.warn({ gateway: top.gatewayUrl }, "simulator mode: checkbind goes to the in-process simulator");
  }

  const retention = {
    retentionMs: config.bindTimeoutMs + config.resultTtlMs,
    resultTtlMs: config.resultTtlMs,
    upstreamQps: config.upstreamQps,
  };
  const streams = createStreamRegistry();
  // The service and the metrics refer to each other only through these late-bound sources.
  let statsOf: () => ReturnType<BindService["stats"]> = () => ({
    hubs: 0,
    watchers: 0,
    drivers: 0,
    leases: 0,
    waitingForBudget: 0,
  });
  const metrics = createMetrics({ streams: () => streams.size, stats: () => statsOf() });
  let redisConnections: RedisConnections | null = null;
  let coordinator: Coordinator;
  if (opts.coordinator) coordinator = opts.coordinator;
  else if (config.redis) {
    // One coordinator for every topology: standalone, Cluster and Sentinel differ only in their connections.
    redisConnections = createRedisConnections(config.redis, {
      onError: createRedisErrorLog(logger),
    });
    logger.info({ redis: redisConnections.describe }, `coordinating through ${TOPOLOGY_NAMES[config.redis.mode]}`);
    coordinator = createRedisCoordinator({
      ...retention,
      ...(config.webhooks ? { deliveryRetentionMs: config.webhooks.maxAgeMs + 60 * 60 * 1000 } : {}),
      redis: redisConnections.redis,
      subscriber: redisConnections.subscriber,
      // The takeover time of SPEC §4.4, longer than a poll lease: see src/watch/redis-coordinator.ts.
      failoverQuietMs: takeoverMs(config.pollIntervalMs),
      onRequest: (operation) => metrics.redis.onRequest(operation),
      logger,
    });
  } else coordinator = createMemoryCoordinator(retention);
  const client = createTopClient({
    gatewayUrl: top.gatewayUrl,
    appKey: top.appKey ?? "",
    appSecret: top.appSecret ?? "",
    signMethod: top.signMethod,
    timeoutMs: top.timeoutMs,
    terminalRetCodes: config.terminalRetCodes,
    ...(top.session === undefined ? {} : { session: top.session }),
  });
  const hooks = config.webhooks;
  const service = createBindService({
    coordinator,
    client,
    config,
    logger,
    observer: metrics.service,
    ...(hooks ? { webhooks: webhookDeps(hooks, config.pollIntervalMs) } : {}),
  });
  service.webhooks?.start();
  if (hooks) metrics.watchWebhooks(() => coordinator.deliveries.tracked());
  statsOf = () => service.stats();
  const sim = simulator && sandbox ? { simulator, sandbox } : null;
  const [clientScript, demoPage, referenceScript] = await Promise.all([
    loadAsset("client.js"),
    sim ? loadAsset("demo.html") : undefined,
    loadAsset("scalar.js"),
  ]);
  if (clientScript === undefined)
    logger.warn({}, "browser client not built (npm run build): /v1/client.js is not served");
  if (referenceScript === undefined)
    logger.warn({}, "API reference script not built (npm run build): /docs is not served");
  if (sim && demoPage === undefined) logger.warn({}, "demo page not built (npm run build): / is not served");
  const app = createApp({
    service,
    streams,
    logger,
    config: {
      heartbeatMs: config.heartbeatMs,
      sseRetryMs: Math.max(1000, config.pollIntervalMs),
      maxStreams: config.maxStreams,
    },
    observer: metrics.http,
    openSseChannel: openNodeSseChannel,
    readHeader: readNodeHeader,
    readBody: readNodeBody,
    ...(clientScript === undefined ? {} : { clientScript }),
    ...(referenceScript === undefined ? {} : { referenceScript: async () => new Response(referenceScript) }),
    isReady: () => coordinator.isReady(),
    now: () => coordinator.now(),
    mode: config.mode,
    access: {
      apiKeys: config.apiKeys,
      watchTokenSecret: config.watchTokenSecret,
      tokenGraceMs: config.resultTtlMs,
      corsOrigins: config.corsOrigins,
      callbackOrigins: config.webhooks?.allowedOrigins ?? [],
      registrationsPerMinute: config.registrationsPerMinute,
    },
    extend: (a) => {
      a.get("/metrics", async (c) =>
        c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType }),
      );
      if (sim) {
        const page = demoPage && renderDemoPage(demoPage, { title: "bindwatch demo", sandbox: sim.sandbox });
        if (page) a.get("/", (c) => c.html(page));
        a.get("/favicon.ico", (c) => c.body(null, 204));
        a.route("/sim", createSimulatorControl(sim.simulator));
      }
    },
  });

  // serve() without its errorHandler, which it does not pass on: a request the adapter refuses before
  // the app sees it (a backslash in the path, a bad Host header) would get a bare 400, not the JSON error.
  // Node loads its fetch implementation on first use (tens of ms): do it now, not inside the
  // first checkbind call, whose start the call gate has already stamped.
  await fetch("data:,")
    .then((r) => r.arrayBuffer())
    .catch(() => undefined);
  const server = createNodeHttpServer(
    createNodeRequestListener(app.fetch, {
      hostname: config.host,
      maxDrainBytes: MAX_BODY_BYTES,
      errorHandler: (err) =>
        err instanceof Error && err.name === "RequestError"
          ? Response.json(errorBody("invalid_request", "malformed request target or Host header"), { status: 400 })
          : Response.json(errorBody("internal", "internal error"), { status: 500 }),
    }),
    tls,
  );
  const port = await server.listen(config.port, config.host);
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const url = `${server.scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  logger.info({ url, mode: config.mode, redis: config.redis?.mode ?? false }, "bindwatch listening");
  const sandboxUrl = `${url}${SANDBOX_GATEWAY_PATH}`;
  if (sandbox) {
    // SPEC §6 wants these shown; they are the simulator's, never TOP's (keys not in the redaction list).
    logger.info(
      { sandbox_url: sandboxUrl, sandbox_app_key: sandbox.appKey, sandbox_app_secret: sandbox.appSecret },
      "TOP sandbox: point any TOP SDK at sandbox_url with these credentials (SIMULATOR_APP_KEY, SIMULATOR_APP_SECRET)",
    );
  }

  let stopping: Promise<void> | null = null;
  return {
    url,
    port,
    simulator,
    sandbox: sandbox && { ...sandbox, url: sandboxUrl },
    service,
    streams,
    stop() {
      stopping ??= (async () => {
        const startedAt = Date.now();
        const closed = server.close();
        server.closeIdle();
        await service.shutdown();
        // In memory the deliveries end with the process: every one left is tried now, within the
        // stop's time. With Redis they stay for the other instances; attempts in flight are handed back.
        const undelivered = await service.webhooks?.stop(redisConnections ? undefined : startedAt + FLUSH_MS);
        for (const record of undelivered ?? []) {
          const left = record.destinations.filter((d) => d.outcome === null).map((d) => d.url);
          logger.error(
            { trace_id: record.traceId, webhook_id: record.id, destinations: left },
            "webhook not delivered before the stop: lost with this in-memory instance",
          );
        }
        // Spread reconnects over a second or two so another instance is not hit all at once.
        streams.closeAll(() => 500 + Math.floor(Math.random() * 1500));
        // Ended streams leave idle keep-alive sockets behind; close those, and cut any straggler.
        setImmediate(() => server.closeIdle());
        const cut = setTimeout(() => server.cutAll(), 2_000);
        await closed;
        clearTimeout(cut);
        await coordinator.close();
        await redisConnections?.close();
        if (simServer) await closeServer(simServer);
      })();
      return stopping;
    },
  };
}
