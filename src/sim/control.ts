import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { TRACE_ID_PATTERN } from "../domain/bind.js";
import type { SimTraceReport, TopSimulator } from "./gateway.js";
import {
  describeStep,
  type ScriptStep,
  scriptBoundAfter,
  scriptFailedAfter,
  scriptNever,
  scriptRejectedAfter,
  scriptSlow,
  scriptTrouble,
  type TraceScript,
} from "./scripts.js";

/*
 * The JSON forms a person (or the demo page) scripts a trace with. `after` and
 * `count` are numbers of checkbind calls; `after: 3` means three pending answers,
 * then the outcome from the fourth call on.
 *
 *   {"outcome":"bound","after":3}
 *   {"outcome":"failed","after":2,"ret_code":1001,"message":"device offline"}
 *   {"outcome":"rejected","after":0,"code":11,"sub_code":"isv.permission-api-package-limit","msg":"…"}
 *   {"outcome":"trouble","kind":"http_error"|"isp_error"|"garbage"|"ban","count":3,"then":"bound"|"pending",
 *    "status":503 (http_error only),"ban_seconds":2 (ban only)}
 *   {"outcome":"slow","delay_ms":3000,"count":3,"then":"bound"|"pending"}
 *   {"outcome":"never"}
 */

export const SCRIPT_OUTCOMES = ["bound", "failed", "rejected", "trouble", "slow", "never"] as const;
export type ScriptOutcome = (typeof SCRIPT_OUTCOMES)[number];
export const TROUBLE_KINDS = ["http_error", "isp_error", "garbage", "ban"] as const;
export type TroubleKind = (typeof TROUBLE_KINDS)[number];

const THEN_STEPS = ["bound", "pending"] as const;
const MAX_CALLS = 1000;
const MAX_DELAY_MS = 120_000;
const MAX_TEXT = 256;
const MAX_BODY_BYTES = 16 * 1024;
const CALLS_SHOWN = 200;

export type ScriptSpecResult =
  | { readonly ok: true; readonly script: TraceScript }
  | { readonly ok: false; readonly field?: string; readonly message: string };

class SpecError extends Error {
  override readonly name = "SpecError";
  constructor(
    readonly field: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Turns a script in its JSON form into a TraceScript, or says which field is wrong.
 * @example parseScriptSpec({ outcome: "failed", after: 2, ret_code: 1001 })
 */
export function parseScriptSpec(value: unknown): ScriptSpecResult {
  try {
    return { ok: true, script: buildScript(value) };
  } catch (err) {
    if (err instanceof SpecError) {
      return err.field === undefined
        ? { ok: false, message: err.message }
        : { ok: false, field: err.field, message: err.message };
    }
    throw err;
  }
}

function buildScript(value: unknown): TraceScript {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SpecError(undefined, "the body must be a JSON object");
  }
  const spec = value as Record<string, unknown>;
  const outcome = spec.outcome;
  if (typeof outcome !== "string" || !(SCRIPT_OUTCOMES as readonly string[]).includes(outcome)) {
    throw new SpecError("outcome", `outcome must be one of ${SCRIPT_OUTCOMES.join(", ")}`);
  }
  switch (outcome as ScriptOutcome) {
    case "bound":
      allowOnly(spec, ["after"]);
      return scriptBoundAfter(readInt(spec, "after", 0, MAX_CALLS, 3));
    case "failed":
      allowOnly(spec, ["after", "ret_code", "message"]);
      return scriptFailedAfter(
        readInt(spec, "after", 0, MAX_CALLS, 3),
        readInt(spec, "ret_code", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
        readText(spec, "message", "", true),
      );
    case "rejected":
      allowOnly(spec, ["after", "code", "sub_code", "msg"]);
      return scriptRejectedAfter(
        readInt(spec, "after", 0, MAX_CALLS, 0),
        readInt(spec, "code", 1, 999, 11),
        readText(spec, "sub_code", "isv.permission-api-package-limit"),
        readText(spec, "msg", "Insufficient ISV Permissions"),
      );
    case "trouble": {
      allowOnly(spec, ["kind", "count", "then", "status", "ban_seconds"]);
      const kind = readChoice(spec, "kind", TROUBLE_KINDS);
      if (kind !== "http_error" && spec.status !== undefined) {
        throw new SpecError("status", "status applies to kind http_error only");
      }
      if (kind !== "ban" && spec.ban_seconds !== undefined) {
        throw new SpecError("ban_seconds", "ban_seconds applies to kind ban only");
      }
      const trouble: ScriptStep =
        kind === "http_error"
          ? { kind, status: readInt(spec, "status", 400, 599, 503) }
          : kind === "ban"
            ? { kind, seconds: readInt(spec, "ban_seconds", 1, 3600, 2) }
            : { kind };
      return scriptTrouble(trouble, readInt(spec, "count", 0, MAX_CALLS, 3), readThen(spec));
    }
    case "slow":
      allowOnly(spec, ["delay_ms", "count", "then"]);
      return scriptSlow(
        readInt(spec, "delay_ms", 0, MAX_DELAY_MS),
        readInt(spec, "count", 0, MAX_CALLS, 3),
        readThen(spec),
      );
    case "never":
      allowOnly(spec, []);
      return scriptNever();
  }
}

function allowOnly(spec: Record<string, unknown>, fields: readonly string[]): void {
  for (const key of Object.keys(spec)) {
    if (key !== "outcome" && !fields.includes(key)) {
      throw new SpecError(key, `unknown field for outcome ${String(spec.outcome)}`);
    }
  }
}

function readInt(spec: Record<string, unknown>, field: string, min: number, max: number, fallback?: number): number {
  const v = spec[field];
  if (v === undefined) {
    if (fallback === undefined) throw new SpecError(field, `${field} is required`);
    return fallback;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new SpecError(field, `${field} must be an integer from ${min} to ${max}`);
  }
  return v;
}

function readText(spec: Record<string, unknown>, field: string, fallback: string, allowEmpty = false): string {
  const v = spec[field];
  if (v === undefined) return fallback;
  if (typeof v !== "string" || v.length > MAX_TEXT || (!allowEmpty && v.length === 0)) {
    throw new SpecError(field, `${field} must be a string of ${allowEmpty ? 0 : 1}–${MAX_TEXT} characters`);
  }
  return v;
}

function readChoice<T extends string>(spec: Record<string, unknown>, field: string, choices: readonly T[]): T {
  const v = spec[field];
  if (typeof v !== "string" || !(choices as readonly string[]).includes(v)) {
    throw new SpecError(field, `${field} must be one of ${choices.join(", ")}`);
  }
  return v as T;
}

function readThen(spec: Record<string, unknown>): ScriptStep {
  if (spec.then === undefined) return { kind: "bound" };
  return { kind: readChoice(spec, "then", THEN_STEPS) };
}

/** The trace report as the control API shows it (snake_case, like the rest of the HTTP API). */
export function renderTraceReport(report: SimTraceReport): Record<string, unknown> {
  const calls = report.calls.slice(-CALLS_SHOWN);
  return {
    trace_id: report.traceId,
    scripted: report.scripted,
    script: {
      label: report.script.label ?? null,
      steps: report.script.steps.map(describeStep),
      // biome-ignore lint/suspicious/noThenProperty: the control API's JSON name, as in the script form
      then: describeStep(report.script.thereafter ?? { kind: "pending" }),
    },
    call_count: report.callCount,
    step_index: report.stepIndex,
    next_step: describeStep(report.nextStep),
    in_flight: report.inFlight,
    max_in_flight: report.maxInFlight,
    min_start_gap_ms: report.minStartGapMs,
    calls: calls.map((call) => ({
      seq: call.seq,
      started_at: new Date(call.startedAt).toISOString(),
      ended_at: call.endedAt === null ? null : new Date(call.endedAt).toISOString(),
      duration_ms: call.endedAt === null ? null : call.endedAt - call.startedAt,
      step: describeStep(call.step),
      outcome: call.outcome,
      request_id: call.requestId,
      eagleeye_id: call.eagleeyeId,
    })),
  };
}

function errorBody(code: string, message: string, field?: string): { error: Record<string, string> } {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

/**
 * The simulator's control API, for the demo page and for people with curl, and the
 * gateway itself as a TOP sandbox for other clients; mount it under `/sim`:
 *   POST   /router/rest              the simulated TOP gateway (src/sim/sandbox.ts)
 *   PUT    /traces/:traceId/script   body: a script in its JSON form (see above)
 *   DELETE /traces/:traceId/script   back to the default script
 *   GET    /traces/:traceId          calls so far, script, concurrency
 *   GET    /stats                    gateway totals and rejections by reason
 * @example app.route("/sim", createSimulatorControl(sim));
 */
export function createSimulatorControl(sim: TopSimulator): Hono {
  const app = new Hono();
  const fail = (status: ContentfulStatusCode, code: string, message: string, field?: string): Response =>
    Response.json(errorBody(code, message, field), { status });
  const badTraceId = (): Response =>
    fail(400, "invalid_request", "trace_id must match ^[A-Za-z0-9._-]{1,128}$", "trace_id");

  // The gateway answers as TOP does (HTTP 200 envelopes, code 9 for other methods), not in the control API's style.
  app.all("/router/rest", (c) => sim.gateway(c.req.raw));

  app.put(
    "/traces/:traceId/script",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => fail(413, "payload_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`),
    }),
    async (c) => {
      const traceId = c.req.param("traceId");
      if (!TRACE_ID_PATTERN.test(traceId)) return badTraceId();
      const contentType = c.req.header("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(contentType)) {
        return fail(415, "unsupported_media_type", "the body must be application/json");
      }
      let body: unknown;
      try {
        body = JSON.parse(await c.req.text());
      } catch {
        return fail(400, "invalid_request", "the body is not valid JSON");
      }
      const parsed = parseScriptSpec(body);
      if (!parsed.ok) return fail(400, "invalid_request", parsed.message, parsed.field);
      sim.setScript(traceId, parsed.script);
      return c.json(renderTraceReport(sim.getTrace(traceId)));
    },
  );

  app.delete("/traces/:traceId/script", (c) => {
    const traceId = c.req.param("traceId");
    if (!TRACE_ID_PATTERN.test(traceId)) return badTraceId();
    sim.clearScript(traceId);
    return c.json(renderTraceReport(sim.getTrace(traceId)));
  });

  app.get("/traces/:traceId", (c) => {
    const traceId = c.req.param("traceId");
    if (!TRACE_ID_PATTERN.test(traceId)) return badTraceId();
    c.header("cache-control", "no-store");
    return c.json(renderTraceReport(sim.getTrace(traceId)));
  });

  app.get("/stats", (c) => {
    c.header("cache-control", "no-store");
    return c.json(sim.stats());
  });

  // A mounted sub-app's notFound is not consulted by the parent, so a catch-all route does the job.
  app.all("*", () => fail(404, "not_found", "no such simulator route"));
  app.notFound(() => fail(404, "not_found", "no such simulator route"));
  app.onError(() => fail(500, "internal", "the simulator control failed"));
  return app;
}
