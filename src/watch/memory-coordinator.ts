import { randomUUID } from "node:crypto";
import type { BindRegistration, BindState } from "../domain/bind.js";
import { canonicalJson } from "../domain/state.js";
import { type BucketState, returnToken, takeQuota, takeToken } from "../domain/token-bucket.js";
import type { CallGate, Coordinator, Permit, QuotaTake, RegisterResult, Unsubscribe } from "./coordinator.js";

export interface MemoryCoordinatorOptions {
  /** How long a trace is kept after registration (BIND_TIMEOUT_MS + RESULT_TTL_MS). */
  readonly retentionMs: number;
  /** How long a final state is kept at least (RESULT_TTL_MS). */
  readonly resultTtlMs: number;
  /** Deployment-wide budget of checkbind calls per second (UPSTREAM_QPS). */
  readonly upstreamQps: number;
  readonly now?: () => number;
}

interface TraceRecord {
  readonly registration: BindRegistration;
  readonly registrationText: string;
  state: BindState;
  expiresAtMs: number;
  interest: Map<string, number>;
  lease: { token: string; expiresAtMs: number } | null;
  lastCallStartMs: number | null;
  listeners: Set<(state: BindState) => void>;
}

/**
 * The coordinator of a single instance: everything lives in this process. It keeps
 * the same semantics as the Redis one (leases, spacing, budget) so that one
 * scheduler serves both.
 * @example const coordinator = createMemoryCoordinator({ retentionMs: 780_000, resultTtlMs: 600_000, upstreamQps: 40 });
 */
export function createMemoryCoordinator(opts: MemoryCoordinatorOptions): Coordinator & { size(): number } {
  const now = opts.now ?? Date.now;
  const traces = new Map<string, TraceRecord>();
  let bucket: BucketState | null = null;
  let bannedUntilMs = 0;
  const quotas = new Map<string, BucketState>();

  function live(traceId: string): TraceRecord | undefined {
    const record = traces.get(traceId);
    if (record && record.expiresAtMs <= now()) {
      traces.delete(traceId);
      return undefined;
    }
    return record;
  }

  // Expired records are also swept periodically so memory does not grow with traces nobody reads.
  const sweeper = setInterval(
    () => {
      const t = now();
      for (const [id, record] of traces) if (record.expiresAtMs <= t && record.listeners.size === 0) traces.delete(id);
    },
    Math.min(60_000, Math.max(1_000, opts.resultTtlMs)),
  );
  sweeper.unref?.();

  function publish(record: TraceRecord, state: BindState): void {
    for (const listener of [...record.listeners]) listener(state);
  }

  return {
    async register(reg, initial, lastCallStartMs): Promise<RegisterResult> {
      const text = canonicalJson(reg);
      const existing = live(reg.trace_id);
      if (existing) {
        return existing.registrationText === text ? { kind: "existing", state: existing.state } : { kind: "conflict" };
      }
      traces.set(reg.trace_id, {
        registration: reg,
        registrationText: text,
        state: initial,
        expiresAtMs: now() + opts.retentionMs,
        interest: new Map(),
        lease: null,
        lastCallStartMs: lastCallStartMs ?? null,
        listeners: new Set(),
      });
      return { kind: "created", state: initial };
    },

    async getRegistration(traceId) {
      return live(traceId)?.registration ?? null;
    },

    async getState(traceId) {
      return live(traceId)?.state ?? null;
    },

    async updateState(traceId, mutate) {
      const record = live(traceId);
      if (!record) return null;
      const prev = record.state;
      const next = mutate(prev);
      if (next === prev) return prev;
      record.state = next;
      if (next.final) record.expiresAtMs = Math.max(record.expiresAtMs, now() + opts.resultTtlMs);
      if (next.version !== prev.version) publish(record, next);
      return next;
    },

    async subscribe(traceId, listener): Promise<Unsubscribe> {
      // A subscription may precede registration only in races the caller handles by re-reading.
      const record = live(traceId);
      if (!record) return async () => {};
      record.listeners.add(listener);
      return async () => {
        record.listeners.delete(listener);
      };
    },

    async setInterest(traceId, instanceId, untilMs) {
      const record = live(traceId);
      if (!record) return;
      record.interest.set(instanceId, Math.max(record.interest.get(instanceId) ?? 0, untilMs));
    },

    async hasInterest(traceId, nowMs) {
      const record = live(traceId);
      if (!record) return false;
      for (const until of record.interest.values()) if (until > nowMs) return true;
      return false;
    },

    async acquireLease(traceId, ttlMs) {
      const record = live(traceId);
      if (!record) return null;
      const t = now();
      if (record.lease && record.lease.expiresAtMs > t) return null;
      const token = randomUUID();
      record.lease = { token, expiresAtMs: t + ttlMs };
      return token;
    },

    async renewLease(traceId, token, ttlMs) {
      const record = live(traceId);
      const t = now();
      if (!record?.lease || record.lease.token !== token || record.lease.expiresAtMs <= t) return false;
      record.lease.expiresAtMs = t + ttlMs;
      return true;
    },

    async releaseLease(traceId, token) {
      const record = live(traceId);
      if (record?.lease?.token === token) {
        record.lease = null;
        publish(record, record.state);
      }
    },

    async beginCall(traceId, token, nowMs, minGapMs): Promise<CallGate> {
      const record = live(traceId);
      if (!record?.lease || record.lease.token !== token || record.lease.expiresAtMs <= now()) return { kind: "lost" };
      if (record.lastCallStartMs !== null && nowMs - record.lastCallStartMs < minGapMs) {
        return { kind: "wait", untilMs: record.lastCallStartMs + minGapMs };
      }
      record.lastCallStartMs = nowMs;
      return { kind: "go" };
    },

    async takeCallPermit(nowMs): Promise<Permit> {
      if (bannedUntilMs > nowMs) return { kind: "wait", untilMs: bannedUntilMs };
      // Capacity 1: calls are paced evenly, so no second ever holds more than UPSTREAM_QPS (+1 saved).
      const take = takeToken(bucket, nowMs, opts.upstreamQps, 1);
      bucket = take.bucket;
      return take.ok ? { kind: "go" } : { kind: "wait", untilMs: take.retryAtMs };
    },

    async banUpstream(untilMs) {
      bannedUntilMs = Math.max(bannedUntilMs, untilMs);
    },

    async takeRegistration(key, perMinute): Promise<QuotaTake> {
      const { bucket: next, retryAfterMs } = takeQuota(quotas.get(key) ?? null, now(), perMinute);
      quotas.set(key, next);
      return retryAfterMs === null ? { kind: "go" } : { kind: "wait", retryAfterMs };
    },

    async refundRegistration(key, perMinute) {
      quotas.set(key, returnToken(quotas.get(key) ?? null, now(), perMinute / 60, perMinute));
    },

    async isReady() {
      return true;
    },

    async close() {
      clearInterval(sweeper);
    },

    size() {
      return traces.size;
    },
  };
}
