import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { afterAll, beforeAll } from "vitest";
import type { SimStats, SimTraceReport } from "../../src/sim/gateway.js";
import { scriptBoundAfter, type TraceScriptInput } from "../../src/sim/scripts.js";
import { ENTRY, ensureBuilt, ROOT } from "./build.js";
import { DEATH_SIGNAL_PREFIX, trackChild } from "./children.js";
import { type RedisServer, startRedisServer } from "./redis-server.js";
import { bindBody, postBind, waitUntil } from "./server.js";
import { openSse, type SseReader } from "./sse-reader.js";

export { ensureBuilt } from "./build.js";

/*
 * A bindwatch cluster made of real processes: the built entry (`npm start`) spawned
 * several times against one Redis, with the TOP gateway double served from a worker
 * thread of the test process so every checkbind call of the whole deployment is counted
 * in one place.
 */

const LISTEN_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 5_000;

// ---- the gateway double --------------------------------------------------------

/** The gateway double as the tests see it: the simulator's API, asynchronous. */
export interface Gateway {
  /** The value for TOP_GATEWAY_URL. */
  readonly url: string;
  setScript(traceId: string, script: TraceScriptInput): Promise<void>;
  getTrace(traceId: string): Promise<SimTraceReport>;
  stats(): Promise<SimStats>;
  close(): Promise<void>;
}

/*
 * The double runs `createTopSimulator` (built, from dist/) in a worker thread of this
 * process: its own event loop stamps each call's start when the request arrives. On the
 * test's main thread, hundreds of SSE readers opening at once hold the loop for hundreds
 * of milliseconds, and a call stamped late makes the next gap look short.
 */
const GATEWAY_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const { createRequire } = require("node:module");
const { pathToFileURL } = require("node:url");
(async () => {
  const { createTopSimulator } = await import(pathToFileURL(workerData.gatewayModule).href);
  const { serve } = createRequire(workerData.packageJson)("@hono/node-server");
  const sim = createTopSimulator({ appKey: workerData.appKey, appSecret: workerData.appSecret });
  const server = serve({ fetch: sim.fetch, port: 0, hostname: "127.0.0.1" });
  server.once("listening", () => parentPort.postMessage({ id: 0, result: server.address().port }));
  parentPort.on("message", (msg) => {
    try {
      if (msg.op === "close") {
        server.close(() => parentPort.postMessage({ id: msg.id, result: null }));
        server.closeAllConnections();
        return;
      }
      let result = null;
      if (msg.op === "setScript") sim.setScript(msg.traceId, msg.script);
      else if (msg.op === "getTrace") result = sim.getTrace(msg.traceId);
      else if (msg.op === "stats") result = sim.stats();
      else throw new Error("unknown op " + msg.op);
      parentPort.postMessage({ id: msg.id, result });
    } catch (err) {
      parentPort.postMessage({ id: msg.id, error: String(err && err.stack || err) });
    }
  });
})().catch((err) => parentPort.postMessage({ id: 0, error: String(err && err.stack || err) }));
`;

interface WorkerReply {
  readonly id: number;
  readonly result?: unknown;
  readonly error?: string;
}

/**
 * Serves the TOP gateway double on a loopback port, from a worker thread.
 * @example const gateway = await startGateway({ appKey, appSecret }); await gateway.setScript(id, scriptBoundAfter(3));
 */
export async function startGateway(opts: { appKey: string; appSecret: string }): Promise<Gateway> {
  const worker = new Worker(GATEWAY_WORKER, {
    eval: true,
    workerData: {
      gatewayModule: join(ROOT, "dist/src/sim/gateway.js"),
      packageJson: join(ROOT, "package.json"),
      appKey: opts.appKey,
      appSecret: opts.appSecret,
    },
  });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  let gone: Error | null = null;
  const failAll = (err: Error) => {
    gone = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on("message", (reply: WorkerReply) => {
    const p = pending.get(reply.id);
    if (!p) return;
    pending.delete(reply.id);
    if (reply.error !== undefined) p.reject(new Error(`gateway worker: ${reply.error}`));
    else p.resolve(reply.result);
  });
  worker.on("error", (err) => failAll(err));
  worker.on("exit", (code) => failAll(new Error(`gateway worker exited (${code})`)));
  const call = (message: Record<string, unknown>, id = nextId++): Promise<unknown> =>
    new Promise((resolve, reject) => {
      if (gone) {
        reject(gone);
        return;
      }
      pending.set(id, { resolve, reject });
      if (id !== 0) worker.postMessage({ ...message, id });
    });
  const port = (await call({}, 0)) as number;
  return {
    url: `http://127.0.0.1:${port}/router/rest`,
    async setScript(traceId, script) {
      await call({ op: "setScript", traceId, script });
    },
    async getTrace(traceId) {
      return (await call({ op: "getTrace", traceId })) as SimTraceReport;
    },
    async stats() {
      return (await call({ op: "stats" })) as SimStats;
    },
    async close() {
      if (gone) return;
      await call({ op: "close" }).catch(() => {});
      await worker.terminate();
    },
  };
}

// ---- instance processes --------------------------------------------------------

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Instance {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcessWithoutNullStreams;
  /** Raw stdout lines (pino JSON) so far. */
  readonly lines: readonly string[];
  stderr(): string;
  /** Resolves once the process exited and its stdout was read to the end. */
  readonly exited: Promise<ExitInfo>;
  /** Null while the process runs. */
  exitInfo(): ExitInfo | null;
  /** A value of this instance's `GET /metrics` (first sample of the series); NaN when absent. */
  metric(name: string): Promise<number>;
  /** `bindwatch_active_polls`: leases this instance holds right now. */
  activePolls(): Promise<number>;
  /** Sends a signal; resolves with the exit once the process is gone. */
  signal(signal: NodeJS.Signals): Promise<ExitInfo>;
}

/** A clean environment: nothing of the test runner's (REDIS_URL included) leaks in. */
function instanceEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  return { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env };
}

function parseJsonLine(line: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Reads one sample of a Prometheus text exposition; NaN when the series is absent. */
export function readMetric(text: string, name: string): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    const match = /^(?:\{[^}]*\})?\s+(\S+)/.exec(rest);
    if (match?.[1] !== undefined) return Number(match[1]);
  }
  return Number.NaN;
}

/**
 * Spawns the built entry with `env` (over PORT=0, HOST=127.0.0.1, LOG_LEVEL=info) and
 * resolves once its "bindwatch listening" log line gave the URL.
 * @example const a = await startInstance("a", { REDIS_URL: redis.url, TOP_GATEWAY_URL: gateway.url, … });
 */
export async function startInstance(name: string, env: Readonly<Record<string, string>>): Promise<Instance> {
  const [command = process.execPath, ...args] = [...DEATH_SIGNAL_PREFIX, process.execPath, ENTRY];
  const child = trackChild(spawn(command, args, { cwd: ROOT, env: instanceEnv(env) }));
  const lines: string[] = [];
  let partial = "";
  let stderr = "";
  let exit: ExitInfo | null = null;
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    partial += chunk;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) if (line !== "") lines.push(line);
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      const info = exit;
      // Report the exit once stdout is drained: the last log lines matter.
      if (child.stdout.readableEnded) resolve(info);
      else
        child.stdout.once("end", () => {
          if (partial !== "") lines.push(partial);
          resolve(info);
        });
    });
  });

  const url = await waitUntil(
    () => {
      if (exit) throw new Error(`instance ${name} exited before listening (${JSON.stringify(exit)}):\n${stderr}`);
      for (const line of lines) {
        const log = parseJsonLine(line);
        if (log?.msg === "bindwatch listening" && typeof log.url === "string") return log.url;
      }
      return null;
    },
    LISTEN_TIMEOUT_MS,
    `instance ${name} to log its listening URL`,
    20,
  ).catch((err: unknown) => {
    child.kill("SIGKILL");
    throw err;
  });

  const metric = async (series: string): Promise<number> => {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
    return readMetric(await res.text(), series);
  };
  return {
    name,
    url,
    child,
    lines,
    stderr: () => stderr,
    exited,
    exitInfo: () => exit,
    metric,
    activePolls: () => metric("bindwatch_active_polls"),
    async signal(sig) {
      if (exit) return exit;
      child.kill(sig);
      return exited;
    },
  };
}

/** Starts `count` instances named `i0`, `i1`, … with the same environment, all at once. */
export function startInstances(
  count: number,
  env: Readonly<Record<string, string>>,
  instanceEnv: (index: number) => Readonly<Record<string, string>> = () => ({}),
): Promise<Instance[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startInstance(`i${i}`, { ...env, ...instanceEnv(i) })));
}

/** SIGKILLs whatever still runs of `instances` and waits for each exit (bounded). */
export async function killAll(instances: readonly Instance[]): Promise<void> {
  await Promise.all(
    instances.map(async (instance) => {
      if (instance.exitInfo()) return;
      instance.child.kill("SIGKILL");
      await Promise.race([instance.exited, new Promise((resolve) => setTimeout(resolve, EXIT_TIMEOUT_MS))]);
    }),
  );
}

/**
 * Has every instance make one checkbind call (a trace of its own, bound at once) before
 * anything is measured. Node loads its fetch implementation (undici) on the first call,
 * which takes 50–150 ms on a loaded machine: the scheduler stamps a call's start before
 * that, so a process's first call reaches the gateway late and the gap to the next one
 * looks short. Warm processes show the scheduler's cadence as it is.
 */
export async function warmUp(
  instances: readonly Instance[],
  gateway: Gateway,
  headers: Record<string, string> = {},
): Promise<void> {
  await Promise.all(
    instances.map(async (instance) => {
      const traceId = `warm-up-${instance.name}-${process.pid}-${Date.now().toString(36)}`;
      await gateway.setScript(traceId, scriptBoundAfter(0));
      const posted = await postBind(instance.url, bindBody(traceId), headers);
      if (posted.status !== 201) throw new Error(`warm-up POST to ${instance.name}: ${posted.status}`);
      await waitUntil(
        async () => {
          const res = await fetch(`${instance.url}/v1/binds/${traceId}`);
          return ((await res.json()) as { final?: boolean }).final === true;
        },
        10_000,
        `the warm-up trace on ${instance.name} to bind`,
        20,
      );
    }),
  );
}

/**
 * The one instance that holds a lease now (its `bindwatch_active_polls` is 1, every
 * other one's 0), once that is so; for tests that poll a single trace.
 */
export async function findLeaseHolder(instances: readonly Instance[], timeoutMs = 10_000): Promise<Instance> {
  let seen: Record<string, number> = {};
  return waitUntil(
    async () => {
      const live = instances.filter((i) => !i.exitInfo());
      const polls = await Promise.all(live.map((i) => i.activePolls().catch(() => Number.NaN)));
      seen = Object.fromEntries(live.map((i, n) => [i.name, polls[n] ?? Number.NaN]));
      const holders = live.filter((_, n) => polls[n] === 1);
      const idle = polls.filter((p) => p === 0).length;
      return holders.length === 1 && idle === live.length - 1 ? holders[0] : null;
    },
    timeoutMs,
    "exactly one instance to hold the lease",
    50,
  ).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; active polls ${JSON.stringify(seen)}`);
  });
}

// ---- watchers ------------------------------------------------------------------

/** Whether every instance answers /readyz 200. */
export async function readyEverywhere(instances: readonly Instance[]): Promise<boolean> {
  const answers = await Promise.all(
    instances.map((i) =>
      fetch(`${i.url}/readyz`, { signal: AbortSignal.timeout(3_000) }).then(
        (r) => r.status,
        () => 0,
      ),
    ),
  );
  return answers.every((status) => status === 200);
}

/** One raw SSE reader and where it is attached. */
export interface Watcher {
  readonly traceId: string;
  readonly instance: Instance;
  readonly reader: SseReader;
  /** When (this process's clock) the reader was opened: its frames' `at` counts from here. */
  readonly openedAt: number;
}

/** Opens a raw SSE reader on `instance` for `traceId` and checks that it is a stream. */
export async function openWatcher(instance: Instance, traceId: string): Promise<Watcher> {
  const openedAt = Date.now();
  const reader = await openSse(`${instance.url}/v1/binds/${encodeURIComponent(traceId)}/events`);
  if (reader.status !== 200) {
    reader.close();
    throw new Error(`watcher on ${instance.name} for ${traceId}: status ${reader.status} ${reader.text}`);
  }
  return { traceId, instance, reader, openedAt };
}

/** The final events (`final: true` in the data) a watcher received. */
export function finalEventsOf(watcher: Watcher): { event: string; traceId: unknown; status: unknown }[] {
  return watcher.reader.events
    .map((e) => ({ event: e.event, state: JSON.parse(e.data) as Record<string, unknown> }))
    .filter(({ state }) => state.final === true)
    .map(({ event, state }) => ({ event, traceId: state.trace_id, status: state.status }));
}

// ---- the call log --------------------------------------------------------------

/** Start times of a trace's calls at the gateway double, oldest first. */
export function callStarts(report: SimTraceReport): number[] {
  return report.calls.map((c) => c.startedAt);
}

/** Gaps between consecutive starts. */
export function gapsOf(starts: readonly number[]): number[] {
  return starts.slice(1).map((t, i) => t - (starts[i] ?? t));
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Resolves with the first call of `traceId` that started after `afterMs` (gateway clock = this process's). */
export function waitForCallAfter(
  gateway: Gateway,
  traceId: string,
  afterMs: number,
  timeoutMs: number,
  what = "a call",
): Promise<{ startedAt: number; seq: number }> {
  return waitUntil(
    async () => (await gateway.getTrace(traceId)).calls.find((c) => c.startedAt > afterMs) ?? null,
    timeoutMs,
    `${what} of ${traceId} after ${afterMs}`,
    5,
  );
}

// ---- a whole deployment -----------------------------------------------------------

export interface Cluster {
  readonly redis: RedisServer;
  readonly gateway: Gateway;
  readonly instances: Instance[];
  /** Closes the given watchers, kills every instance, stops the gateway and Redis. */
  stop(watchers?: readonly Watcher[]): Promise<void>;
}

export interface DeploymentOptions {
  readonly count: number;
  readonly appKey: string;
  readonly appSecret: string;
  readonly intervalMs: number;
  readonly env?: Readonly<Record<string, string>>;
  /** The API key the warm-up registers with, when API_KEYS is set in `env`. */
  readonly warmUpApiKey?: string;
  /** What instance `index` (0, 1, …) gets on top of `env`, e.g. a clock of its own. */
  readonly instanceEnv?: (index: number) => Readonly<Record<string, string>>;
}

export interface Deployment {
  readonly gateway: Gateway;
  readonly instances: Instance[];
  /** Closes the given watchers, kills every instance and stops the gateway. */
  stop(watchers?: readonly Watcher[]): Promise<void>;
}

/**
 * The gateway double and `count` warmed-up instances on the Redis that `storeEnv` names
 * (REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS…), polling every `intervalMs` with a
 * deployment budget high enough never to delay a call (cadence is the scheduler's alone)
 * and a short linger; `env` adds or overrides.
 */
export async function startDeployment(
  opts: DeploymentOptions & { readonly storeEnv: Readonly<Record<string, string>> },
): Promise<Deployment> {
  ensureBuilt();
  const gateway = await startGateway({ appKey: opts.appKey, appSecret: opts.appSecret });
  let instances: Instance[] = [];
  try {
    instances = await startInstances(
      opts.count,
      {
        ...opts.storeEnv,
        TOP_APP_KEY: opts.appKey,
        TOP_APP_SECRET: opts.appSecret,
        TOP_GATEWAY_URL: gateway.url,
        POLL_INTERVAL_MS: String(opts.intervalMs),
        POLL_LINGER_MS: "500",
        UPSTREAM_QPS: "1000",
        ...opts.env,
      },
      opts.instanceEnv,
    );
    // As a load balancer would: traffic only once every instance says it is ready.
    await Promise.all(
      instances.map((instance) =>
        waitUntil(
          async () =>
            (await fetch(`${instance.url}/readyz`, { signal: AbortSignal.timeout(2_000) }).catch(() => null))
              ?.status === 200,
          LISTEN_TIMEOUT_MS,
          `${instance.name} to be ready`,
          50,
        ),
      ),
    );
    await warmUp(instances, gateway, opts.warmUpApiKey ? { authorization: `Bearer ${opts.warmUpApiKey}` } : {});
  } catch (err) {
    await killAll(instances);
    await gateway.close();
    throw err;
  }
  return {
    gateway,
    instances,
    async stop(watchers = []) {
      for (const w of watchers) w.reader.close();
      await killAll(instances);
      await gateway.close();
    },
  };
}

/** A fresh redis-server and a deployment on it (`startDeployment`). */
export async function startCluster(opts: DeploymentOptions): Promise<Cluster> {
  const redis = await startRedisServer();
  let deployment: Deployment;
  try {
    deployment = await startDeployment({ ...opts, storeEnv: { REDIS_URL: redis.url } });
  } catch (err) {
    await redis.stop();
    throw err;
  }
  return {
    redis,
    gateway: deployment.gateway,
    instances: deployment.instances,
    async stop(watchers = []) {
      await deployment.stop(watchers);
      await redis.stop();
    },
  };
}

/**
 * Starts a cluster before the file's tests (`startCluster`), hands it to `onStarted`,
 * and stops it after them, closing `watchers` first.
 */
export function useCluster(
  opts: Parameters<typeof startCluster>[0] & { readonly watchers: Watcher[] },
  onStarted: (cluster: Cluster) => void,
): void {
  let cluster: Cluster | undefined;
  beforeAll(async () => {
    cluster = await startCluster(opts);
    onStarted(cluster);
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop(opts.watchers.splice(0));
  });
}
