import type { BindRegistration, BindState } from "../domain/bind.js";
import { banPace, takePace } from "../domain/pacer.js";
import { createInitialState, registrationText } from "../domain/state.js";
import { type BucketState, returnToken, takeQuota } from "../domain/token-bucket.js";
import type { DeliveryRecord } from "../domain/webhook.js";
import type {
  CallGate,
  Coordinator,
  LeaseTake,
  Permit,
  QuotaTake,
  RegisterResult,
  TraceEvent,
  Unsubscribe,
} from "./coordinator.js";
import { afterAttempt, type DeliveryStore, firstDue } from "./deliveries.js";

/**
 * The part of Durable Object storage (`ctx.storage`) the coordinator uses. Defined
 * here rather than imported from `cloudflare:*` so the coordinator stays in the
 * core and the contract suite can hand it real Durable Object storage in workerd.
 */
export interface DurableStorage {
  get<T = unknown>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(keys: string[]): Promise<number>;
}

/**
 * The deployment-wide call budget and registration quotas; at the edge, Durable Objects
 * of their own (one for the call budget, one per API key's quota), each comparing
 * times on its own clock and answering durations.
 */
export interface CallBudget {
  takeCallPermit(): Promise<Permit>;
  banUpstream(ms: number): Promise<void>;
  takeRegistration(key: string, perMinute: number): Promise<QuotaTake>;
  refundRegistration(key: string, perMinute: number): Promise<void>;
}

export interface DurableObjectCoordinatorOptions {
  /** The storage of the Durable Object that owns the traces (one trace per object in bindwatch). */
  readonly storage: DurableStorage;
  /** Where the budget and the quotas go: shared by every trace's object. */
  readonly budget: CallBudget;
  /** How long a trace is kept after registration (BIND_TIMEOUT_MS + RESULT_TTL_MS). */
  readonly retentionMs: number;
  /** How long a final state is kept at least (RESULT_TTL_MS). */
  readonly resultTtlMs: number;
  /** The object's clock: the one clock of its trace. */
  readonly now?: () => number;
  /** The next look at a trace's webhooks was scheduled: the owning object re-plans its alarm. */
  readonly onDeliveriesScheduled?: () => void;
}

/** What the owning object needs to plan its alarm; see {@link DurableObjectCoordinator.inspect}. */
export interface TraceSchedule {
  readonly state: BindState;
  /** When the trace is forgotten (its storage deleted). */
  readonly expiresAtMs: number;
  /** Until when the trace is wanted polled (0 when it is not). */
  readonly interestUntilMs: number;
}

export interface DurableObjectCoordinator extends Coordinator {
  /** When the trace's webhooks are to be looked at next, or `null` when they are not looked after. */
  nextLook(traceId: string): Promise<number | null>;
  /** Records that the trace is wanted polled until `untilMs` (never shortens it), so the alarm can resume it after eviction. */
  recordInterest(traceId: string, untilMs: number): Promise<void>;
  /** The stored state with its retention and interest, or `null` once forgotten. */
  inspect(traceId: string): Promise<TraceSchedule | null>;
  /** Deletes everything stored for the trace. */
  forget(traceId: string): Promise<void>;
}

interface TraceMeta {
  readonly registration: BindRegistration;
  readonly registrationText: string;
  readonly expiresAtMs: number;
}

/** The traces whose webhooks are looked after, with when to look next: one trace per object in bindwatch. */
const TRACKED_KEY = "deliveries:tracked";

/** One builder for every storage key, as in the Redis coordinator. */
const keys = {
  meta: (traceId: string) => `trace:${traceId}:meta`,
  state: (traceId: string) => `trace:${traceId}:state`,
  interest: (traceId: string) => `trace:${traceId}:interest`,
  lastCall: (traceId: string) => `trace:${traceId}:last-call`,
  /** Kept apart from the trace's other keys: deliveries outlive its retention. */
  deliveries: (traceId: string) => `deliveries:${traceId}`,
  all: (traceId: string) => [keys.meta, keys.state, keys.interest, keys.lastCall].map((k) => k(traceId)),
};

/**
 * The coordinator of one Durable Object. All watchers of a trace are connected to
 * the trace's own object, so fan-out is a local listener set; registration, state,
 * interest and call spacing live in the object's storage and survive eviction.
 * The poll lease is kept in memory: the object is single-threaded and the only
 * poller of its trace, and an evicted object loses its drivers with its memory, so
 * a fresh instance may take the lease at once. The call budget is delegated.
 *
 * Durable Object input gates keep other events out while storage is read, but not
 * the concurrent flows of one event; every operation therefore runs in turn.
 *
 * @example const coordinator = createDurableObjectCoordinator({ storage: ctx.storage, budget, retentionMs: 780_000, resultTtlMs: 600_000 });
 */
export function createDurableObjectCoordinator(opts: DurableObjectCoordinatorOptions): DurableObjectCoordinator {
  const { storage, budget } = opts;
  const now = opts.now ?? Date.now;
  const listeners = new Map<string, Set<(event: TraceEvent) => void>>();
  const leases = new Map<string, { token: string; expiresAtMs: number }>();
  let tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every operation queued before it. */
  function serial<T>(task: () => Promise<T>): Promise<T> {
    const run = tail.then(task, task);
    tail = run.catch(() => {});
    return run;
  }

  function publish(traceId: string, event: TraceEvent): void {
    for (const listener of [...(listeners.get(traceId) ?? [])]) listener(event);
  }

  /** The trace's metadata, or null when unknown; an expired trace is deleted on the way. */
  async function live(traceId: string): Promise<TraceMeta | null> {
    const meta = await storage.get<TraceMeta>(keys.meta(traceId));
    if (!meta) return null;
    if (meta.expiresAtMs <= now()) {
      await storage.delete(keys.all(traceId));
      leases.delete(traceId);
      return null;
    }
    return meta;
  }

  async function interestOf(traceId: string): Promise<Record<string, number>> {
    return (await storage.get<Record<string, number>>(keys.interest(traceId))) ?? {};
  }

  function leaseHeld(traceId: string, token: string): boolean {
    const lease = leases.get(traceId);
    return lease !== undefined && lease.token === token && lease.expiresAtMs > now();
  }

  async function store(reg: BindRegistration, state: BindState, retentionMs: number): Promise<void> {
    const meta: TraceMeta = {
      registration: reg,
      registrationText: registrationText(reg),
      expiresAtMs: now() + retentionMs,
    };
    await storage.delete(keys.all(reg.trace_id));
    await storage.put(keys.meta(reg.trace_id), meta);
    await storage.put(keys.state(reg.trace_id), state);
  }

  const claims = new Map<string, { token: string; expiresAtMs: number }>();
  const trackedOf = async () => (await storage.get<Record<string, number>>(TRACKED_KEY)) ?? {};
  const deliveries: DeliveryStore = {
    track(traceId, atMs) {
      return serial(async () => {
        const tracked = await trackedOf();
        if (tracked[traceId] === undefined) await storage.put(TRACKED_KEY, { ...tracked, [traceId]: atMs });
      });
    },
    due(nowMs, limit) {
      return serial(async () =>
        Object.entries(await trackedOf())
          .filter(([, at]) => at <= nowMs)
          .sort((a, b) => a[1] - b[1])
          .slice(0, limit)
          .map(([id]) => id),
      );
    },
    claim(traceId, nowMs, claimMs) {
      return serial(async () => {
        const list = (await storage.get<DeliveryRecord[]>(keys.deliveries(traceId))) ?? [];
        if (list.length === 0) {
          const meta = await live(traceId);
          const state = meta ? await storage.get<BindState>(keys.state(traceId)) : undefined;
          if (!state || state.final) return { kind: "done" } as const;
          const lease = leases.get(traceId);
          return { kind: "open", polled: lease !== undefined && lease.expiresAtMs > now() } as const;
        }
        const held = claims.get(traceId);
        if (held && held.expiresAtMs > now()) return { kind: "later", atMs: nowMs + held.expiresAtMs - now() } as const;
        const due = firstDue(list, nowMs);
        if (!due) return { kind: "done" } as const;
        if ("atMs" in due) return { kind: "later", atMs: due.atMs } as const;
        const token = crypto.randomUUID();
        claims.set(traceId, { token, expiresAtMs: now() + claimMs });
        return { kind: "deliver", token, record: due.record, destination: due.destination } as const;
      });
    },
    settle(traceId, token, id, destination, result) {
      return serial(async () => {
        if (claims.get(traceId)?.token !== token) return null;
        claims.delete(traceId);
        const list = (await storage.get<DeliveryRecord[]>(keys.deliveries(traceId))) ?? [];
        const { records: left, settled } = afterAttempt(list, id, destination, result);
        if (left.length === 0) await storage.delete([keys.deliveries(traceId)]);
        else await storage.put(keys.deliveries(traceId), left);
        return settled;
      });
    },
    async release(traceId, token) {
      if (claims.get(traceId)?.token === token) claims.delete(traceId);
    },
    pendingRecords() {
      return serial(async () => {
        const found: DeliveryRecord[] = [];
        for (const id of Object.keys(await trackedOf())) {
          found.push(...((await storage.get<DeliveryRecord[]>(keys.deliveries(id))) ?? []));
        }
        return found;
      });
    },
    schedule(traceId, atMs) {
      return serial(async () => {
        const { [traceId]: _dropped, ...rest } = await trackedOf();
        await storage.put(TRACKED_KEY, atMs === null ? rest : { ...rest, [traceId]: atMs });
        opts.onDeliveriesScheduled?.();
      });
    },
    tracked() {
      return serial(async () => Object.keys(await trackedOf()).length);
    },
  };

  return {
    now,
    deliveries,

    register(reg, timeoutMs): Promise<RegisterResult> {
      return serial(async () => {
        const existing = await live(reg.trace_id);
        if (existing) {
          if (existing.registrationText !== registrationText(reg)) return { kind: "conflict" };
          const state = await storage.get<BindState>(keys.state(reg.trace_id));
          if (state) return { kind: "existing", state };
        }
        const initial = createInitialState(reg, now(), timeoutMs);
        await store(reg, initial, opts.retentionMs);
        return { kind: "created", state: initial };
      });
    },

    reassert(reg, state, lastCallAgoMs) {
      return serial(async () => {
        if (await live(reg.trace_id)) return (await storage.get<BindState>(keys.state(reg.trace_id))) ?? null;
        await store(reg, state, Math.max(opts.resultTtlMs, Date.parse(state.expires_at) - now() + opts.resultTtlMs));
        if (lastCallAgoMs !== null) await storage.put(keys.lastCall(reg.trace_id), now() - lastCallAgoMs);
        return state;
      });
    },

    getRegistration(traceId) {
      return serial(async () => (await live(traceId))?.registration ?? null);
    },

    getState(traceId) {
      return serial(async () =>
        (await live(traceId)) ? ((await storage.get<BindState>(keys.state(traceId))) ?? null) : null,
      );
    },

    updateState(traceId, mutate, updateOpts) {
      return serial(async () => {
        const meta = await live(traceId);
        const prev = meta ? await storage.get<BindState>(keys.state(traceId)) : undefined;
        if (!meta || !prev) return null;
        if (updateOpts?.notBeforeMs !== undefined && now() < updateOpts.notBeforeMs) return prev;
        const next = mutate(prev);
        if (next === prev) return prev;
        await storage.put(keys.state(traceId), next);
        if (next.final && meta.expiresAtMs < now() + opts.resultTtlMs) {
          await storage.put(keys.meta(traceId), { ...meta, expiresAtMs: now() + opts.resultTtlMs });
        }
        const record = next.final ? (updateOpts?.deliveries?.(next) ?? null) : null;
        if (record) {
          const existing = (await storage.get<DeliveryRecord[]>(keys.deliveries(traceId))) ?? [];
          if (!existing.some((r) => r.id === record.id)) {
            await storage.put(keys.deliveries(traceId), [...existing, record]);
          }
        }
        publish(traceId, { kind: "state", state: next });
        return next;
      });
    },

    async subscribe(traceId, listener): Promise<Unsubscribe> {
      // Every publisher of the trace is in this object, so a local listener sees every change.
      let set = listeners.get(traceId);
      if (!set) {
        set = new Set();
        listeners.set(traceId, set);
      }
      set.add(listener);
      return async () => {
        const current = listeners.get(traceId);
        current?.delete(listener);
        if (current?.size === 0) listeners.delete(traceId);
      };
    },

    acquireLease(traceId, leaseMs): Promise<LeaseTake> {
      return serial(async () => {
        if (!(await live(traceId))) return { kind: "missing" };
        const t = now();
        const lease = leases.get(traceId);
        if (lease && lease.expiresAtMs > t) return { kind: "held", ms: lease.expiresAtMs - t };
        const token = crypto.randomUUID();
        leases.set(traceId, { token, expiresAtMs: t + leaseMs });
        return { kind: "acquired", token };
      });
    },

    async renewLease(traceId, token, leaseMs) {
      if (!leaseHeld(traceId, token)) return false;
      leases.set(traceId, { token, expiresAtMs: now() + leaseMs });
      publish(traceId, { kind: "alive" });
      return true;
    },

    releaseLease(traceId, token) {
      return serial(async () => {
        if (leases.get(traceId)?.token !== token) return;
        leases.delete(traceId);
        // The port's release announcement: a waiting driver (here, a restarted one) tries at once.
        publish(traceId, { kind: "released" });
      });
    },

    beginCall(traceId, token, call, carry): Promise<CallGate> {
      return serial(async () => {
        if (!(await live(traceId)) || !leaseHeld(traceId, token)) return { kind: "lost" };
        const t = now();
        if (t >= call.deadlineMs) return { kind: "expired" };
        // Kept in storage: an object restarted after eviction still spaces its first call.
        const last = await storage.get<number>(keys.lastCall(traceId));
        if (last !== undefined && t - last < call.minGapMs) return { kind: "wait", ms: last + call.minGapMs - t };
        await storage.put(keys.lastCall(traceId), t);
        leases.set(traceId, { token, expiresAtMs: t + call.leaseMs });
        const current = carry ? await storage.get<BindState>(keys.state(traceId)) : undefined;
        if (!carry || !current) return { kind: "go" };
        const next = carry(current);
        await storage.put(keys.state(traceId), next);
        publish(traceId, { kind: "state", state: next });
        return { kind: "go", state: next };
      });
    },

    takeCallPermit() {
      return budget.takeCallPermit();
    },

    banUpstream(ms) {
      return budget.banUpstream(ms);
    },

    takeRegistration(key, perMinute) {
      return budget.takeRegistration(key, perMinute);
    },

    refundRegistration(key, perMinute) {
      return budget.refundRegistration(key, perMinute);
    },

    async isReady() {
      return true;
    },

    async close() {
      listeners.clear();
      leases.clear();
    },

    nextLook(traceId) {
      return serial(async () => (await trackedOf())[traceId] ?? null);
    },

    recordInterest(traceId, untilMs) {
      return serial(async () => {
        if (!(await live(traceId))) return;
        const t = now();
        const current = Object.values(await interestOf(traceId)).filter((until) => until > t);
        await storage.put(keys.interest(traceId), { wanted: Math.max(untilMs, ...current) });
      });
    },

    inspect(traceId) {
      return serial(async () => {
        const meta = await live(traceId);
        const state = meta ? await storage.get<BindState>(keys.state(traceId)) : undefined;
        if (!meta || !state) return null;
        const interestUntilMs = Math.max(0, ...Object.values(await interestOf(traceId)));
        return { state, expiresAtMs: meta.expiresAtMs, interestUntilMs };
      });
    },

    forget(traceId) {
      return serial(async () => {
        await storage.delete(keys.all(traceId));
        leases.delete(traceId);
      });
    },
  };
}

export interface DurableCallBudgetOptions {
  /** The budget object's storage: a ban must outlive eviction (bans have lasted hours). */
  readonly storage: DurableStorage;
  /** UPSTREAM_QPS. */
  readonly upstreamQps: number;
  /** The object's clock. */
  readonly now?: () => number;
}

const NEXT_CALL_KEY = "budget:next-call-at";
const quotaKey = (key: string) => `quota:${key}`;

/**
 * The deployment-wide budget of checkbind calls (UPSTREAM_QPS) and the TOP
 * rate-limit ban, for the one Durable Object that every trace's object asks, on its
 * own clock: the pacing rule of src/domain/pacer.ts, as in memory and in Redis. The
 * next call's time is stored once a ban moves it (bans have lasted hours and must
 * outlive eviction); between bans it is kept in memory (after an eviction, at most one
 * extra call).
 * @example const budget = createDurableCallBudget({ storage: ctx.storage, upstreamQps: 40 });
 */
export function createDurableCallBudget(opts: DurableCallBudgetOptions): CallBudget {
  const now = opts.now ?? Date.now;
  const paceMs = 1000 / opts.upstreamQps;
  let nextCallAtMs: number | null = null;

  async function nextCallAt(): Promise<number> {
    nextCallAtMs ??= (await opts.storage.get<number>(NEXT_CALL_KEY)) ?? 0;
    return nextCallAtMs;
  }

  return {
    async takeCallPermit(): Promise<Permit> {
      const take = takePace(await nextCallAt(), now(), paceMs);
      nextCallAtMs = take.nextAtMs;
      return take.ok ? { kind: "go" } : { kind: "wait", ms: take.waitMs };
    },

    async banUpstream(ms) {
      const next = banPace(await nextCallAt(), now(), ms);
      if (next === nextCallAtMs) return;
      nextCallAtMs = next;
      await opts.storage.put(NEXT_CALL_KEY, next);
    },

    // Quotas are stored: an evicted object must not hand out a fresh minute's worth.
    async takeRegistration(key, perMinute): Promise<QuotaTake> {
      const saved = (await opts.storage.get<BucketState>(quotaKey(key))) ?? null;
      const { bucket: next, retryAfterMs } = takeQuota(saved, now(), perMinute);
      await opts.storage.put(quotaKey(key), next);
      return retryAfterMs === null ? { kind: "go" } : { kind: "wait", retryAfterMs };
    },

    async refundRegistration(key, perMinute) {
      const saved = (await opts.storage.get<BucketState>(quotaKey(key))) ?? null;
      await opts.storage.put(quotaKey(key), returnToken(saved, now(), perMinute / 60, perMinute));
    },
  };
}
