import type { BindRegistration, BindState } from "../domain/bind.js";
import { canonicalJson } from "../domain/state.js";
import { type BucketState, returnToken, takeQuota, takeToken } from "../domain/token-bucket.js";
import type { CallGate, Coordinator, Permit, QuotaTake, RegisterResult, Unsubscribe } from "./coordinator.js";

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
 * of their own (one for the call budget, one per API key's quota).
 */
export interface CallBudget {
  takeCallPermit(nowMs: number): Promise<Permit>;
  banUpstream(untilMs: number): Promise<void>;
  takeRegistration(key: string, perMinute: number): Promise<QuotaTake>;
  refundRegistration(key: string, perMinute: number): Promise<void>;
}

export interface DurableObjectCoordinatorOptions {
  /** The storage of the Durable Object that owns the traces (one trace per object in bindwatch). */
  readonly storage: DurableStorage;
  /** Where `takeCallPermit` and `banUpstream` go: shared by every trace's object. */
  readonly budget: CallBudget;
  /** How long a trace is kept after registration (BIND_TIMEOUT_MS + RESULT_TTL_MS). */
  readonly retentionMs: number;
  /** How long a final state is kept at least (RESULT_TTL_MS). */
  readonly resultTtlMs: number;
  readonly now?: () => number;
}

/** What the owning object needs to plan its alarm; see {@link DurableObjectCoordinator.inspect}. */
export interface TraceSchedule {
  readonly state: BindState;
  /** When the trace is forgotten (its storage deleted). */
  readonly expiresAtMs: number;
  /** Until when some instance wants it polled (0 when nobody does). */
  readonly interestUntilMs: number;
}

export interface DurableObjectCoordinator extends Coordinator {
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

/** One builder for every storage key, as in the Redis coordinator. */
const keys = {
  meta: (traceId: string) => `trace:${traceId}:meta`,
  state: (traceId: string) => `trace:${traceId}:state`,
  interest: (traceId: string) => `trace:${traceId}:interest`,
  lastCall: (traceId: string) => `trace:${traceId}:last-call`,
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
  const listeners = new Map<string, Set<(state: BindState) => void>>();
  const leases = new Map<string, { token: string; expiresAtMs: number }>();
  let tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every operation queued before it. */
  function serial<T>(task: () => Promise<T>): Promise<T> {
    const run = tail.then(task, task);
    tail = run.catch(() => {});
    return run;
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

  return {
    register(reg, initial, lastCallStartMs): Promise<RegisterResult> {
      return serial(async () => {
        const text = canonicalJson(reg);
        const existing = await live(reg.trace_id);
        if (existing) {
          if (existing.registrationText !== text) return { kind: "conflict" };
          const state = await storage.get<BindState>(keys.state(reg.trace_id));
          if (state) return { kind: "existing", state };
        }
        const meta: TraceMeta = { registration: reg, registrationText: text, expiresAtMs: now() + opts.retentionMs };
        await storage.delete(keys.all(reg.trace_id));
        await storage.put(keys.meta(reg.trace_id), meta);
        await storage.put(keys.state(reg.trace_id), initial);
        if (lastCallStartMs !== undefined) await storage.put(keys.lastCall(reg.trace_id), lastCallStartMs);
        return { kind: "created", state: initial };
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

    updateState(traceId, mutate) {
      return serial(async () => {
        const meta = await live(traceId);
        const prev = meta ? await storage.get<BindState>(keys.state(traceId)) : undefined;
        if (!meta || !prev) return null;
        const next = mutate(prev);
        if (next === prev) return prev;
        await storage.put(keys.state(traceId), next);
        if (next.final && meta.expiresAtMs < now() + opts.resultTtlMs) {
          await storage.put(keys.meta(traceId), { ...meta, expiresAtMs: now() + opts.resultTtlMs });
        }
        if (next.version !== prev.version) {
          for (const listener of [...(listeners.get(traceId) ?? [])]) listener(next);
        }
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

    setInterest(traceId, instanceId, untilMs) {
      return serial(async () => {
        if (!(await live(traceId))) return;
        const t = now();
        const interest: Record<string, number> = {};
        // Lapsed entries are dropped so the record stays small.
        for (const [id, until] of Object.entries(await interestOf(traceId))) if (until > t) interest[id] = until;
        interest[instanceId] = Math.max(interest[instanceId] ?? 0, untilMs);
        await storage.put(keys.interest(traceId), interest);
      });
    },

    hasInterest(traceId, nowMs) {
      return serial(async () => {
        if (!(await live(traceId))) return false;
        return Object.values(await interestOf(traceId)).some((until) => until > nowMs);
      });
    },

    acquireLease(traceId, ttlMs) {
      return serial(async () => {
        if (!(await live(traceId))) return null;
        const t = now();
        const lease = leases.get(traceId);
        if (lease && lease.expiresAtMs > t) return null;
        const token = crypto.randomUUID();
        leases.set(traceId, { token, expiresAtMs: t + ttlMs });
        return token;
      });
    },

    async renewLease(traceId, token, ttlMs) {
      if (!leaseHeld(traceId, token)) return false;
      leases.set(traceId, { token, expiresAtMs: now() + ttlMs });
      return true;
    },

    releaseLease(traceId, token) {
      return serial(async () => {
        if (leases.get(traceId)?.token !== token) return;
        leases.delete(traceId);
        // The port's release announcement: a waiting driver (here, a restarted one) tries at once.
        const state = (await live(traceId)) ? await storage.get<BindState>(keys.state(traceId)) : undefined;
        if (state) for (const listener of [...(listeners.get(traceId) ?? [])]) listener(state);
      });
    },

    beginCall(traceId, token, nowMs, minGapMs): Promise<CallGate> {
      return serial(async () => {
        if (!(await live(traceId)) || !leaseHeld(traceId, token)) return { kind: "lost" };
        // Kept in storage: an object restarted after eviction still spaces its first call.
        const last = await storage.get<number>(keys.lastCall(traceId));
        if (last !== undefined && nowMs - last < minGapMs) return { kind: "wait", untilMs: last + minGapMs };
        await storage.put(keys.lastCall(traceId), nowMs);
        return { kind: "go" };
      });
    },

    takeCallPermit(nowMs) {
      return budget.takeCallPermit(nowMs);
    },

    banUpstream(untilMs) {
      return budget.banUpstream(untilMs);
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
  /** The object's clock, for quotas (the port hands no time for them). */
  readonly now?: () => number;
}

const BAN_KEY = "budget:banned-until";
const quotaKey = (key: string) => `quota:${key}`;

/**
 * The deployment-wide budget of checkbind calls (UPSTREAM_QPS) and the TOP
 * rate-limit ban, for the one Durable Object that every trace's object asks. The
 * same token-bucket rule as the in-memory and Redis budgets; the bucket itself
 * is kept in memory (after an eviction it starts full: at most one extra call).
 * @example const budget = createDurableCallBudget({ storage: ctx.storage, upstreamQps: 40 });
 */
export function createDurableCallBudget(opts: DurableCallBudgetOptions): CallBudget {
  const now = opts.now ?? Date.now;
  let bucket: BucketState | null = null;
  let bannedUntilMs: number | null = null;

  async function bannedUntil(): Promise<number> {
    bannedUntilMs ??= (await opts.storage.get<number>(BAN_KEY)) ?? 0;
    return bannedUntilMs;
  }

  return {
    async takeCallPermit(nowMs): Promise<Permit> {
      const ban = await bannedUntil();
      if (ban > nowMs) return { kind: "wait", untilMs: ban };
      // Capacity 1: calls are paced evenly, so no second ever holds more than UPSTREAM_QPS (+1 saved).
      const take = takeToken(bucket, nowMs, opts.upstreamQps, 1);
      bucket = take.bucket;
      return take.ok ? { kind: "go" } : { kind: "wait", untilMs: take.retryAtMs };
    },

    async banUpstream(untilMs) {
      const ban = await bannedUntil();
      if (untilMs <= ban) return;
      bannedUntilMs = untilMs;
      await opts.storage.put(BAN_KEY, untilMs);
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
