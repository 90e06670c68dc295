import type { Context } from "hono";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { sleep } from "../watch/sleep.js";
import {
  answerStep,
  banFailure,
  type CheckFailure,
  checkRequest,
  createEagleEyeIds,
  errorEnvelope,
  newRequestId,
  type RejectReason,
  readParams,
} from "./gateway-protocol.js";
import {
  DEFAULT_TRACE_SCRIPT,
  normalizeScript,
  type ScriptStep,
  type ScriptStepKind,
  stepAt,
  type TraceScript,
  type TraceScriptInput,
} from "./scripts.js";

/*
 * A TOP gateway double for `alibaba.ailabs.iot.device.inside.checkbind.invoke`.
 *
 * It checks a request the way the real gateway does (SPEC §2) and answers TOP
 * envelopes, scripted per trace_id. It serves simulator mode (the product's own TOP
 * client talks to it over real HTTP) and the integration tests (it records every
 * call, its timing and the concurrency per trace). What it checks and answers is in
 * gateway-protocol.ts, the scripts it plays in scripts.ts.
 */

export const DEFAULT_MAX_SKEW_MS = 10 * 60 * 1000;
const DEFAULT_MAX_TRACES = 10_000;
const DEFAULT_MAX_LOGGED_CALLS = 1_000;
const MAX_BODY_BYTES = 64 * 1024;

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
      const completed = await sleep(step.delayMs, c.req.raw.signal).then(
        () => true,
        () => false,
      );
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
