import { randomUUID } from "node:crypto";
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

export interface MemoryCoordinatorOptions {
  /** How long a trace is kept after registration (BIND_TIMEOUT_MS + RESULT_TTL_MS). */
  readonly retentionMs: number;
  /** How long a final state is kept at least (RESULT_TTL_MS). */
  readonly resultTtlMs: number;
  /** Deployment-wide budget of checkbind calls per second (UPSTREAM_QPS). */
  readonly upstreamQps: number;
  /** The one clock of a single instance. */
  readonly now?: () => number;
}

interface TraceRecord {
  readonly registration: BindRegistration;
  readonly registrationText: string;
  state: BindState;
  expiresAtMs: number;
  lease: { token: string; expiresAtMs: number } | null;
  lastCallStartMs: number | null;
  listeners: Set<(event: TraceEvent) => void>;
}

/**
 * The coordinator of a single instance: everything lives in this process, on its clock.
 * It keeps the same semantics as the Redis one (leases, spacing, budget) so that one
 * scheduler serves both.
 * @example const coordinator = createMemoryCoordinator({ retentionMs: 780_000, resultTtlMs: 600_000, upstreamQps: 40 });
 */
export function createMemoryCoordinator(opts: MemoryCoordinatorOptions): Coordinator & { size(): number } {
  const now = opts.now ?? Date.now;
  const traces = new Map<string, TraceRecord>();
  const paceMs = 1000 / opts.upstreamQps;
  let nextCallAtMs = 0;
  const quotas = new Map<string, BucketState>();
  /** Webhook deliveries by trace: they outlive the trace's retention (WEBHOOK_MAX_AGE_MS). */
  const records = new Map<string, DeliveryRecord[]>();
  const claims = new Map<string, { token: string; expiresAtMs: number }>();
  /** The traces looked after, with when to look next. */
  const tracked = new Map<string, number>();

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

  function publish(record: TraceRecord, event: TraceEvent): void {
    for (const listener of [...record.listeners]) listener(event);
  }

  function holds(record: TraceRecord | undefined, token: string): record is TraceRecord {
    return record?.lease?.token === token && record.lease.expiresAtMs > now();
  }

  function store(reg: BindRegistration, text: string, state: BindState, retentionMs: number): TraceRecord {
    const record: TraceRecord = {
      registration: reg,
      registrationText: text,
      state,
      expiresAtMs: now() + retentionMs,
      lease: null,
      lastCallStartMs: null,
      listeners: traces.get(reg.trace_id)?.listeners ?? new Set(),
    };
    traces.set(reg.trace_id, record);
    return record;
  }

  function addDeliveries(traceId: string, record: DeliveryRecord | null): void {
    if (!record) return;
    const existing = records.get(traceId) ?? [];
    if (!existing.some((r) => r.id === record.id)) records.set(traceId, [...existing, record]);
  }

  const deliveries: DeliveryStore = {
    async track(traceId, atMs) {
      if (!tracked.has(traceId)) tracked.set(traceId, atMs);
    },
    async due(nowMs, limit) {
      const due = [...tracked].filter(([, at]) => at <= nowMs).sort((a, b) => a[1] - b[1]);
      return due.slice(0, limit).map(([id]) => id);
    },
    async claim(traceId, nowMs, claimMs) {
      const list = records.get(traceId) ?? [];
      if (list.length === 0) {
        const record = live(traceId);
        if (!record || record.state.final) return { kind: "done" };
        return { kind: "open", polled: record.lease !== null && record.lease.expiresAtMs > now() };
      }
      const held = claims.get(traceId);
      if (held && held.expiresAtMs > now()) return { kind: "later", atMs: nowMs + (held.expiresAtMs - now()) };
      const due = firstDue(list, nowMs);
      if (!due) return { kind: "done" };
      if ("atMs" in due) return { kind: "later", atMs: due.atMs };
      const token = randomUUID();
      claims.set(traceId, { token, expiresAtMs: now() + claimMs });
      return { kind: "deliver", token, record: due.record, destination: due.destination };
    },
    async settle(traceId, token, id, destination, result) {
      if (claims.get(traceId)?.token !== token) return null;
      claims.delete(traceId);
      const { records: left, settled } = afterAttempt(records.get(traceId) ?? [], id, destination, result);
      if (left.length === 0) records.delete(traceId);
      else records.set(traceId, left);
      return settled;
    },
    async release(traceId, token) {
      if (claims.get(traceId)?.token === token) claims.delete(traceId);
    },
    async schedule(traceId, atMs) {
      if (atMs === null) tracked.delete(traceId);
      else tracked.set(traceId, atMs);
    },
    async tracked() {
      return tracked.size;
    },
    async pendingRecords() {
      return [...records.values()].flat();
    },
  };

  return {
    now,
    deliveries,

    async register(reg, timeoutMs): Promise<RegisterResult> {
      const text = registrationText(reg);
      const existing = live(reg.trace_id);
      if (existing) {
        return existing.registrationText === text ? { kind: "existing", state: existing.state } : { kind: "conflict" };
      }
      const initial = createInitialState(reg, now(), timeoutMs);
      store(reg, text, initial, opts.retentionMs);
      return { kind: "created", state: initial };
    },

    async reassert(reg, state, lastCallAgoMs) {
      const existing = live(reg.trace_id);
      if (existing) return existing.state;
      const retentionMs = Math.max(opts.resultTtlMs, Date.parse(state.expires_at) - now() + opts.resultTtlMs);
      const record = store(reg, registrationText(reg), state, retentionMs);
      if (lastCallAgoMs !== null) record.lastCallStartMs = now() - lastCallAgoMs;
      return record.state;
    },

    async getRegistration(traceId) {
      return live(traceId)?.registration ?? null;
    },

    async getState(traceId) {
      return live(traceId)?.state ?? null;
    },

    async updateState(traceId, mutate, updateOpts) {
      const record = live(traceId);
      if (!record) return null;
      if (updateOpts?.notBeforeMs !== undefined && now() < updateOpts.notBeforeMs) return record.state;
      const prev = record.state;
      const next = mutate(prev);
      if (next === prev) return prev;
      record.state = next;
      if (next.final) {
        record.expiresAtMs = Math.max(record.expiresAtMs, now() + opts.resultTtlMs);
        addDeliveries(traceId, updateOpts?.deliveries?.(next) ?? null);
      }
      publish(record, { kind: "state", state: next });
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

    async acquireLease(traceId, leaseMs): Promise<LeaseTake> {
      const record = live(traceId);
      if (!record) return { kind: "missing" };
      const t = now();
      if (record.lease && record.lease.expiresAtMs > t) return { kind: "held", ms: record.lease.expiresAtMs - t };
      const token = randomUUID();
      record.lease = { token, expiresAtMs: t + leaseMs };
      return { kind: "acquired", token };
    },

    async renewLease(traceId, token, leaseMs) {
      const record = live(traceId);
      if (!holds(record, token) || !record.lease) return false;
      record.lease.expiresAtMs = now() + leaseMs;
      publish(record, { kind: "alive" });
      return true;
    },

    async releaseLease(traceId, token) {
      const record = live(traceId);
      if (!record || record.lease?.token !== token) return;
      // The last call's start stays with the record: a successor is spaced from it.
      record.lease = null;
      publish(record, { kind: "released" });
    },

    async beginCall(traceId, token, call, carry): Promise<CallGate> {
      const record = live(traceId);
      if (!holds(record, token) || !record.lease) return { kind: "lost" };
      const t = now();
      if (t >= call.deadlineMs) return { kind: "expired" };
      if (record.lastCallStartMs !== null && t - record.lastCallStartMs < call.minGapMs) {
        return { kind: "wait", ms: record.lastCallStartMs + call.minGapMs - t };
      }
      record.lastCallStartMs = t;
      record.lease.expiresAtMs = t + call.leaseMs;
      if (!carry) return { kind: "go" };
      record.state = carry(record.state);
      publish(record, { kind: "state", state: record.state });
      return { kind: "go", state: record.state };
    },

    async takeCallPermit(): Promise<Permit> {
      const take = takePace(nextCallAtMs, now(), paceMs);
      nextCallAtMs = take.nextAtMs;
      return take.ok ? { kind: "go" } : { kind: "wait", ms: take.waitMs };
    },

    async banUpstream(ms) {
      nextCallAtMs = banPace(nextCallAtMs, now(), ms);
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
