import type { z } from "zod";
import type { BindRegistration } from "../domain/bind.js";
import { TRACE_ID_PATTERN } from "../domain/bind.js";
import { registrationSchema } from "./schemas.js";

export const MAX_BODY_BYTES = 16 * 1024;

export interface RegistrationRules {
  /** WEBHOOK_ALLOWED_ORIGINS: the exact origins a `callback_url` may use; none → no callback_url. */
  readonly callbackOrigins: readonly string[];
}

/** A callback_url goes only to an allowlisted origin (SPEC §7); `null` when it may be used. */
function refuseCallbackUrl(raw: string, rules: RegistrationRules): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "callback_url is not a valid URL";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "callback_url must be an http(s) URL";
  if (url.username !== "" || url.password !== "") return "callback_url must not carry credentials";
  if (!rules.callbackOrigins.includes(url.origin)) {
    return rules.callbackOrigins.length === 0
      ? "callback_url is not accepted: no origin is allowed for it (WEBHOOK_ALLOWED_ORIGINS)"
      : `callback_url's origin ${url.origin} is not one of WEBHOOK_ALLOWED_ORIGINS`;
  }
  return null;
}

/** `params` is forwarded to TOP as JSON; real ones are flat, and deep nesting would only cost stack. */
const MAX_PARAMS_DEPTH = 32;

/** Nesting depth of a parsed JSON value, counted without recursion (the input may be hostile). */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== "object") continue;
    max = Math.max(max, d);
    if (max > MAX_PARAMS_DEPTH) return max;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

export type Validation<T> = { ok: true; value: T } | { ok: false; field: string | undefined; message: string };

/** Validates a parsed JSON body; on failure names the first field at fault. */
export function parseRegistration(
  body: unknown,
  rules: RegistrationRules = { callbackOrigins: [] },
): Validation<BindRegistration> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return { ok: false, field: undefined, message: "body must be a JSON object" };
  }
  const params = (body as { params?: unknown }).params;
  if (params !== undefined && depthOf(params) > MAX_PARAMS_DEPTH) {
    return { ok: false, field: "params", message: `params must not nest deeper than ${MAX_PARAMS_DEPTH} levels` };
  }
  const result = registrationSchema.safeParse(body);
  if (result.success) {
    const { device_name, iot_id, server_event_request_id, params, callback_url, ...required } = result.data;
    const refused = callback_url === undefined ? null : refuseCallbackUrl(callback_url, rules);
    if (refused) return { ok: false, field: "callback_url", message: refused };
    // exactOptionalPropertyTypes: leave absent fields absent rather than undefined.
    return {
      ok: true,
      value: {
        ...required,
        ...(device_name === undefined ? {} : { device_name }),
        ...(iot_id === undefined ? {} : { iot_id }),
        ...(server_event_request_id === undefined ? {} : { server_event_request_id }),
        ...(params === undefined ? {} : { params }),
        ...(callback_url === undefined ? {} : { callback_url }),
      },
    };
  }
  return invalid(result.error.issues[0], body);
}

/** The first issue as the 400 names it: the field at fault and a message that starts with its name. */
function invalid(issue: z.core.$ZodIssue | undefined, input: object): Extract<Validation<never>, { ok: false }> {
  if (!issue) return { ok: false, field: undefined, message: "invalid body" };
  if (issue.code === "unrecognized_keys") {
    const key = issue.keys[0] ?? "";
    return { ok: false, field: key, message: `unknown field "${key}"` };
  }
  const field = issue.path.map(String).join(".") || undefined;
  const top = issue.path[0];
  const missing = typeof top === "string" && issue.path.length === 1 && !Object.hasOwn(input, top);
  const message =
    issue.code === "invalid_type" && missing
      ? `${field} is required`
      : `${field ?? "body"} ${issue.code === "invalid_type" ? `must be ${issue.expected === "record" ? "an object" : `a ${issue.expected}`}` : issue.message}`;
  return { ok: false, field, message };
}

/**
 * Validates path parameters or a query (each parameter's first value, as `c.req.query()`
 * gives them) with one of the API's schemas, naming the first parameter at fault.
 * @example parseParameters(stateQuery, c.req.query()) // { ok: true, value: { wait: "30" } }
 */
export function parseParameters<S extends z.ZodType>(
  schema: S,
  input: Record<string, string>,
): Validation<z.output<S>> {
  const result = schema.safeParse(input);
  return result.success ? { ok: true, value: result.data } : invalid(result.error.issues[0], input);
}

/** A version or a number of seconds as the query has it (validated): empty or absent is 0. */
export function numberOf(text: string | undefined): number {
  return text === undefined || text === "" ? 0 : Number(text);
}

export function isValidTraceId(value: string): boolean {
  return TRACE_ID_PATTERN.test(value);
}
