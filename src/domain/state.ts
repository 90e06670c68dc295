import type { BindError, BindRegistration, BindState, BindStatus, FinalStatus, UpstreamInfo } from "./bind.js";
import { isFinalStatus } from "./bind.js";
import type { CheckbindOutcome } from "./outcome.js";

/** The last instants formatted, one per kind of use: registrations arrive many to a millisecond. */
const isoCache = { created: { ms: Number.NaN, text: "" }, expires: { ms: Number.NaN, text: "" } };

function isoOf(ms: number, slot: { ms: number; text: string }): string {
  if (slot.ms !== ms) {
    slot.text = new Date(ms).toISOString();
    slot.ms = ms;
  }
  return slot.text;
}

/** The state of a freshly registered trace: pending, version 1, no answer yet. */
export function createInitialState(reg: BindRegistration, now: number, timeoutMs: number): BindState {
  const at = isoOf(now, isoCache.created);
  return {
    trace_id: reg.trace_id,
    status: "pending",
    final: false,
    version: 1,
    attempts: 0,
    created_at: at,
    updated_at: at,
    expires_at: isoOf(now + timeoutMs, isoCache.expires),
    upstream: null,
    error: null,
  };
}

function sameError(a: BindError | null, b: BindError | null): boolean {
  return a === b || (a !== null && b !== null && a.code === b.code && a.message === b.message);
}

/**
 * The version grows with a change of status, error, or the upstream's ret_code or
 * message (SPEC §3); attempts, updated_at, request_id and eagleeye_id refresh without one
 * (both ids are new with every answer).
 */
function isVersionedChange(prev: BindState, next: Omit<BindState, "version">): boolean {
  return (
    prev.status !== next.status ||
    !sameError(prev.error, next.error) ||
    (prev.upstream?.ret_code ?? null) !== (next.upstream?.ret_code ?? null) ||
    (prev.upstream?.message ?? null) !== (next.upstream?.message ?? null)
  );
}

function withChanges(
  prev: BindState,
  changes: { status?: BindStatus; upstream?: UpstreamInfo | null; error?: BindError | null; attempted?: boolean },
  now: number,
): BindState {
  const status = changes.status ?? prev.status;
  const next = {
    ...prev,
    status,
    final: isFinalStatus(status),
    attempts: prev.attempts + (changes.attempted ? 1 : 0),
    updated_at: new Date(now).toISOString(),
    upstream: changes.upstream === undefined ? prev.upstream : changes.upstream,
    error: changes.error === undefined ? prev.error : changes.error,
  };
  return { ...next, version: prev.version + (isVersionedChange(prev, next) ? 1 : 0) };
}

/** Applies one checkbind answer to a pending state. A final state never changes. */
export function applyOutcome(prev: BindState, outcome: CheckbindOutcome, now: number): BindState {
  if (prev.final) return prev;
  switch (outcome.kind) {
    case "bound":
      return withChanges(prev, { status: "bound", upstream: outcome.upstream, error: null, attempted: true }, now);
    case "waiting":
      return withChanges(prev, { upstream: outcome.upstream, error: null, attempted: true }, now);
    case "failed":
      return withChanges(prev, { status: "failed", upstream: outcome.upstream, error: null, attempted: true }, now);
    case "rejected":
      return withChanges(
        prev,
        { status: "failed", error: { code: "upstream_rejected", message: outcome.message }, attempted: true },
        now,
      );
    case "rate_limited":
      return withChanges(prev, { error: { code: "rate_limited", message: outcome.message }, attempted: true }, now);
    case "transient":
      return withChanges(
        prev,
        { error: { code: "upstream_unavailable", message: outcome.message }, attempted: true },
        now,
      );
  }
}

/** Ends a pending state without an upstream answer: deadline passed or cancelled by DELETE. */
export function finishState(
  prev: BindState,
  status: Extract<FinalStatus, "expired" | "cancelled">,
  now: number,
): BindState {
  if (prev.final) return prev;
  return withChanges(prev, { status }, now);
}

export function deadlineOf(state: BindState): number {
  return Date.parse(state.expires_at);
}

/** Two registrations are the same attempt when every parameter matches (POST is idempotent). */
export function isSameRegistration(a: BindRegistration, b: BindRegistration): boolean {
  return registrationText(a) === registrationText(b);
}

/** Every field of a registration, sorted as canonicalJson sorts object keys. */
const REGISTRATION_KEYS = [
  "callback_url",
  "device_name",
  "iot_id",
  "open_id",
  "params",
  "product_key",
  "server_event_request_id",
  "trace_id",
  "user_type",
] as const satisfies readonly (keyof BindRegistration)[];
// A field added to BindRegistration and not to the list above fails to compile here.
const everyRegistrationKey: Record<Exclude<keyof BindRegistration, (typeof REGISTRATION_KEYS)[number]>, never> = {};
void everyRegistrationKey;

/**
 * `canonicalJson(reg)`, the text a registration is stored and compared as, written over
 * its known fields in their sorted order: the generic walk's key listing and sort were
 * most of its cost on every POST (profiled).
 */
export function registrationText(reg: BindRegistration): string {
  return canonicalObject(reg, REGISTRATION_KEYS);
}

/**
 * JSON with object keys sorted, so equal values give equal text whatever the key order:
 * JSON.stringify's text for values parsed from JSON. Built by hand rather than with a
 * JSON.stringify replacer that rebuilds every object sorted, which took twice as long.
 */
export function canonicalJson(value: unknown): string {
  return canonical(value) ?? "null";
}

function canonical(value: unknown): string | undefined {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v: unknown) => canonical(v) ?? "null").join(",")}]`;
  return canonicalObject(value, Object.keys(value).sort());
}

/** An object's JSON text with its keys in the order given (sorted), skipping what JSON skips. */
function canonicalObject(value: object, sortedKeys: readonly string[]): string {
  let out = "";
  for (const key of sortedKeys) {
    const text = canonical((value as Record<string, unknown>)[key]);
    if (text !== undefined) out += `${out ? "," : ""}${JSON.stringify(key)}:${text}`;
  }
  return `{${out}}`;
}
