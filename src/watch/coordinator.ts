import type { BindRegistration, BindState } from "../domain/bind.js";
import type { DeliveryRecord } from "../domain/webhook.js";
import type { DeliveryStore } from "./deliveries.js";

export type RegisterResult =
  | { readonly kind: "created"; readonly state: BindState }
  | { readonly kind: "existing"; readonly state: BindState }
  | { readonly kind: "conflict" };

/** The answer to a try at a trace's poll lease. */
export type LeaseTake =
  | { readonly kind: "acquired"; readonly token: string }
  /** Another holder has it for at least `ms` more (its renewals may extend that). */
  | { readonly kind: "held"; readonly ms: number }
  /** The store does not know the trace (it lost it, or the trace's retention is over). */
  | { readonly kind: "missing" };

/** Whether the lease holder may start a checkbind call now (single flight and spacing, SPEC §4.1). */
export type CallGate =
  /** `state`: the stored state after the carried change, when it was written with the start. */
  | { readonly kind: "go"; readonly state?: BindState }
  | { readonly kind: "wait"; readonly ms: number }
  | { readonly kind: "lost" }
  /** The trace's deadline has passed on the store's clock: it is to end as `expired`. */
  | { readonly kind: "expired" };

export type Permit = { readonly kind: "go" } | { readonly kind: "wait"; readonly ms: number };

/** Whether one more registration fits the caller's quota; otherwise how long until one does. */
export type QuotaTake = { readonly kind: "go" } | { readonly kind: "wait"; readonly retryAfterMs: number };

/** What a trace's channel carries to every instance that subscribed to it. */
export type TraceEvent =
  /** A state was written (its version may be unchanged: then it only shows the poller is alive). */
  | { readonly kind: "state"; readonly state: BindState }
  /** The lease holder renewed its lease between calls: it is alive. */
  | { readonly kind: "alive" }
  /** The lease holder gave its lease up: whoever wants the trace polled may take it now. */
  | { readonly kind: "released" };

export type Unsubscribe = () => Promise<void>;

export interface UpdateOptions {
  /** Write only once the store's clock has reached this (the deadline). */
  readonly notBeforeMs?: number;
  /** The webhook deliveries of the new state when it is final; `null` when it has none. */
  readonly deliveries?: (final: BindState) => DeliveryRecord | null;
}

export interface CallOptions {
  /** Calls start at least this far apart, whoever makes them (0.8 × POLL_INTERVAL_MS). */
  readonly minGapMs: number;
  /** A call that goes also extends the lease to this long. */
  readonly leaseMs: number;
  /** The trace's deadline (`expires_at`, which came from the store's clock), in ms. */
  readonly deadlineMs: number;
}

/**
 * The coordinator port: everything the poll scheduler and the HTTP layer share with
 * other instances. One implementation per engine (in-memory, Redis, Durable Object),
 * all held to the same contract suite.
 *
 * One clock (SPEC §4.7): every time that more than one instance compares — leases, the
 * call gate, the budget, bans, deadlines, retention, quotas — is read from the store's
 * clock where it is compared (Redis `TIME` inside the script, the Durable Object's clock
 * at the edge). The port hands instances durations ("wait 740 ms"), never instants to
 * compare with their own `Date.now()`.
 */
export interface Coordinator {
  /**
   * The store's clock as this instance sees it (its own clock corrected by what the store
   * last said), for the times written into states (`updated_at`); never for a comparison
   * another instance depends on.
   */
  now(): number;

  /**
   * Stores a registration with its initial state (`created_at` and `expires_at` from the
   * store's clock, `expires_at` `timeoutMs` later) unless the trace exists; compares the
   * parameters when it does.
   */
  register(reg: BindRegistration, timeoutMs: number): Promise<RegisterResult>;
  /**
   * Puts back a trace the store lost (Redis restarted empty, a failover lost its last
   * writes) as this instance last saw it, unless it is there again. `lastCallAgoMs` is how
   * long ago this instance saw the last call start, so whoever calls next keeps the
   * spacing to calls before the loss. Resolves to the stored state afterwards.
   */
  reassert(reg: BindRegistration, state: BindState, lastCallAgoMs: number | null): Promise<BindState | null>;
  getRegistration(traceId: string): Promise<BindRegistration | null>;
  getState(traceId: string): Promise<BindState | null>;
  /**
   * Atomically replaces the state with `mutate(current)` and publishes the written state
   * to every subscriber on every instance. With `notBeforeMs`, only once the store's clock
   * has reached it (the deadline); before that the state is left as it is. Resolves to
   * the stored state afterwards, or `null` for an unknown trace. `mutate` may run more
   * than once (optimistic engines retry a lost race), so it must be pure. A final state
   * is written with the webhook deliveries `opts.deliveries` gives for it, in the same
   * step, unless the trace has some already.
   */
  updateState(
    traceId: string,
    mutate: (current: BindState) => BindState,
    opts?: UpdateOptions,
  ): Promise<BindState | null>;
  /**
   * Delivers the trace's events. Resolves once the subscription is live, so a read of
   * stored state afterwards cannot miss a change in between. After a reconnect an engine
   * re-delivers the stored state, so a listener may see a version twice (or skip ones
   * superseded meanwhile) and must keep only newer versions.
   */
  subscribe(traceId: string, listener: (event: TraceEvent) => void): Promise<Unsubscribe>;

  /** Poll leadership: the lease for `leaseMs`, or how long its holder has it yet. */
  acquireLease(traceId: string, leaseMs: number): Promise<LeaseTake>;
  /** Extends the lease only while `token` still holds it, and tells the subscribers the holder is alive. */
  renewLease(traceId: string, token: string, leaseMs: number): Promise<boolean>;
  /**
   * Gives the lease up only while `token` still holds it, keeping the last call's start
   * for `minGapMs` so a successor stays spaced, and announces the release.
   */
  releaseLease(traceId: string, token: string, minGapMs: number): Promise<void>;
  /**
   * Records the start of a call, and extends the lease, when `token` holds the lease and
   * the previous call (by any holder) started at least `minGapMs` before, on the store's clock.
   * When the call goes, `carry` (a state change that could wait: an answer that made no
   * new version) is written and published in the same step, unless another write came
   * first; `state` in the answer says it was. `carry` must be pure.
   */
  beginCall(
    traceId: string,
    token: string,
    opts: CallOptions,
    carry?: (current: BindState) => BindState,
  ): Promise<CallGate>;

  /** Takes one call from the deployment-wide budget (UPSTREAM_QPS), unless a ban is in force. */
  takeCallPermit(): Promise<Permit>;
  /** Holds every caller of the deployment off for `ms` from now (a TOP rate-limit ban); never shortens one. */
  banUpstream(ms: number): Promise<void>;

  /**
   * Takes one registration from `key`'s quota (REGISTRATIONS_PER_MINUTE), counted for the
   * whole deployment on the store's clock: a bucket of `perMinute` that refills at
   * `perMinute` a minute.
   */
  takeRegistration(key: string, perMinute: number): Promise<QuotaTake>;
  /** Gives back a registration taken for a trace that turned out to be registered already. */
  refundRegistration(key: string, perMinute: number): Promise<void>;

  /** The webhook deliveries of the deployment's finals. */
  readonly deliveries: DeliveryStore;

  /** False while the backing store is unreachable (`/readyz`). */
  isReady(): Promise<boolean>;
  close(): Promise<void>;
}

/** Raised by a coordinator whose backing store cannot be reached; the API answers 503. */
export class CoordinatorUnavailableError extends Error {
  override readonly name = "CoordinatorUnavailableError";
}
