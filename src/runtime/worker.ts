// The edge runtime's entry: the Cloudflare Worker (stateless). It runs the shared Hono
// app, validates POST /v1/binds and hands the registration to the trace's object over
// RPC, and forwards every other /v1/binds/{trace_id} request to that object. Its
// Durable Object classes are in edge-objects.ts (exported from here: wrangler wants
// them from the main module); what both use is in edge-env.ts.
import type { Context, Hono, Next } from "hono";
import type { BindRegistration } from "../domain/bind.js";
import { createApp } from "../http/app.js";
import { createStreamRegistry } from "../http/sse.js";
import { isValidTraceId } from "../http/validation.js";
import { renderDemoPage } from "../sim/demo-page.js";
import { SANDBOX_GATEWAY_PATH, type SandboxCredentials } from "../sim/sandbox.js";
import type { BindService, RegistrationQuota } from "../watch/bind-service.js";
import type { Config } from "./config.js";
import { ConfigError } from "./config-env.js";
import {
  accessOf,
  bindStub,
  configOf,
  createConsoleLogger,
  type EdgeEnv,
  httpConfigOf,
  mutable,
  simulatorStub,
} from "./edge-env.js";

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

export { BindObject, BudgetObject, TopSimulatorObject } from "./edge-objects.js";
