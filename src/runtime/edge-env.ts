// What the Worker (worker.ts) and its Durable Objects (edge-objects.ts) share: the
// platform's interfaces as far as bindwatch uses them, the Worker's env and the stubs of
// its objects, the configuration read from the env, the console logger and the TOP
// client, which in simulator mode talks to the simulator's object.
import type { BindRegistration } from "../domain/bind.js";
import { censorSecrets } from "../domain/log-censor.js";
import type { Logger } from "../domain/logger.js";
import type { CheckbindOutcome } from "../domain/outcome.js";
import type { AccessConfig, HttpConfig } from "../http/app.js";
import type { SandboxCredentials } from "../sim/sandbox.js";
import { type CheckbindClient, createTopClient } from "../top/client.js";
import type { RegisterOutcome, RegistrationQuota } from "../watch/bind-service.js";
import type { CallBudget, DurableStorage } from "../watch/durable-object-coordinator.js";
import { type Config, parseConfig } from "./config.js";

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

export function bindStub(env: EdgeEnv, traceId: string): BindObjectStub {
  return env.BINDS.get(env.BINDS.idFromName(traceId));
}

export function budgetStub(env: EdgeEnv): BudgetObjectStub {
  return env.BUDGET.get(env.BUDGET.idFromName(BUDGET_OBJECT_NAME));
}

/** One API key's registration quota: a budget object of its own, so no single object takes every POST. */
export function quotaStub(env: EdgeEnv, key: string): BudgetObjectStub {
  return env.BUDGET.get(env.BUDGET.idFromName(`quota:${key}`));
}

export function simulatorStub(env: EdgeEnv): TopSimulatorObjectStub {
  return env.TOP_SIMULATOR.get(env.TOP_SIMULATOR.idFromName(SIMULATOR_OBJECT_NAME));
}

/** Responses of a stub have immutable headers; the app's middleware (CORS, referrer-policy) sets some. */
export function mutable(response: Response): Response {
  return new Response(response.body, response);
}

// ---- configuration and logging ------------------------------------------------

const configs = new WeakMap<object, Config>();

/**
 * Wrangler vars and secrets are the string-valued entries of `env`; bindings are not.
 * Every Worker is held to the production rules (SPEC §5): it cannot tell `wrangler dev`
 * from a deployment, so the simulator runs only with SIMULATOR=on (`npm run dev:edge`).
 */
export function configOf(env: EdgeEnv): Config {
  let config = configs.get(env);
  if (!config) {
    const vars: Record<string, string> = {};
    for (const [name, value] of Object.entries(env)) if (typeof value === "string") vars[name] = value;
    config = parseConfig(vars, { production: true });
    configs.set(env, config);
  }
  return config;
}

export function httpConfigOf(config: Config): HttpConfig {
  return {
    heartbeatMs: config.heartbeatMs,
    sseRetryMs: Math.max(1000, config.pollIntervalMs),
    maxStreams: config.maxStreams,
  };
}

export function accessOf(config: Config): AccessConfig {
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
export function createConsoleLogger(level: string): Logger {
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

// ---- the TOP client --------------------------------------------------------------

export function createEdgeTopClient(env: EdgeEnv, config: Config, logger: Logger): CheckbindClient {
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
