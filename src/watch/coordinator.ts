import type { BindRegistration, BindState } from "../domain/bind.js";

export type RegisterResult =
  | { readonly kind: "created"; readonly state: BindState }
  | { readonly kind: "existing"; readonly state: BindState }
  | { readonly kind: "conflict" };

/** Whether the lease holder may start a checkbind call now (single flight and spacing, SPEC §4.1). */
export type CallGate =
  | { readonly kind: "go" }
  | { readonly kind: "wait"; readonly untilMs: number }
  | { readonly kind: "lost" };

export type Permit = { readonly kind: "go" } | { readonly kind: "wait"; readonly untilMs: number };

/** Whether one more registration fits the caller's quota; otherwise how long until one does. */
export type QuotaTake = { readonly kind: "go" } | { readonly kind: "wait"; readonly retryAfterMs: number };

export type Unsubscribe = () => Promise<void>;

/**
 * The coordinator port: everything the poll scheduler and the HTTP layer share
 * with other instances. One implementation per engine (in-memory, Redis,
 * Durable Object), all held to the same contract suite.
 */
export interface Coordinator {
  /**
   * Stores a registration with its initial state unless the trace exists; compares
   * parameters when it does. `lastCallStartMs`, when given, is recorded as the start
   * of the previous call, so that re-asserting a trace the store lost keeps the
   * spacing to calls made before the loss.
   */
  register(reg: BindRegistration, initial: BindState, lastCallStartMs?: number): Promise<RegisterResult>;
  getRegistration(traceId: string): Promise<BindRegistration | null>;
  getState(traceId: string): Promise<BindState | null>;
  /**
   * Atomically replaces the state with `mutate(current)`; when the version grows the
   * new state is published to every subscriber on every instance. Resolves to the
   * stored state afterwards, or `null` for an unknown trace. `mutate` may run more
   * than once (optimistic engines retry a lost race), so it must be pure.
   */
  updateState(traceId: string, mutate: (current: BindState) => BindState): Promise<BindState | null>;
  /**
   * Delivers published states of the trace. Resolves once the subscription is live,
   * so a read of stored state afterwards cannot miss a change in between. After a
   * reconnect an engine re-delivers the stored state, so a listener may see a version
   * twice (or skip ones superseded meanwhile) and must keep only newer versions.
   */
  subscribe(traceId: string, listener: (state: BindState) => void): Promise<Unsubscribe>;

  /** Declares that `instanceId` wants the trace polled until `untilMs` (never shortens it). */
  setInterest(traceId: string, instanceId: string, untilMs: number): Promise<void>;
  /** Whether any instance wants the trace polled at `nowMs`. */
  hasInterest(traceId: string, nowMs: number): Promise<boolean>;

  /** Poll leadership: a token when this caller now holds the trace's lease, else `null`. */
  acquireLease(traceId: string, ttlMs: number): Promise<string | null>;
  /** Extends the lease only while `token` still holds it. */
  renewLease(traceId: string, token: string, ttlMs: number): Promise<boolean>;
  /**
   * Gives the lease up only while `token` still holds it, and then re-publishes the
   * current state so that other instances waiting for the lease try at once.
   */
  releaseLease(traceId: string, token: string): Promise<void>;
  /**
   * Records the start of a call when `token` holds the lease and the previous call
   * (by any holder) started at least `minGapMs` before `nowMs`.
   */
  beginCall(traceId: string, token: string, nowMs: number, minGapMs: number): Promise<CallGate>;

  /** Takes one call from the deployment-wide budget (UPSTREAM_QPS), unless a ban is in force. */
  takeCallPermit(nowMs: number): Promise<Permit>;
  /** Holds every caller of the deployment off until `untilMs` (a TOP rate-limit ban). */
  banUpstream(untilMs: number): Promise<void>;

  /**
   * Takes one registration from `key`'s quota (REGISTRATIONS_PER_MINUTE), counted for the
   * whole deployment on the store's clock: a bucket of `perMinute` that refills at
   * `perMinute` a minute.
   */
  takeRegistration(key: string, perMinute: number): Promise<QuotaTake>;
  /** Gives back a registration taken for a trace that turned out to be registered already. */
  refundRegistration(key: string, perMinute: number): Promise<void>;

  /** False while the backing store is unreachable (`/readyz`). */
  isReady(): Promise<boolean>;
  close(): Promise<void>;
}

/** Raised by a coordinator whose backing store cannot be reached; the API answers 503. */
export class CoordinatorUnavailableError extends Error {
  override readonly name = "CoordinatorUnavailableError";
}
