/*
 * The simulated gateway's scripts: what it answers a trace's checkbind calls, one step
 * per call (src/sim/gateway.ts plays them; src/sim/control.ts sets them over HTTP).
 */

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

const PENDING: ScriptStep = { kind: "pending" };

/** The step that answers a script's call number `index` (0-based). */
export function stepAt(script: TraceScript, index: number): ScriptStep {
  return script.steps[index] ?? script.thereafter ?? PENDING;
}

function repeat(step: ScriptStep, n: number): ScriptStep[] {
  return Array.from({ length: Math.max(0, Math.trunc(n)) }, () => step);
}

export function normalizeScript(input: TraceScriptInput): TraceScript {
  return isStepList(input) ? { steps: [...input] } : input;
}

function isStepList(input: TraceScriptInput): input is readonly ScriptStep[] {
  return Array.isArray(input);
}
