import { randomUUID } from "node:crypto";
import type { BindRegistration, BindState } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { silentLogger } from "../domain/logger.js";
import { deadlineOf, finishState } from "../domain/state.js";
import { newDeliveryRecord, destinationsOf as webhookDestinationsOf } from "../domain/webhook.js";
import type { CheckbindClient } from "../top/client.js";
import { webhookBodyOf, webhookIdOf } from "../webhook/message.js";
import type { WebhookSender } from "../webhook/sender.js";
import type { Coordinator, RegisterResult, UpdateOptions } from "./coordinator.js";
import { createHubRegistry, type Hub, type WatcherEntry, type WatchSink } from "./hub.js";
import { createPermitQueue } from "./permit-queue.js";
import { type PollObserver, pollTimings, startDriver } from "./poll-driver.js";
import { createWebhookDispatcher, type WebhookObserver, type WebhookTimings } from "./webhook-dispatcher.js";

export type { WatchSink } from "./hub.js";

export interface WatchConfig {
  readonly pollIntervalMs: number;
  readonly pollLingerMs: number;
  readonly bindTimeoutMs: number;
  readonly resultTtlMs: number;
}

/** Hooks for metrics; every one optional. */
export interface ServiceObserver extends PollObserver, WebhookObserver {
  onFinished?(status: BindState["status"]): void;
}

/** Webhooks (SPEC §3): where finals go, how they are sent and retried. */
export interface WebhookDeps {
  /** WEBHOOK_URL: where every bind's final goes; a bind's own `callback_url` is added. */
  readonly webhookUrl: string | undefined;
  readonly send: WebhookSender;
  readonly timings: WebhookTimings;
}

export interface BindServiceDeps {
  readonly coordinator: Coordinator;
  readonly client: CheckbindClient;
  readonly config: WatchConfig;
  readonly logger?: Logger;
  readonly observer?: ServiceObserver;
  readonly instanceId?: string;
  readonly random?: () => number;
  /**
   * Told until when (this instance's clock) the trace is wanted polled here, whenever that
   * grows: the edge stores it, so an evicted object's alarm can resume the poll.
   */
  readonly onWanted?: (traceId: string, untilMs: number) => void;
  /** Webhooks to the backend; none when unset. */
  readonly webhooks?: WebhookDeps;
}

/** A registration quota (REGISTRATIONS_PER_MINUTE) to count a new registration against. */
export interface RegistrationQuota {
  /** Whose quota: a digest of the API key, never the key itself. */
  readonly key: string;
  readonly perMinute: number;
}

export type RegisterOutcome = RegisterResult | { readonly kind: "rate_limited"; readonly retryAfterMs: number };

export interface Attachment {
  /** The state when the watcher attached. */
  readonly state: BindState;
  /** Detaches the watcher; safe to call more than once. */
  detach(): void;
}

export interface ServiceStats {
  readonly hubs: number;
  readonly watchers: number;
  readonly drivers: number;
  readonly leases: number;
  /** Polls of this instance waiting for a call permit of UPSTREAM_QPS (demand past the budget). */
  readonly waitingForBudget: number;
}

/** A read is expired through the store (which compares its own clock) when it looks due within this much. */
const EXPIRY_SLACK_MS = 2_000;

/**
 * The per-instance side of bindwatch: registers binds, attaches watchers to a per-trace
 * hub (src/watch/hub.ts: one coordinator subscription per trace and instance), and runs
 * the poll driver (src/watch/poll-driver.ts) of each trace wanted here. Which instance
 * actually calls TOP is decided by the coordinator's lease, so the same code is single
 * flight alone in memory and across a Redis cluster.
 *
 * @example
 * const service = createBindService({ coordinator, client, config });
 * await service.register(reg);
 * const attachment = await service.attach(reg.trace_id, 0, { send: (state, frame) => stream.write(frame) });
 */
export function createBindService(deps: BindServiceDeps) {
  const { coordinator, config } = deps;
  const logger = deps.logger ?? silentLogger;
  const instanceId = deps.instanceId ?? randomUUID();
  const timings = pollTimings(config.pollIntervalMs);
  // A watcher's presence is told to onWanted for this long, renewed while it stays.
  const watchedForMs = timings.leaseMs;
  let stopping = false;

  const registry = createHubRegistry({
    coordinator,
    logger,
    onFinal(hub) {
      hub.driver?.stop(new Error("final"));
      hub.lingerUntil = 0;
      if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
      hub.lingerTimer = null;
      registry.collect(hub);
    },
  });
  const permits = createPermitQueue(coordinator, logger);

  /** A bind with webhook destinations is wanted until it is final (SPEC §3): its backend learns how it ended. */
  function hasLocalInterest(hub: Hub): boolean {
    return hub.watchers.size > 0 || hub.lingerUntil > Date.now() || (hub.webhook && !hub.last?.final);
  }

  const webhooks = deps.webhooks;
  const destinationsOf = (reg: BindRegistration | null): string[] =>
    webhooks && reg ? webhookDestinationsOf(reg, webhooks.webhookUrl) : [];
  /** The deliveries of a final of `reg`, to be written with it; `undefined` without destinations. */
  function deliveriesFor(reg: BindRegistration | null): UpdateOptions["deliveries"] {
    const destinations = destinationsOf(reg);
    if (destinations.length === 0) return undefined;
    return (final) =>
      newDeliveryRecord({
        id: webhookIdOf(final),
        state: final,
        body: webhookBodyOf(final),
        destinations,
        nowMs: Date.now(),
      });
  }

  const dispatcher = webhooks
    ? createWebhookDispatcher({
        store: coordinator.deliveries,
        send: webhooks.send,
        timings: webhooks.timings,
        logger,
        ...(deps.observer ? { observer: deps.observer } : {}),
        adopt: async (traceId) => {
          const hub = registry.hubFor(traceId);
          hub.webhook = true;
          const state = await subscribeAndRead(hub);
          if (!state || state.final) {
            registry.collect(hub);
            return;
          }
          registry.offer(hub, state);
          ensureDriver(hub);
        },
      })
    : null;

  /** A final state was written by this instance: counted, and its webhooks sent. */
  function finalWritten(traceId: string, state: BindState): void {
    deps.observer?.onFinished?.(state.status);
    if (dispatcher && destinationsOf(registry.get(traceId)?.registration ?? null).length > 0) {
      dispatcher.kick(traceId);
    }
  }

  const driverEnv = {
    coordinator,
    client: deps.client,
    logger,
    observer: deps.observer,
    timings,
    random: deps.random ?? Math.random,
    permits,
    hubs: registry,
    instanceId,
    wanted: hasLocalInterest,
    deliveriesOf: (hub: Hub) => deliveriesFor(hub.registration),
    finalWritten: (hub: Hub, state: BindState) => finalWritten(hub.traceId, state),
    stopping: () => stopping,
  };

  function ensureDriver(hub: Hub): void {
    if (hub.driver || stopping || hub.last?.final) return;
    const driver = startDriver(hub, driverEnv);
    hub.driver = driver;
    void driver.done.finally(() => {
      if (hub.driver === driver) hub.driver = null;
      // A driver that stopped for a passing reason (lost lease, store outage) comes back while the trace is wanted here.
      if (!stopping && !hub.last?.final && hasLocalInterest(hub) && !hub.restartTimer) {
        hub.restartTimer = setTimeout(() => {
          hub.restartTimer = null;
          if (hasLocalInterest(hub)) ensureDriver(hub);
          else registry.collect(hub);
        }, timings.retryMs);
      }
      registry.collect(hub);
    });
  }

  function tellWanted(traceId: string, untilMs: number): void {
    deps.onWanted?.(traceId, untilMs);
  }

  function startLinger(hub: Hub): void {
    const until = Date.now() + config.pollLingerMs;
    armLinger(hub, until);
    tellWanted(hub.traceId, until);
  }

  /**
   * A watcher attached to a hub: the hub's entry and the attachment handed back, in one
   * object (an instance holds one per open stream).
   */
  class Watch implements WatcherEntry, Attachment {
    #attached = true;

    constructor(
      readonly hub: Hub,
      readonly sink: WatchSink,
      public lastSent: number,
      readonly state: BindState,
    ) {}

    detach(): void {
      if (!this.#attached) return;
      this.#attached = false;
      const hub = this.hub;
      hub.watchers.delete(this);
      if (hub.watchers.size > 0) return;
      if (hub.interestTimer) clearInterval(hub.interestTimer);
      hub.interestTimer = null;
      if (hub.last?.final) registry.collect(hub);
      else startLinger(hub);
    }
  }

  /** Keeps the hub (and its driver) wanted here until `untilMs`. */
  function armLinger(hub: Hub, untilMs: number): void {
    hub.lingerUntil = untilMs;
    if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
    hub.lingerTimer = setTimeout(
      () => {
        hub.lingerTimer = null;
        registry.collect(hub);
      },
      untilMs - Date.now() + 1,
    );
  }

  /** Subscribes the hub, then reads the stored state (deadline applied): a change in between is not missed. */
  async function subscribeAndRead(hub: Hub): Promise<BindState | null> {
    try {
      await registry.subscribe(hub);
      const stored = await coordinator.getState(hub.traceId);
      return stored ? await expireIfDue(hub.traceId, stored) : null;
    } catch (err) {
      registry.collect(hub);
      throw err;
    }
  }

  /**
   * Applies the deadline to a stored state that nobody moved past it (SPEC §2: → expired).
   * Whether it is due is the store's to say, on its clock; this instance only asks when
   * its estimate of that clock says it may be.
   */
  async function expireIfDue(traceId: string, state: BindState): Promise<BindState> {
    if (state.final || coordinator.now() < deadlineOf(state) - EXPIRY_SLACK_MS) return state;
    const reg = registry.get(traceId)?.registration ?? (webhooks ? await coordinator.getRegistration(traceId) : null);
    const deliveries = deliveriesFor(reg);
    const next = await coordinator.updateState(
      traceId,
      (s) => (s.final ? s : finishState(s, "expired", coordinator.now())),
      { notBeforeMs: deadlineOf(state), ...(deliveries ? { deliveries } : {}) },
    );
    if (next?.final && next.version !== state.version) {
      deps.observer?.onFinished?.(next.status);
      if (deliveries) dispatcher?.kick(traceId);
    }
    return next ?? state;
  }

  return {
    instanceId,
    /** The webhook dispatcher, when webhooks are configured: the runtime starts and stops it. */
    webhooks: dispatcher,

    /**
     * Registers a bind attempt (idempotent) and starts polling it for POLL_LINGER_MS.
     * With a quota, only a new registration counts: an identical repeat (the idempotent
     * 200) and a conflict do not, and a take lost to a concurrent identical POST is given back.
     */
    async register(reg: BindRegistration, quota?: RegistrationQuota): Promise<RegisterOutcome> {
      let taken = false;
      if (quota && !(await coordinator.getRegistration(reg.trace_id))) {
        const take = await coordinator.takeRegistration(quota.key, quota.perMinute);
        if (take.kind === "wait") return { kind: "rate_limited", retryAfterMs: take.retryAfterMs };
        taken = true;
      }
      const result = await coordinator.register(reg, config.bindTimeoutMs);
      if (quota && taken && result.kind !== "created") await coordinator.refundRegistration(quota.key, quota.perMinute);
      if (result.kind === "conflict") return result;
      const hub = registry.hubFor(reg.trace_id);
      hub.registration = reg;
      // Listed before it is polled: if this instance dies, another one finds it and polls it to its end.
      if (dispatcher && destinationsOf(reg).length > 0) {
        hub.webhook = true;
        await dispatcher.track(reg.trace_id);
      }
      // Not subscribed here: the poll subscribes when it starts (src/watch/poll-driver.ts), and
      // past UPSTREAM_QPS most registrations wait for that with no channel of their own.
      let state = result.state;
      try {
        state = await expireIfDue(reg.trace_id, result.state);
        registry.offer(hub, state);
      } catch (err) {
        registry.collect(hub);
        throw err;
      }
      if (!state.final) {
        startLinger(hub);
        ensureDriver(hub);
      } else {
        registry.collect(hub);
      }
      return { kind: result.kind, state };
    },

    /**
     * Polls a trace again that this instance lost track of while stored interest still
     * wants it until `untilMs` — e.g. a Durable Object evicted during the linger and
     * woken by its alarm. A no-op when a driver already runs or the trace is final.
     */
    async resume(traceId: string, untilMs: number): Promise<void> {
      const hub = registry.hubFor(traceId);
      const state = await subscribeAndRead(hub);
      if (state) registry.offer(hub, state);
      if (!state || hub.last?.final || (untilMs <= Date.now() && hub.watchers.size === 0)) {
        registry.collect(hub);
        return;
      }
      if (untilMs > hub.lingerUntil) armLinger(hub, untilMs);
      ensureDriver(hub);
    },

    /** The stored state, with the deadline applied; `null` when unknown or forgotten. */
    async getState(traceId: string): Promise<BindState | null> {
      const state = await coordinator.getState(traceId);
      return state ? expireIfDue(traceId, state) : null;
    },

    /**
     * Attaches a watcher: `sink` gets every state with a version above `afterVersion`,
     * starting with the current one. Resolves to `null` for an unknown trace. A watcher
     * of a final trace gets the final state and is not kept.
     */
    async attach(traceId: string, afterVersion: number, sink: WatchSink): Promise<Attachment | null> {
      const hub = registry.hubFor(traceId);
      const watcher: WatcherEntry = { sink, lastSent: afterVersion };
      const state = await subscribeAndRead(hub);
      if (!state) {
        registry.collect(hub);
        return null;
      }
      registry.offer(hub, state);
      const current = hub.last ?? state;
      if (current.final) {
        registry.deliver(hub, watcher);
        registry.collect(hub);
        return { state: current, detach() {} };
      }
      const watch = new Watch(hub, sink, afterVersion, current);
      hub.watchers.add(watch);
      registry.deliver(hub, watch);
      if (hub.watchers.size === 1) {
        if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
        hub.lingerTimer = null;
        if (deps.onWanted) {
          tellWanted(traceId, Date.now() + watchedForMs);
          if (hub.interestTimer) clearInterval(hub.interestTimer);
          hub.interestTimer = setInterval(
            () => tellWanted(traceId, Date.now() + watchedForMs),
            Math.floor(watchedForMs / 3),
          );
        }
      }
      ensureDriver(hub);
      return watch;
    },

    /**
     * Long-poll: the state once its version is above `afterVersion` or it is final,
     * else after `waitMs` whatever it is. `null` for an unknown trace.
     */
    async waitForChange(
      traceId: string,
      afterVersion: number,
      waitMs: number,
      signal?: AbortSignal,
    ): Promise<BindState | null> {
      const state = await this.getState(traceId);
      if (!state || state.final || state.version > afterVersion || waitMs <= 0 || signal?.aborted) return state;
      let resolveChange: (s: BindState) => void = () => {};
      const changed = new Promise<BindState>((resolve) => {
        resolveChange = resolve;
      });
      const attachment = await this.attach(traceId, afterVersion, { send: (s) => resolveChange(s) });
      if (!attachment) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      let onAbort: (() => void) | undefined;
      try {
        return await Promise.race([
          changed,
          new Promise<BindState>((resolve) => {
            const settle = () => resolve(registry.get(traceId)?.last ?? attachment.state);
            timer = setTimeout(settle, waitMs);
            onAbort = settle;
            signal?.addEventListener("abort", onAbort, { once: true });
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        attachment.detach();
      }
    },

    /** Cancels a pending bind; watchers get the final `cancelled` event. `null` when unknown. */
    async cancel(traceId: string): Promise<BindState | null> {
      const before = await coordinator.getState(traceId);
      if (!before) return null;
      const reg = registry.get(traceId)?.registration ?? (webhooks ? await coordinator.getRegistration(traceId) : null);
      const deliveries = deliveriesFor(reg);
      const next = await coordinator.updateState(
        traceId,
        (s) => finishState(s, "cancelled", coordinator.now()),
        deliveries ? { deliveries } : {},
      );
      if (next) {
        const hub = registry.get(traceId);
        if (hub) registry.offer(hub, next);
        if (next.final && !before.final) {
          deps.observer?.onFinished?.(next.status);
          if (deliveries) dispatcher?.kick(traceId);
        }
      }
      return next;
    },

    stats(): ServiceStats {
      let watchers = 0;
      let drivers = 0;
      let leases = 0;
      for (const hub of registry.hubs.values()) {
        watchers += hub.watchers.size;
        if (hub.driver) drivers += 1;
        if (hub.driver?.holdsLease()) leases += 1;
      }
      return { hubs: registry.hubs.size, watchers, drivers, leases, waitingForBudget: permits.waiting };
    },

    /** Stops every driver and releases every lease so another instance takes over at once (SPEC §4.6). */
    async shutdown(): Promise<void> {
      stopping = true;
      const done: Promise<void>[] = [];
      for (const hub of registry.hubs.values()) {
        if (hub.lingerTimer) clearTimeout(hub.lingerTimer);
        if (hub.restartTimer) clearTimeout(hub.restartTimer);
        if (hub.interestTimer) clearInterval(hub.interestTimer);
        hub.lingerTimer = hub.restartTimer = hub.interestTimer = null;
        if (hub.driver) {
          hub.driver.stop(new Error("shutdown"));
          done.push(hub.driver.done);
        }
      }
      await Promise.allSettled(done);
      for (const hub of [...registry.hubs.values()]) {
        hub.watchers.clear();
        registry.collect(hub);
      }
    },
  };
}

export type BindService = ReturnType<typeof createBindService>;
