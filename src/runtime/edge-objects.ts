// The edge's Durable Object classes, exported by the Worker's module (worker.ts):
//
//   BindObject              one per trace_id (idFromName): the single-flight poller and
//                           fan-out hub of its trace. Runs the shared app and BindService
//                           over a Durable Object coordinator on its own storage; holds
//                           the trace's SSE streams and long-polls; its alarm keeps
//                           polling alive without an open request and deletes the
//                           storage after RESULT_TTL_MS.
//   BudgetObject            one for the deployment ("global"): hands out UPSTREAM_QPS
//                           call permits and holds TOP rate-limit bans; one per API key
//                           ("quota:<key>") counts its registrations.
//   TopSimulatorObject      simulator mode only: the TOP gateway simulator and its
//                           control API, reached by the TOP client through its stub.
import { DurableObject } from "cloudflare:workers";
import { Hono } from "hono";
import type { BindRegistration } from "../domain/bind.js";
import { deadlineOf } from "../domain/state.js";
import { createApp } from "../http/app.js";
import { createStreamRegistry } from "../http/sse.js";
import { createSimulatorControl } from "../sim/control.js";
import { createTopSimulator } from "../sim/gateway.js";
import { createSandboxCredentials, type SandboxCredentials } from "../sim/sandbox.js";
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
} from "../watch/durable-object-coordinator.js";
import { takeoverMs } from "../watch/poll-driver.js";
import type { Config } from "./config.js";
import { ConfigError } from "./config-env.js";
import {
  accessOf,
  type BindObjectStub,
  type BudgetObjectStub,
  budgetStub,
  configOf,
  createConsoleLogger,
  createEdgeTopClient,
  type DurableObjectStateApi,
  type EdgeEnv,
  httpConfigOf,
  quotaStub,
  type TopSimulatorObjectStub,
} from "./edge-env.js";
import { webhookDeps } from "./webhooks.js";

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
