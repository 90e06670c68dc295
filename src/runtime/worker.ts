// The edge runtime: the Cloudflare Worker entry and its Durable Object classes.
//
//   Worker (stateless)      the shared Hono app: validates POST /v1/binds and hands the
//                           registration to the trace's object over RPC; forwards every
//                           other /v1/binds/{trace_id} request to that object.
//   BindObject              one per trace_id (idFromName): the single-flight poller and
//                           fan-out hub of its trace. Runs the shared app and BindService
//                           over a Durable Object coordinator on its own storage; holds
//                           the trace's SSE streams and long-polls; its alarm keeps
//                           polling alive without an open request and deletes the
//                           storage after RESULT_TTL_MS.
//   BudgetObject            one for the deployment ("global"): hands out UPSTREAM_QPS
//                           call permits and holds TOP rate-limit bans.
//   TopSimulatorObject      simulator mode only: the TOP gateway simulator and its
//                           control API, reached by the TOP client through its stub.
import { DurableObject } from "cloudflare:workers";
import { type Context, Hono, type Next } from "hono";
import type { BindRegistration } from "../domain/bind.js";
import { censorSecrets } from "../domain/log-censor.js";
import type { Logger } from "../domain/logger.js";
import type { CheckbindOutcome } from "../domain/outcome.js";
import { deadlineOf } from "../domain/state.js";
import { type AccessConfig, createApp, type HttpConfig } from "../http/app.js";
import { createStreamRegistry } from "../http/sse.js";
import { isValidTraceId } from "../http/validation.js";
import { createSimulatorControl } from "../sim/control.js";
import { renderDemoPage } from "../sim/demo-page.js";
import { createTopSimulator } from "../sim/gateway.js";
import { createSandboxCredentials, SANDBOX_GATEWAY_PATH, type SandboxCredentials } from "../sim/sandbox.js";
import { type CheckbindClient, createTopClient } from "../top/client.js";
import {
  type BindService,
  createBindService,
  type RegisterOutcome,
  type RegistrationQuota,
} from "../watch/bind-service.js";
import type { Permit, QuotaTake } from "../watch/coordinator.js";
import {
  type CallBudget,
  createDurableCallBudget,
  createDurableObjectCoordinator,
  type DurableObjectCoordinator,
  type DurableStorage,
} from "../watch/durable-object-coordinator.js";
import { takeoverMs } from "../watch/poll-driver.js";
import { type Config, ConfigError, parseConfig } from "./config.js";
import { webhookDeps } from "./webhooks.js";

// ---- the platform, as far as bindwatch uses it ------------------------------
// (@cloudflare/workers-types' globals clash with the DOM typings of the Node build.)

export interface DurableObjectStorageApi extends DurableStorage {
  getAlarm(): Promise<number | null>;
  setAlarm(scheduledTime: number): Promise<void>;
  deleteAlarm(): Promise<void>;
  deleteAll(): Promise<void>;
}

export interface DurableObjectStateApi {
  readonly id: { toString(): string };
  readonly storage: DurableObjectStorageApi;
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
}

export interface DurableObjectNamespaceApi<Stub> {
  idFromName(name: string): unknown;
  get(id: unknown): Stub;
}

/** What a caller can do with a trace's object: HTTP requests and the RPC methods below. */
export interface BindObjectStub {
  fetch(request: Request): Promise<Response>;
  register(reg: BindRegistration, quota?: RegistrationQuota): Promise<RegisterOutcome>;
}

export interface BudgetObjectStub extends CallBudget {}

export interface TopSimulatorObjectStub {
  fetch(request: Request): Promise<Response>;
  credentials(): Promise<SandboxCredentials>;
}

/** The Worker's bindings (wrangler.toml) plus its vars and secrets (strings). */
export interface EdgeEnv {
  readonly BINDS: DurableObjectNamespaceApi<BindObjectStub>;
  readonly BUDGET: DurableObjectNamespaceApi<BudgetObjectStub>;
  /** Not `SIMULATOR`: that name is the variable that turns simulator mode on. */
  readonly TOP_SIMULATOR: DurableObjectNamespaceApi<TopSimulatorObjectStub>;
  /** The build's dist/assets/ (wrangler.toml `[assets]`): the browser client and the demo page. */
  readonly ASSETS?: { fetch(request: Request): Promise<Response> };
  readonly [variable: string]: unknown;
}

/** The name of the one budget object of the deployment. */
const BUDGET_OBJECT_NAME = "global";
const SIMULATOR_OBJECT_NAME = "simulator";
/** The simulator is reached through its object's stub; the host only has to be a valid URL. */
const SIMULATOR_GATEWAY_URL = "http://top-simulator.internal/router/rest";

function bindStub(env: EdgeEnv, traceId: string): BindObjectStub {
  return env.BINDS.get(env.BINDS.idFromName(traceId));
}

function budgetStub(env: EdgeEnv): BudgetObjectStub {
  return env.BUDGET.get(env.BUDGET.idFromName(BUDGET_OBJECT_NAME));
}

/** One API key's registration quota: a budget object of its own, so no single object takes every POST. */
function quotaStub(env: EdgeEnv, key: string): BudgetObjectStub {
  return env.BUDGET.get(env.BUDGET.idFromName(`quota:${key}`));
}

function simulatorStub(env: EdgeEnv): TopSimulatorObjectStub {
  return env.TOP_SIMULATOR.get(env.TOP_SIMULATOR.idFromName(SIMULATOR_OBJECT_NAME));
}

/** Responses of a stub have immutable headers; the app's middleware (CORS, referrer-policy) sets some. */
function mutable(response: Response): Response {
  return new Response(response.body, response);
}

// ---- configuration and logging ------------------------------------------------

const configs = new WeakMap<object, Config>();

/**
 * Wrangler vars and secrets are the string-valued entries of `env`; bindings are not.
 * Every Worker is held to the production rules (SPEC §5): it cannot tell `wrangler dev`
 * from a deployment, so the simulator runs only with SIMULATOR=on (`npm run dev:edge`).
 */
function configOf(env: EdgeEnv): Config {
  let config = configs.get(env);
  if (!config) {
    const vars: Record<string, string> = {};
    for (const [name, value] of Object.entries(env)) if (typeof value === "string") vars[name] = value;
    config = parseConfig(vars, { production: true });
    configs.set(env, config);
  }
  return config;
}

function httpConfigOf(config: Config): HttpConfig {
  return {
    heartbeatMs: config.heartbeatMs,
    sseRetryMs: Math.max(1000, config.pollIntervalMs),
    maxStreams: config.maxStreams,
  };
}

function accessOf(config: Config): AccessConfig {
  return {
    apiKeys: config.apiKeys,
    watchTokenSecret: config.watchTokenSecret,
    tokenGraceMs: config.resultTtlMs,
    corsOrigins: config.corsOrigins,
    registrationsPerMinute: config.registrationsPerMinute,
    callbackOrigins: config.webhooks?.allowedOrigins ?? [],
  };
}

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: 99 };

/** An error on a console line: its name and message. */
const errorFields = (err: Error) => ({ name: err.name, message: err.message });

/** JSON lines on the console (Workers Logs), censored as the Node logger's are, without pino. */
function createConsoleLogger(level: string): Logger {
  const threshold = LEVELS[level] ?? LEVELS.info!;
  const write = (name: string, obj: object, msg?: string) => {
    if ((LEVELS[name] ?? 0) < threshold) return;
    const line = JSON.stringify({
      level: name,
      service: "bindwatch",
      ...(censorSecrets(obj, errorFields) as object),
      msg,
    });
    if (name === "error") console.error(line);
    else if (name === "warn") console.warn(line);
    else console.log(line);
  };
  return {
    debug: (obj, msg) => write("debug", obj, msg),
    info: (obj, msg) => write("info", obj, msg),
    warn: (obj, msg) => write("warn", obj, msg),
    error: (obj, msg) => write("error", obj, msg),
  };
}

const reportedConfigErrors = new WeakSet<object>();

/**
 * A Worker whose configuration is refused (a bad value, no TOP credentials without
 * SIMULATOR=on, no API_KEYS without ALLOW_OPEN_ACCESS=true) serves nothing and polls
 * nothing: every request answers 503 `misconfigured` naming the variables, `/healthz`
 * included, so the deployment cannot be mistaken for a working one.
 */
function misconfiguredResponse(request: Request, env: EdgeEnv, err: ConfigError): Response {
  if (!reportedConfigErrors.has(env)) {
    reportedConfigErrors.add(env);
    console.error(
      JSON.stringify({
        level: "error",
        service: "bindwatch",
        variables: err.variables,
        msg: `misconfigured: ${err.message}`,
      }),
    );
  }
  const error = { code: "misconfigured", message: `bindwatch is misconfigured: ${err.message}`, field: err.variable };
  const body = new URL(request.url).pathname === "/healthz" ? { status: "misconfigured", error } : { error };
  return Response.json(body, { status: 503, headers: { "cache-control": "no-store" } });
}

// ---- the TOP client --------------------------------------------------------------

function createEdgeTopClient(env: EdgeEnv, config: Config, logger: Logger): CheckbindClient {
  const options = {
    timeoutMs: config.top.timeoutMs,
    signMethod: config.top.signMethod,
    terminalRetCodes: config.terminalRetCodes,
    ...(config.top.session === undefined ? {} : { session: config.top.session }),
  };
  if (!config.simulator) {
    return createTopClient({
      ...options,
      gatewayUrl: config.top.gatewayUrl,
      appKey: config.top.appKey ?? "",
      appSecret: config.top.appSecret ?? "",
    });
  }
  // Simulator mode (SPEC §6): the same client, signing and parsing, with its fetch
  // going to the simulator's object instead of the network.
  let client: Promise<CheckbindClient> | null = null;
  const connect = async (): Promise<CheckbindClient> => {
    const { appKey, appSecret } = await simulatorStub(env).credentials();
    return createTopClient({
      ...options,
      gatewayUrl: SIMULATOR_GATEWAY_URL,
      appKey,
      appSecret,
      fetch: (input, init) => simulatorStub(env).fetch(new Request(input, init)),
    });
  };
  return {
    async checkbind(reg, signal): Promise<CheckbindOutcome> {
      try {
        client ??= connect();
        return await (await client).checkbind(reg, signal);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        client = null;
        logger.warn({ err }, "simulator unreachable");
        return { kind: "transient", message: "the TOP simulator is unreachable", requestId: "" };
      }
    },
  };
}

// ---- the Worker --------------------------------------------------------------------

/**
 * The Worker's view of the service: registration goes to the trace's object over
 * RPC. Every other route that touches a trace is forwarded to that object before
 * the shared routes see it, so the remaining members are never reached here.
 */
function createFrontService(env: EdgeEnv): BindService {
  const elsewhere = async (): Promise<never> => {
    throw new Error("served by the trace's Durable Object");
  };
  return {
    instanceId: "edge-worker",
    webhooks: null,
    register: (reg: BindRegistration, quota?: RegistrationQuota) => bindStub(env, reg.trace_id).register(reg, quota),
    resume: elsewhere,
    getState: elsewhere,
    attach: elsewhere,
    waitForChange: elsewhere,
    cancel: elsewhere,
    stats: () => ({ hubs: 0, watchers: 0, drivers: 0, leases: 0, waitingForBudget: 0 }),
    shutdown: async () => {},
  };
}

/** A file of the build's dist/assets/, as Node reads it from disk: `client.js` or `demo.html`. */
async function loadAsset(env: EdgeEnv, name: "client.js" | "demo.html"): Promise<string | undefined> {
  const response = await env.ASSETS?.fetch(new Request(`http://assets.internal/${name}`));
  return response?.ok ? response.text() : undefined;
}

interface WorkerAssets {
  readonly clientScript: string | undefined;
  /** Simulator mode only: the demo page, with the sandbox credentials it shows. */
  readonly demo: { readonly page: string | undefined; readonly sandbox: SandboxCredentials } | undefined;
}

async function loadWorkerAssets(env: EdgeEnv, config: Config): Promise<WorkerAssets> {
  const [clientScript, demo] = await Promise.all([
    loadAsset(env, "client.js"),
    config.simulator
      ? Promise.all([loadAsset(env, "demo.html"), simulatorStub(env).credentials()]).then(([page, sandbox]) => ({
          page,
          sandbox,
        }))
      : undefined,
  ]);
  return { clientScript, demo };
}

function createWorkerApp(env: EdgeEnv, config: Config, { clientScript, demo }: WorkerAssets): Hono {
  const logger = createConsoleLogger(config.logLevel);
  if (config.apiKeys.length === 0) logger.warn({}, "API_KEYS is unset: anyone can register and cancel binds");
  if (!config.watchTokenSecret)
    logger.warn({}, "WATCH_TOKEN_SECRET is unset: anyone who knows a trace_id can watch it");
  if (clientScript === undefined)
    logger.warn({}, "browser client not built (npm run build): /v1/client.js is not served");
  if (demo && demo.page === undefined) logger.warn({}, "demo page not built (npm run build): / is not served");
  if (demo) {
    // SPEC §6 wants these shown; they are the simulator's, never TOP's (keys not in the redaction list).
    logger.info(
      {
        sandbox_path: SANDBOX_GATEWAY_PATH,
        sandbox_app_key: demo.sandbox.appKey,
        sandbox_app_secret: demo.sandbox.appSecret,
      },
      "TOP sandbox: point any TOP SDK at sandbox_path on this Worker with these credentials (SIMULATOR_APP_KEY, SIMULATOR_APP_SECRET)",
    );
  }
  return createApp({
    service: createFrontService(env),
    streams: createStreamRegistry(),
    config: httpConfigOf(config),
    logger,
    mode: config.mode,
    access: accessOf(config),
    ...(clientScript === undefined ? {} : { clientScript }),
    // Fetched per request, not held: 3.5 MB that only /docs visitors need.
    referenceScript: async () => {
      const response = await env.ASSETS?.fetch(new Request("http://assets.internal/scalar.js"));
      return response?.ok ? response : undefined;
    },
    extend: (app) => {
      // Everything about one trace happens in its object: streams, long-polls, cancel.
      // An invalid trace_id falls through to the shared routes, which answer 400.
      const forward = async (c: Context, next: Next) => {
        const traceId = c.req.param("trace_id") ?? "";
        if (!isValidTraceId(traceId)) return next();
        return mutable(await bindStub(env, traceId).fetch(c.req.raw));
      };
      app.all("/v1/binds/:trace_id/events", forward);
      app.all("/v1/binds/:trace_id", forward);
      if (demo) {
        const page = demo.page && renderDemoPage(demo.page, { title: "bindwatch demo (edge)", sandbox: demo.sandbox });
        if (page) app.get("/", (c) => c.html(page));
        app.get("/favicon.ico", (c) => c.body(null, 204));
        app.all("/sim/*", async (c) => mutable(await simulatorStub(env).fetch(c.req.raw)));
      }
    },
  });
}

const workerApps = new WeakMap<object, Hono>();

export default {
  async fetch(request: Request, env: EdgeEnv, ctx: unknown): Promise<Response> {
    let app = workerApps.get(env);
    if (!app) {
      let config: Config;
      try {
        config = configOf(env);
      } catch (err) {
        if (err instanceof ConfigError) return misconfiguredResponse(request, env, err);
        throw err;
      }
      app = createWorkerApp(env, config, await loadWorkerAssets(env, config));
      workerApps.set(env, app);
    }
    return app.fetch(request, env, ctx as never);
  },
};

// ---- one object per trace ---------------------------------------------------------

/** Storage key of the trace this object serves (set by the first registration). */
const TRACE_KEY = "object:trace-id";

interface TraceRuntime {
  readonly config: Config;
  readonly coordinator: DurableObjectCoordinator;
  readonly service: BindService;
  readonly app: Hono;
  /** How often the alarm checks on polling while the trace is wanted. */
  readonly watchdogMs: number;
}

/**
 * The Durable Object of one trace_id: the single-flight poller and the fan-out hub
 * of its trace. Every watcher of the trace is connected here, so single flight
 * is a matter of one object; the poll driver runs on timers while the object is
 * in memory, and the alarm restarts it when the object was evicted meanwhile.
 */
export class BindObject extends DurableObject<EdgeEnv, DurableObjectStateApi> implements BindObjectStub {
  #runtime: TraceRuntime | null = null;

  private runtime(): TraceRuntime {
    if (this.#runtime) return this.#runtime;
    const config = configOf(this.env);
    const logger = createConsoleLogger(config.logLevel);
    const env = this.env;
    const coordinator = createDurableObjectCoordinator({
      storage: this.ctx.storage,
      // Resolved per call: a stub belongs to the request that made it.
      budget: {
        takeCallPermit: () => budgetStub(env).takeCallPermit(),
        banUpstream: (ms) => budgetStub(env).banUpstream(ms),
        takeRegistration: (key, perMinute) => quotaStub(env, key).takeRegistration(key, perMinute),
        refundRegistration: (key, perMinute) => quotaStub(env, key).refundRegistration(key, perMinute),
      },
      retentionMs: config.bindTimeoutMs + config.resultTtlMs,
      resultTtlMs: config.resultTtlMs,
      // A retry of a webhook is the alarm's to keep, should the object be evicted meanwhile.
      onDeliveriesScheduled: () => void this.planAlarm().catch(() => undefined),
    });
    const hooks = config.webhooks;
    const service = createBindService({
      coordinator,
      client: createEdgeTopClient(env, config, logger),
      config,
      logger,
      instanceId: this.ctx.id.toString(),
      // Stored, so the alarm can resume the poll of an object evicted while it was wanted.
      onWanted: (traceId, untilMs) =>
        void coordinator
          .recordInterest(traceId, untilMs)
          .catch((err: unknown) => logger.warn({ err, trace_id: traceId }, "could not record interest")),
      // A final state needs no watchdog any more: the alarm moves to the end of the retention.
      observer: { onFinished: () => void this.planAlarm().catch(() => undefined) },
      ...(hooks ? { webhooks: webhookDeps(hooks, config.pollIntervalMs) } : {}),
    });
    const app = createApp({
      service,
      streams: createStreamRegistry(),
      config: httpConfigOf(config),
      logger,
      mode: config.mode,
      // CORS is answered once, by the Worker, for every route.
      access: { ...accessOf(config), corsOrigins: [] },
    });
    // The takeover time of SPEC §4.4: an evicted poller is back within it.
    const watchdogMs = takeoverMs(config.pollIntervalMs);
    this.#runtime = { config, coordinator, service, app, watchdogMs };
    return this.#runtime;
  }

  /** RPC from the Worker: registers the trace here and starts polling it (SPEC §3 POST). */
  async register(reg: BindRegistration, quota?: RegistrationQuota): Promise<RegisterOutcome> {
    const { service } = this.runtime();
    await this.ctx.storage.put(TRACE_KEY, reg.trace_id);
    const result = await service.register(reg, quota);
    await this.planAlarm();
    return result;
  }

  /** The trace's routes of the shared app: SSE, long-poll, DELETE. */
  async fetch(request: Request): Promise<Response> {
    const response = await this.runtime().app.fetch(request);
    // A watcher may have restarted polling: the alarm must watch over it again.
    await this.planAlarm();
    return response;
  }

  /** Keeps polling alive while the trace is wanted, applies the deadline, forgets the trace after its retention. */
  async alarm(): Promise<void> {
    const traceId = await this.ctx.storage.get<string>(TRACE_KEY);
    if (traceId === undefined) {
      await this.ctx.storage.deleteAll();
      return;
    }
    // A deployment whose configuration is refused polls nothing; the Worker says why.
    try {
      configOf(this.env);
    } catch (err) {
      if (err instanceof ConfigError) return;
      throw err;
    }
    const { coordinator, service } = this.runtime();
    const schedule = await coordinator.inspect(traceId);
    if (schedule && !schedule.state.final) {
      await service.getState(traceId); // → expired once past the deadline
      if (schedule.interestUntilMs > Date.now()) await service.resume(traceId, schedule.interestUntilMs);
    }
    // The trace's webhooks: an attempt or a retry due, or a bind with destinations to poll to its end.
    const look = await coordinator.nextLook(traceId);
    if (look !== null && look <= Date.now()) await service.webhooks?.look(traceId);
    await this.planAlarm();
  }

  /** Numbers for tests and operators: watchers attached here and whether a driver runs. */
  stats(): ReturnType<BindService["stats"]> {
    return this.runtime().service.stats();
  }

  /**
   * One alarm per object, re-armed on every visit: every `watchdogMs` while someone
   * wants the trace polled; otherwise at the deadline (to expire it) and at the end
   * of its retention, when everything stored is deleted.
   */
  private async planAlarm(): Promise<void> {
    const traceId = await this.ctx.storage.get<string>(TRACE_KEY);
    if (traceId === undefined) return;
    const { coordinator, watchdogMs } = this.runtime();
    const schedule = await coordinator.inspect(traceId);
    const look = await coordinator.nextLook(traceId);
    const now = Date.now();
    if (!schedule) {
      // Webhooks left outlive the trace's retention (WEBHOOK_MAX_AGE_MS).
      if (look !== null) {
        await this.ctx.storage.setAlarm(Math.max(look, now + 1));
        return;
      }
      await this.ctx.storage.deleteAlarm();
      await this.ctx.storage.deleteAll();
      return;
    }
    let at: number;
    if (schedule.state.final) at = schedule.expiresAtMs;
    else if (schedule.interestUntilMs > now) at = now + watchdogMs;
    else at = Math.min(deadlineOf(schedule.state), schedule.expiresAtMs);
    if (look !== null) at = Math.min(at, look);
    await this.ctx.storage.setAlarm(Math.max(at, now + 1));
  }
}

// ---- the deployment-wide budget ------------------------------------------------------

/**
 * The one object (`idFromName("global")`) that holds UPSTREAM_QPS and TOP bans for every
 * trace; objects of the same class named `quota:<key>` hold one API key's registration quota.
 */
export class BudgetObject extends DurableObject<EdgeEnv, DurableObjectStateApi> implements BudgetObjectStub {
  #budget: CallBudget | null = null;

  private budget(): CallBudget {
    this.#budget ??= createDurableCallBudget({
      storage: this.ctx.storage,
      upstreamQps: configOf(this.env).upstreamQps,
    });
    return this.#budget;
  }

  takeCallPermit(): Promise<Permit> {
    return this.budget().takeCallPermit();
  }

  banUpstream(ms: number): Promise<void> {
    return this.budget().banUpstream(ms);
  }

  takeRegistration(key: string, perMinute: number): Promise<QuotaTake> {
    return this.budget().takeRegistration(key, perMinute);
  }

  refundRegistration(key: string, perMinute: number): Promise<void> {
    return this.budget().refundRegistration(key, perMinute);
  }
}

// ---- simulator mode ---------------------------------------------------------------------

const SIMULATOR_CREDENTIALS_KEY = "simulator:credentials";

/**
 * Simulator mode's TOP gateway (SPEC §6), one object for the deployment: the gateway
 * at /router/rest for the TOP client, the control API and the same gateway as a TOP
 * sandbox for other clients at /sim/* (forwarded by the Worker). Scripts and call logs
 * live in memory, like the Node simulator's; credentials that SIMULATOR_APP_KEY /
 * SIMULATOR_APP_SECRET leave unset are chosen once and stored, so that every trace's
 * client and every isolate's demo page use the same ones.
 */
export class TopSimulatorObject
  extends DurableObject<EdgeEnv, DurableObjectStateApi>
  implements TopSimulatorObjectStub
{
  #ready: Promise<{ app: Hono; credentials: SandboxCredentials }> | null = null;

  private ready() {
    this.#ready ??= this.ctx.blockConcurrencyWhile(async () => {
      const configured = configOf(this.env).sandbox;
      let stored = await this.ctx.storage.get<SandboxCredentials>(SIMULATOR_CREDENTIALS_KEY);
      if (stored === undefined) {
        stored = createSandboxCredentials({ appKey: undefined, appSecret: undefined });
        await this.ctx.storage.put(SIMULATOR_CREDENTIALS_KEY, stored);
      }
      const credentials = {
        appKey: configured.appKey ?? stored.appKey,
        appSecret: configured.appSecret ?? stored.appSecret,
      };
      const sim = createTopSimulator(credentials);
      const app = new Hono();
      app.route("/sim", createSimulatorControl(sim));
      app.all("*", (c) => sim.fetch(c.req.raw));
      return { app, credentials };
    });
    return this.#ready;
  }

  async credentials(): Promise<SandboxCredentials> {
    return (await this.ready()).credentials;
  }

  async fetch(request: Request): Promise<Response> {
    return (await this.ready()).app.fetch(request);
  }
}
