import type { BindRegistration, BindState } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { encodeStateEvent } from "../domain/sse.js";
import type { Coordinator, TraceEvent, Unsubscribe } from "./coordinator.js";

/** Receives each new state of a watched trace with its SSE frame, encoded once for all watchers. */
export interface WatchSink {
  send(state: BindState, frame: Uint8Array): void;
}

export interface WatcherEntry {
  readonly sink: WatchSink;
  lastSent: number;
}

/** The poll driver of a hub, as the hub sees it (src/watch/poll-driver.ts runs it). */
export interface HubDriver {
  /** Stops the driver; its `done` resolves once it let its lease go. */
  stop(reason: Error): void;
  /** The lease holder released the lease: a driver waiting for it tries at once. */
  wake(): void;
  readonly done: Promise<void>;
  /** Whether the driver holds the trace's lease now. */
  holdsLease(): boolean;
}

/**
 * Everything one instance holds for one trace: its watchers and the one coordinator
 * subscription they share, the newest state seen with its encoded frame, why the trace
 * is wanted here (watchers, linger) and the driver that polls it while it is.
 */
export interface Hub {
  readonly traceId: string;
  readonly watchers: Set<WatcherEntry>;
  /** The registration, once known here: re-asserted if the store loses it. */
  registration: BindRegistration | null;
  ready: Promise<void> | null;
  unsubscribe: Unsubscribe | null;
  last: BindState | null;
  /** The SSE frame of `last`, encoded at its first delivery (a trace nobody watches here needs none). */
  frame: Uint8Array | null;
  /** Polled while this instance's clock is before it, with or without watchers (POLL_LINGER_MS). */
  lingerUntil: number;
  lingerTimer: ReturnType<typeof setTimeout> | null;
  interestTimer: ReturnType<typeof setInterval> | null;
  driver: HubDriver | null;
  restartTimer: ReturnType<typeof setTimeout> | null;
  /** When (this instance's clock) the channel last showed that the trace's poller is alive. */
  lastSignAt: number;
  /** The bind has webhook destinations: it is wanted here until it is final. */
  webhook: boolean;
}

const encoder = new TextEncoder();

export interface HubRegistryDeps {
  readonly coordinator: Coordinator;
  readonly logger: Logger;
  /** A final state reached this hub: its driver stops, its linger ends. */
  readonly onFinal: (hub: Hub) => void;
}

/**
 * The hubs of this instance, one per trace something here needs: fan-out of each
 * state to the trace's watchers, once per version, with one encoding for all of them.
 */
export function createHubRegistry(deps: HubRegistryDeps) {
  const { coordinator, logger } = deps;
  const hubs = new Map<string, Hub>();

  function hubFor(traceId: string): Hub {
    let hub = hubs.get(traceId);
    if (!hub) {
      hub = {
        traceId,
        watchers: new Set(),
        registration: null,
        ready: null,
        unsubscribe: null,
        last: null,
        frame: null,
        lingerUntil: 0,
        lingerTimer: null,
        interestTimer: null,
        driver: null,
        restartTimer: null,
        lastSignAt: 0,
        webhook: false,
      };
      hubs.set(traceId, hub);
    }
    return hub;
  }

  function onEvent(hub: Hub, event: TraceEvent): void {
    if (event.kind === "released") {
      hub.driver?.wake();
      return;
    }
    hub.lastSignAt = Date.now();
    if (event.kind === "state") offer(hub, event.state);
  }

  /** Subscribes the hub once; later calls share the same subscription. */
  function subscribe(hub: Hub): Promise<void> {
    hub.ready ??= coordinator
      .subscribe(hub.traceId, (event) => onEvent(hub, event))
      .then((unsubscribe) => {
        if (hubs.get(hub.traceId) !== hub) void unsubscribe();
        else hub.unsubscribe = unsubscribe;
      })
      .catch((err: unknown) => {
        hub.ready = null;
        throw err;
      });
    return hub.ready;
  }

  /** Drops the hub once nothing local needs it: no watcher, no linger, no driver. */
  function collect(hub: Hub): void {
    if (hub.watchers.size > 0 || hub.driver || hub.lingerTimer || hub.restartTimer) return;
    if (hubs.get(hub.traceId) === hub) hubs.delete(hub.traceId);
    if (hub.interestTimer) clearInterval(hub.interestTimer);
    hub.interestTimer = null;
    const unsubscribe = hub.unsubscribe;
    hub.unsubscribe = null;
    if (unsubscribe)
      void unsubscribe().catch((err: unknown) => logger.warn({ err, trace_id: hub.traceId }, "unsubscribe failed"));
  }

  /** Takes a state seen anywhere (own poll, pub/sub, a read) and hands it to watchers once per version. */
  function offer(hub: Hub, state: BindState): void {
    if (hub.last && state.version <= hub.last.version) return;
    hub.last = state;
    hub.frame = null;
    for (const watcher of [...hub.watchers]) deliver(hub, watcher);
    if (state.final) deps.onFinal(hub);
  }

  function deliver(hub: Hub, watcher: WatcherEntry): void {
    const last = hub.last;
    if (!last || last.version <= watcher.lastSent) return;
    watcher.lastSent = last.version;
    try {
      hub.frame ??= encoder.encode(encodeStateEvent(last));
      watcher.sink.send(last, hub.frame);
    } catch (err) {
      logger.warn({ err, trace_id: hub.traceId }, "watcher sink threw");
    }
  }

  return {
    hubs,
    hubFor,
    get: (traceId: string) => hubs.get(traceId),
    subscribe,
    collect,
    offer,
    deliver,
  };
}

export type HubRegistry = ReturnType<typeof createHubRegistry>;
