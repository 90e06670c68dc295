import type { Context } from "hono";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { CHECKBIND_METHOD } from "../top/client.js";
import { isSignMethod, signTopParams } from "../top/sign.js";
import { parseTopTimestamp } from "../top/timestamp.js";

/*
 * A TOP gateway double for `alibaba.ailabs.iot.device.inside.checkbind.invoke`.
 *
 * It checks a request the way the real gateway does (SPEC §2) and answers TOP
 * envelopes, scripted per trace_id. It serves simulator mode (the product's own TOP
 * client talks to it over real HTTP) and the integration tests (it records every
 * call, its timing and the concurrency per trace).
 *
 * Error codes follow TOP's published platform error list (codes below 100):
 *   7  App Call Limited           (a scripted or still running ban)
 *   9  Http Action Not Allowed    (not POST)
 *   15 Remote Service Error       (scripted `isp_error`, sub_code isp.remote-service-error)
 *   21 Missing Method             22 Invalid Method
 *   23 Invalid Format             (format other than json)
 *   24 Missing Signature          25 Invalid Signature (also an unknown sign_method)
 *   28 Missing App Key            29 Invalid App Key
 *   30 Missing Timestamp          31 Invalid Timestamp (unparsable, or more than maxSkewMs away)
 *   32 Missing Version            34 Unsupported Version (v other than 2.0)
 *   40 Missing required arguments:<name>   sub_code isv.missing-parameter:<name>
 *   41 Invalid arguments:<name>            sub_code isv.invalid-parameter:<name> (`params` not JSON)
 *   43 Parameter Error            (body not application/x-www-form-urlencoded; our choice —
 *                                  the real gateway would see no parameters at all)
 * The list puts "Missing Required Arguments" at 40 and "Invalid Arguments" at 41; live
 * gateways answer `{"code":40,"msg":"Missing required arguments:<name>"}`, so that is used.
 */

/** The response key TOP derives from the method name: dots become underscores. */
export const CHECKBIND_RESPONSE_KEY = `${CHECKBIND_METHOD.replaceAll(".", "_")}_response`;

export const DEFAULT_MAX_SKEW_MS = 10 * 60 * 1000;
const DEFAULT_MAX_TRACES = 10_000;
const DEFAULT_MAX_LOGGED_CALLS = 1_000;
const MAX_BODY_BYTES = 64 * 1024;
const REQUIRED_BUSINESS_PARAMS = ["open_id", "product_key", "trace_id", "user_type"] as const;

interface StepTiming {
  /** Hold the answer this long; the request's abort signal ends the wait early. */
  readonly delayMs?: number;
}

/** One scripted answer of the gateway. */
export type ScriptStep = StepTiming &
  (
    | { readonly kind: "pending" }
    | { readonly kind: "bound" }
    | { readonly kind: "not_ok"; readonly retCode: number; readonly message: string }
    | { readonly kind: "http_error"; readonly status: number }
    | { readonly kind: "garbage" }
    | { readonly kind: "isp_error" }
    | { readonly kind: "reject"; readonly code: number; readonly subCode?: string; readonly msg?: string }
    | { readonly kind: "ban"; readonly seconds: number }
  );

export type ScriptStepKind = ScriptStep["kind"];

/**
 * A trace's answers: `steps` are consumed one per checkbind call, then `thereafter`
 * answers every further call (default `pending`). `label` describes it for people.
 * (Not `then`: an object with a `then` property looks like a thenable.)
 */
export interface TraceScript {
  readonly steps: readonly ScriptStep[];
  readonly thereafter?: ScriptStep;
  readonly label?: string;
}

/** Either a full script or just its steps (then `pending` forever). */
export type TraceScriptInput = TraceScript | readonly ScriptStep[];

export type RejectReason =
  | "http_method"
  | "content_type"
  | "missing_method"
  | "invalid_method"
  | "missing_app_key"
  | "invalid_app_key"
  | "missing_timestamp"
  | "invalid_timestamp"
  | "missing_version"
  | "invalid_version"
  | "invalid_format"
  | "invalid_sign_method"
  | "missing_signature"
  | "invalid_signature"
  | "missing_parameter"
  | "invalid_parameter"
  | "banned";

export type CallOutcome = ScriptStepKind | "aborted";

/** One checkbind call that passed every check. Times come from the simulator's `now()`. */
export interface SimCallRecord {
  /** 1-based position among this trace's calls. */
  readonly seq: number;
  readonly startedAt: number;
  /** `null` while the call is in flight. */
  readonly endedAt: number | null;
  /** The step that answered it (or will, while it is delayed). */
  readonly step: ScriptStep;
  /** The step's kind once answered, `aborted` when the client went away first; `null` in flight. */
  readonly outcome: CallOutcome | null;
  readonly requestId: string;
  /** The gateway's tracing id of this call; success answers carry it as `trace_id` (see {@link createEagleEyeIds}). */
  readonly eagleeyeId: string;
  /** Every parameter received, system and business. */
  readonly params: Readonly<Record<string, string>>;
}

export interface SimTraceReport {
  readonly traceId: string;
  /** False when the default script applies. */
  readonly scripted: boolean;
  readonly script: TraceScript;
  readonly callCount: number;
  /** Calls consumed of the current script (setScript restarts it at 0). */
  readonly stepIndex: number;
  /** The step the next call will get. */
  readonly nextStep: ScriptStep;
  readonly inFlight: number;
  /** Highest number of this trace's calls ever in flight at once: 1 means single flight held. */
  readonly maxInFlight: number;
  /** Smallest gap between two consecutive call starts; `null` before the second call. */
  readonly minStartGapMs: number | null;
  /** The most recent calls, oldest first (the log keeps the last 1000). */
  readonly calls: readonly SimCallRecord[];
}

export interface SimStats {
  /** Every request that reached the gateway route. */
  readonly requests: number;
  /** Requests that passed every check and were answered from a script. */
  readonly checkbindCalls: number;
  readonly rejectedTotal: number;
  readonly rejected: Readonly<Partial<Record<RejectReason, number>>>;
  /** Checkbind calls by how they were answered. */
  readonly outcomes: Readonly<Partial<Record<CallOutcome, number>>>;
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** Highest concurrency any single trace ever saw. */
  readonly maxInFlightPerTrace: number;
  readonly traces: number;
  /** Epoch ms until which the app key is banned, or `null`. */
  readonly bannedUntil: number | null;
}

export interface TopSimulatorOptions {
  readonly appKey: string;
  readonly appSecret: string;
  /** Epoch milliseconds; the clock for timestamps, bans and the call log. */
  readonly now?: () => number;
  /** Largest accepted distance between `timestamp` and now (default 10 minutes, as TOP). */
  readonly maxSkewMs?: number;
  /** Applies to every trace without its own script (default: bound after 3 pending polls). */
  readonly defaultScript?: TraceScriptInput;
  /**
   * A `ban` step bans the whole app key for its length, as TOP does: calls in that
   * window get code 7 and count as rejected `banned`, not as checkbind calls. Default true.
   */
  readonly enforceBans?: boolean;
  /** Traces remembered at most; the oldest are forgotten first (default 10000). */
  readonly maxTraces?: number;
}

export interface TopSimulator {
  /** The gateway: `POST /router/rest` (and `POST /`). */
  readonly fetch: (req: Request) => Promise<Response>;
  /** The gateway's answer to a request whatever its path, for mounting it elsewhere (the sandbox, /sim/router/rest). */
  readonly gateway: (req: Request) => Promise<Response>;
  /** Scripts a trace; its step cursor restarts at the first step. */
  setScript(traceId: string, script: TraceScriptInput): void;
  /** Returns a trace to the default script. */
  clearScript(traceId: string): void;
  getTrace(traceId: string): SimTraceReport;
  stats(): SimStats;
  /** Forgets every script, trace, counter and ban. */
  reset(): void;
}

/** Steps: `n` pending answers, then bound for good. `scriptBoundAfter(0)` binds at once. */
export function scriptBoundAfter(n: number): TraceScript {
  return {
    steps: repeat({ kind: "pending" }, n),
    thereafter: { kind: "bound" },
    label: `bound after ${n} pending polls`,
  };
}

/** `n` pending answers, then `result=false` with `retCode` / `message` for good. */
export function scriptFailedAfter(n: number, retCode: number, message: string): TraceScript {
  return {
    steps: repeat({ kind: "pending" }, n),
    thereafter: { kind: "not_ok", retCode, message },
    label: `result=false ret_code=${retCode} after ${n} pending polls`,
  };
}

/** `n` pending answers, then an error_response with `code` for good (the request is "wrong"). */
export function scriptRejectedAfter(n: number, code: number, subCode?: string, msg?: string): TraceScript {
  const step: ScriptStep = {
    kind: "reject",
    code,
    ...(subCode === undefined ? {} : { subCode }),
    ...(msg === undefined ? {} : { msg }),
  };
  return {
    steps: repeat({ kind: "pending" }, n),
    thereafter: step,
    label: `rejected with code ${code} after ${n} pending polls`,
  };
}

/**
 * `count` answers of upstream trouble, then `then` (default bound) for good.
 * @example scriptTrouble({ kind: "ban", seconds: 2 }, 1)
 */
export function scriptTrouble(trouble: ScriptStep, count: number, then: ScriptStep = { kind: "bound" }): TraceScript {
  return {
    steps: repeat(trouble, count),
    thereafter: then,
    label: `${describeStep(trouble)} ×${count}, then ${describeStep(then)}`,
  };
}

/** `count` pending answers each held `delayMs`, then `then` (default bound, not delayed). */
export function scriptSlow(delayMs: number, count: number, then: ScriptStep = { kind: "bound" }): TraceScript {
  return scriptTrouble({ kind: "pending", delayMs }, count, then);
}

/** Pending forever: the bind can only expire or be cancelled. */
export function scriptNever(): TraceScript {
  return { steps: [], thereafter: { kind: "pending" }, label: "never binds" };
}

/** The product's default: a trace binds after a few polls. */
export const DEFAULT_TRACE_SCRIPT: TraceScript = scriptBoundAfter(3);

/** One-line description of a step, e.g. `http_error 503 (+2000 ms)`. */
export function describeStep(step: ScriptStep): string {
  let text: string;
  switch (step.kind) {
    case "not_ok":
      text = `not_ok ret_code=${step.retCode}${step.message ? ` "${step.message}"` : ""}`;
      break;
    case "http_error":
      text = `http_error ${step.status}`;
      break;
    case "reject":
      text = `reject code=${step.code}${step.subCode ? ` ${step.subCode}` : ""}`;
      break;
    case "ban":
      text = `ban ${step.seconds}s`;
      break;
    default:
      text = step.kind;
  }
  return step.delayMs ? `${text} (+${step.delayMs} ms)` : text;
}

/**
 * Creates the simulated TOP gateway.
 * @example
 * const sim = createTopSimulator({ appKey: "12345678", appSecret: "s3cret" });
 * sim.setScript("t-1", scriptFailedAfter(2, 1001, "device offline"));
 * serve({ fetch: sim.fetch, port: 0 });
 */
export function createTopSimulator(opts: TopSimulatorOptions): TopSimulator {
  const now = opts.now ?? Date.now;
  const maxSkewMs = opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  const defaultScript = normalizeScript(opts.defaultScript ?? DEFAULT_TRACE_SCRIPT);
  const enforceBans = opts.enforceBans ?? true;
  const maxTraces = opts.maxTraces ?? DEFAULT_MAX_TRACES;
  const newEagleEyeId = createEagleEyeIds(now);

  let traces = new Map<string, TraceRecord>();
  let counters = newCounters();

  function traceRecord(traceId: string): TraceRecord {
    let rec = traces.get(traceId);
    if (!rec) {
      rec = newTraceRecord();
      traces.set(traceId, rec);
      // Map keeps insertion order, so the first key is the oldest trace.
      while (traces.size > maxTraces) {
        const oldest = traces.keys().next();
        if (oldest.done) break;
        traces.delete(oldest.value);
      }
    }
    return rec;
  }

  function scriptOf(rec: TraceRecord): TraceScript {
    return rec.script ?? defaultScript;
  }

  function stepAt(script: TraceScript, index: number): ScriptStep {
    return script.steps[index] ?? script.thereafter ?? PENDING;
  }

  function reject(failure: CheckFailure): Response {
    counters.rejectedTotal++;
    counters.rejected[failure.reason] = (counters.rejected[failure.reason] ?? 0) + 1;
    return errorEnvelope(failure.code, failure.msg, failure.subCode, failure.subMsg);
  }

  async function handleGateway(c: Context): Promise<Response> {
    counters.requests++;
    const contentType = c.req.header("content-type") ?? "";
    if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType)) {
      return reject({
        reason: "content_type",
        code: 43,
        msg: "Parameter Error",
        subMsg: "the body must be application/x-www-form-urlencoded",
      });
    }
    const params = await readParams(c);
    const failure = checkRequest(params, opts.appKey, opts.appSecret, now(), maxSkewMs);
    if (failure) return reject(failure);

    const startedAt = now();
    if (enforceBans && counters.bannedUntil !== null && startedAt < counters.bannedUntil) {
      return reject(banFailure(Math.ceil((counters.bannedUntil - startedAt) / 1000)));
    }

    // Every check passed: from here on this is a checkbind call of its trace.
    const traceId = params.trace_id as string;
    const rec = traceRecord(traceId);
    const step = stepAt(scriptOf(rec), rec.callCount - rec.scriptFrom);
    const call: MutableCall = {
      seq: rec.callCount + 1,
      startedAt,
      endedAt: null,
      step,
      outcome: null,
      requestId: newRequestId(),
      eagleeyeId: newEagleEyeId(),
      params,
    };
    rec.callCount++;
    rec.calls.push(call);
    if (rec.calls.length > DEFAULT_MAX_LOGGED_CALLS) rec.calls.shift();
    if (rec.lastStartAt !== null) {
      const gap = startedAt - rec.lastStartAt;
      rec.minStartGapMs = rec.minStartGapMs === null ? gap : Math.min(rec.minStartGapMs, gap);
    }
    rec.lastStartAt = startedAt;
    rec.inFlight++;
    rec.maxInFlight = Math.max(rec.maxInFlight, rec.inFlight);
    counters.checkbindCalls++;
    counters.inFlight++;
    counters.maxInFlight = Math.max(counters.maxInFlight, counters.inFlight);
    counters.maxInFlightPerTrace = Math.max(counters.maxInFlightPerTrace, rec.maxInFlight);

    const finish = (outcome: CallOutcome): void => {
      call.endedAt = now();
      call.outcome = outcome;
      rec.inFlight--;
      counters.inFlight--;
      counters.outcomes[outcome] = (counters.outcomes[outcome] ?? 0) + 1;
    };

    if (step.delayMs !== undefined && step.delayMs > 0) {
      const completed = await sleep(step.delayMs, c.req.raw.signal);
      if (!completed) {
        finish("aborted");
        // Nobody reads this: the client is gone. 499 is nginx's "client closed request".
        return new Response(null, { status: 499 });
      }
    }
    if (step.kind === "ban") counters.bannedUntil = now() + step.seconds * 1000;
    finish(step.kind);
    return answerStep(step, call);
  }

  const gateway = new Hono();
  gateway.post(
    "*",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => errorEnvelope(43, "Parameter Error", undefined, "request body too large"),
    }),
    handleGateway,
  );
  gateway.all("*", () => {
    counters.requests++;
    return reject({ reason: "http_method", code: 9, msg: "Http Action Not Allowed" });
  });
  gateway.onError(() => errorEnvelope(10, "Service Currently Unavailable", "isp.unknown-error"));

  const app = new Hono();
  app.all("/router/rest", (c) => gateway.fetch(c.req.raw));
  app.post("/", (c) => gateway.fetch(c.req.raw));
  app.notFound(() => new Response("Not Found", { status: 404 }));

  return {
    fetch: async (req) => app.fetch(req),
    gateway: async (req) => gateway.fetch(req),
    setScript(traceId, script) {
      const rec = traceRecord(traceId);
      rec.script = normalizeScript(script);
      rec.scriptFrom = rec.callCount;
    },
    clearScript(traceId) {
      const rec = traces.get(traceId);
      if (!rec) return;
      rec.script = null;
      rec.scriptFrom = rec.callCount;
    },
    getTrace(traceId) {
      const rec = traces.get(traceId) ?? newTraceRecord();
      const script = scriptOf(rec);
      const stepIndex = rec.callCount - rec.scriptFrom;
      return {
        traceId,
        scripted: rec.script !== null,
        script,
        callCount: rec.callCount,
        stepIndex,
        nextStep: stepAt(script, stepIndex),
        inFlight: rec.inFlight,
        maxInFlight: rec.maxInFlight,
        minStartGapMs: rec.minStartGapMs,
        calls: rec.calls.map((call) => ({ ...call })),
      };
    },
    stats() {
      return {
        requests: counters.requests,
        checkbindCalls: counters.checkbindCalls,
        rejectedTotal: counters.rejectedTotal,
        rejected: { ...counters.rejected },
        outcomes: { ...counters.outcomes },
        inFlight: counters.inFlight,
        maxInFlight: counters.maxInFlight,
        maxInFlightPerTrace: counters.maxInFlightPerTrace,
        traces: traces.size,
        bannedUntil: counters.bannedUntil,
      };
    },
    reset() {
      traces = new Map();
      counters = newCounters();
    },
  };
}

const PENDING: ScriptStep = { kind: "pending" };

interface MutableCall {
  seq: number;
  startedAt: number;
  endedAt: number | null;
  step: ScriptStep;
  outcome: CallOutcome | null;
  requestId: string;
  eagleeyeId: string;
  params: Readonly<Record<string, string>>;
}

interface TraceRecord {
  script: TraceScript | null;
  /** callCount when the script was set: the step index is counted from there. */
  scriptFrom: number;
  callCount: number;
  calls: MutableCall[];
  inFlight: number;
  maxInFlight: number;
  lastStartAt: number | null;
  minStartGapMs: number | null;
}

function newTraceRecord(): TraceRecord {
  return {
    script: null,
    scriptFrom: 0,
    callCount: 0,
    calls: [],
    inFlight: 0,
    maxInFlight: 0,
    lastStartAt: null,
    minStartGapMs: null,
  };
}

interface Counters {
  requests: number;
  checkbindCalls: number;
  rejectedTotal: number;
  rejected: Partial<Record<RejectReason, number>>;
  outcomes: Partial<Record<CallOutcome, number>>;
  inFlight: number;
  maxInFlight: number;
  maxInFlightPerTrace: number;
  bannedUntil: number | null;
}

function newCounters(): Counters {
  return {
    requests: 0,
    checkbindCalls: 0,
    rejectedTotal: 0,
    rejected: {},
    outcomes: {},
    inFlight: 0,
    maxInFlight: 0,
    maxInFlightPerTrace: 0,
    bannedUntil: null,
  };
}

interface CheckFailure {
  readonly reason: RejectReason;
  readonly code: number;
  readonly msg: string;
  readonly subCode?: string;
  readonly subMsg?: string;
}

function repeat(step: ScriptStep, n: number): ScriptStep[] {
  return Array.from({ length: Math.max(0, Math.trunc(n)) }, () => step);
}

function normalizeScript(input: TraceScriptInput): TraceScript {
  return isStepList(input) ? { steps: [...input] } : input;
}

function isStepList(input: TraceScriptInput): input is readonly ScriptStep[] {
  return Array.isArray(input);
}

/** System parameters may come in the query string (as TOP SDKs send them) or the body; the body wins. */
async function readParams(c: Context): Promise<Record<string, string>> {
  const merged = new Map<string, string>();
  for (const [key, value] of new URL(c.req.url).searchParams) if (!merged.has(key)) merged.set(key, value);
  const body = new URLSearchParams(await c.req.text());
  const seen = new Set<string>();
  for (const [key, value] of body) {
    if (seen.has(key)) continue;
    seen.add(key);
    merged.set(key, value);
  }
  // fromEntries defines own properties, so a `__proto__` key stays an ordinary key.
  return Object.fromEntries(merged);
}

/** The gateway's checks, in the order the real one reports them. */
function checkRequest(
  p: Readonly<Record<string, string>>,
  appKey: string,
  appSecret: string,
  nowMs: number,
  maxSkewMs: number,
): CheckFailure | null {
  const has = (name: string): boolean => p[name] !== undefined && p[name] !== "";

  if (!has("method")) return { reason: "missing_method", code: 21, msg: "Missing Method" };
  if (p.method !== CHECKBIND_METHOD) return { reason: "invalid_method", code: 22, msg: "Invalid Method" };
  if (!has("app_key")) return { reason: "missing_app_key", code: 28, msg: "Missing App Key" };
  if (p.app_key !== appKey) return { reason: "invalid_app_key", code: 29, msg: "Invalid App Key" };
  if (!has("timestamp")) return { reason: "missing_timestamp", code: 30, msg: "Missing Timestamp" };
  const at = parseTopTimestamp(p.timestamp ?? "");
  if (at === null) {
    return {
      reason: "invalid_timestamp",
      code: 31,
      msg: "Invalid Timestamp",
      subMsg: "timestamp must be yyyy-MM-dd HH:mm:ss in GMT+8",
    };
  }
  if (Math.abs(at.getTime() - nowMs) > maxSkewMs) {
    return {
      reason: "invalid_timestamp",
      code: 31,
      msg: "Invalid Timestamp",
      subMsg: `timestamp is more than ${Math.round(maxSkewMs / 60_000)} minutes away from the server time`,
    };
  }
  if (!has("v")) return { reason: "missing_version", code: 32, msg: "Missing Version" };
  if (p.v !== "2.0") return { reason: "invalid_version", code: 34, msg: "Unsupported Version" };
  if (has("format") && p.format !== "json") {
    return { reason: "invalid_format", code: 23, msg: "Invalid Format", subMsg: "this gateway answers json only" };
  }
  const signMethod = p.sign_method ?? "";
  if (!isSignMethod(signMethod)) {
    return {
      reason: "invalid_sign_method",
      code: 25,
      msg: "Invalid Signature",
      subMsg: "sign_method must be md5, hmac or hmac-sha256",
    };
  }
  if (!has("sign")) return { reason: "missing_signature", code: 24, msg: "Missing Signature" };
  if (p.sign !== signTopParams(p, appSecret, signMethod)) {
    return { reason: "invalid_signature", code: 25, msg: "Invalid Signature" };
  }
  for (const name of REQUIRED_BUSINESS_PARAMS) {
    if (!has(name)) {
      return {
        reason: "missing_parameter",
        code: 40,
        msg: `Missing required arguments:${name}`,
        subCode: `isv.missing-parameter:${name}`,
        subMsg: `${name} is required`,
      };
    }
  }
  if (p.params !== undefined && p.params !== "" && !isJsonText(p.params)) {
    return {
      reason: "invalid_parameter",
      code: 41,
      msg: "Invalid arguments:params",
      subCode: "isv.invalid-parameter:params",
      subMsg: "params must be JSON text",
    };
  }
  return null;
}

function isJsonText(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function banFailure(seconds: number): CheckFailure {
  return {
    reason: "banned",
    code: 7,
    msg: "App Call Limited",
    subCode: "accesscontrol.limited-by-app-access-count",
    subMsg: `This ban will last for ${seconds} more seconds`,
  };
}

function answerStep(step: ScriptStep, call: CallIds): Response {
  const { requestId } = call;
  switch (step.kind) {
    case "pending":
      return successEnvelope({ result: true, ret_value: false, ret_code: 0, message: "" }, call);
    case "bound":
      return successEnvelope({ result: true, ret_value: true, ret_code: 0, message: "" }, call);
    case "not_ok":
      return successEnvelope({ result: false, ret_value: false, ret_code: step.retCode, message: step.message }, call);
    case "http_error":
      return new Response(`<html><body><h1>${step.status}</h1>simulated upstream error</body></html>`, {
        status: step.status,
        headers: { "content-type": "text/html;charset=UTF-8" },
      });
    case "garbage":
      return new Response("<html><body>502 Bad Gateway (simulated)</body>", {
        status: 200,
        headers: { "content-type": "text/html;charset=UTF-8" },
      });
    case "isp_error":
      return errorEnvelope(
        15,
        "Remote service error",
        "isp.remote-service-error",
        "simulated backend fault",
        requestId,
      );
    case "reject":
      return errorEnvelope(step.code, step.msg ?? "Remote service error", step.subCode, undefined, requestId);
    case "ban": {
      const f = banFailure(step.seconds);
      return errorEnvelope(f.code, f.msg, f.subCode, f.subMsg, requestId);
    }
  }
}

interface CheckbindFields {
  readonly result: boolean;
  readonly ret_value: boolean;
  readonly ret_code: number;
  readonly message: string;
}

type CallIds = Pick<SimCallRecord, "requestId" | "eagleeyeId">;

/** Like TOP's, the answer's `trace_id` is the gateway's EagleEye id, not the request's trace_id. */
function successEnvelope(fields: CheckbindFields, call: CallIds): Response {
  return jsonResponse({
    [CHECKBIND_RESPONSE_KEY]: { ...fields, trace_id: call.eagleeyeId, request_id: call.requestId },
  });
}

function errorEnvelope(
  code: number,
  msg: string,
  subCode?: string,
  subMsg?: string,
  requestId: string = newRequestId(),
): Response {
  return jsonResponse({
    error_response: {
      code,
      msg,
      ...(subCode === undefined ? {} : { sub_code: subCode }),
      ...(subMsg === undefined ? {} : { sub_msg: subMsg }),
      request_id: requestId,
    },
  });
}

/** TOP answers errors with HTTP 200 too; only the envelope tells them apart. */
function jsonResponse(body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status: 200,
    headers: { "content-type": "application/json;charset=UTF-8" },
  });
}

const REQUEST_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** TOP request ids look like `zt9pqaglr3tk`: a dozen lower-case base-36 characters. */
function newRequestId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(13));
  let id = "";
  for (const b of bytes) id += REQUEST_ID_ALPHABET[b % REQUEST_ID_ALPHABET.length];
  return id;
}

/**
 * EagleEye (鹰眼) ids as TOP's gateway writes them into an answer's `trace_id`, 30
 * characters like `213cbe9116665898268912730d06de`: the gateway host's IPv4 address in 8
 * hex digits, the call's epoch milliseconds in 13 digits, a 4-digit sequence (1000–9999,
 * wrapping) and `d` with 4 hex digits of the process. This simulator is a host with a
 * random 11.x.x.x address (the range EagleEye ids of Alibaba's gateways often start
 * with, `0b…`) and a random process number, both fixed for its life; the sequence makes
 * every id distinct.
 * @example createEagleEyeIds(Date.now)() // "0b5a1c3f17646042271211000d4e2a"
 */
export function createEagleEyeIds(now: () => number): () => string {
  const [a = 0, b = 0, c = 0, p = 0, q = 0] = crypto.getRandomValues(new Uint8Array(5));
  const host = [11, a, b, c].map((n) => n.toString(16).padStart(2, "0")).join("");
  const pid = ((p << 8) | q).toString(16).padStart(4, "0");
  let sequence = 1000;
  return () => {
    const id = `${host}${String(Math.trunc(now())).padStart(13, "0")}${sequence}d${pid}`;
    sequence = sequence === 9999 ? 1000 : sequence + 1;
    return id;
  };
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
