import { z } from "zod";
import type { BindRegistration } from "../domain/bind.js";
import { TRACE_ID_PATTERN } from "../domain/bind.js";

export const MAX_BODY_BYTES = 16 * 1024;

const text = z.string().min(1, "must not be empty").max(256, "must be at most 256 characters");
const traceId = z.string().regex(TRACE_ID_PATTERN, "must match ^[A-Za-z0-9._-]{1,128}$");

/** The body of POST /v1/binds (SPEC §3): unknown fields are refused so a typo is not silently ignored. */
const registrationSchema = z.strictObject({
  trace_id: traceId,
  open_id: text,
  product_key: text,
  user_type: text,
  device_name: text.optional(),
  iot_id: text.optional(),
  server_event_request_id: text.optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  callback_url: z.string().min(1, "must not be empty").max(2048, "must be at most 2048 characters").optional(),
});

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
  const issue = result.error.issues[0];
  if (!issue) return { ok: false, field: undefined, message: "invalid body" };
  if (issue.code === "unrecognized_keys") {
    const key = issue.keys[0] ?? "";
    return { ok: false, field: key, message: `unknown field "${key}"` };
  }
  const field = issue.path.map(String).join(".") || undefined;
  const top = issue.path[0];
  const missing = typeof top === "string" && issue.path.length === 1 && !Object.hasOwn(body, top);
  const message =
    issue.code === "invalid_type" && missing
      ? `${field} is required`
      : `${field ?? "body"} ${issue.code === "invalid_type" ? `must be ${issue.expected === "record" ? "an object" : `a ${issue.expected}`}` : issue.message}`;
  return { ok: false, field, message };
}

export function isValidTraceId(value: string): boolean {
  return TRACE_ID_PATTERN.test(value);
}

/** `wait` of the long-poll: seconds, 0–60, decimals allowed. */
export function parseWaitSeconds(raw: string | undefined): Validation<number> {
  if (raw === undefined || raw === "") return { ok: true, value: 0 };
  if (!/^\d{1,2}(\.\d{1,3})?$/.test(raw) || Number(raw) > 60) {
    return { ok: false, field: "wait", message: "wait must be a number of seconds from 0 to 60" };
  }
  return { ok: true, value: Number(raw) };
}

/** `after` of the long-poll and the last event id: a non-negative integer version. */
export function parseVersion(raw: string | undefined, field: string): Validation<number> {
  if (raw === undefined || raw === "") return { ok: true, value: 0 };
  if (!/^\d{1,15}$/.test(raw)) return { ok: false, field, message: `${field} must be a non-negative integer` };
  return { ok: true, value: Number(raw) };
}
