import type { UpstreamInfo } from "./bind.js";
import type { CheckbindOutcome } from "./outcome.js";

/** The key TOP wraps a successful checkbind answer in: the method name, dots as underscores, plus `_response`. */
export const CHECKBIND_RESPONSE_KEY = "alibaba_ailabs_iot_device_inside_checkbind_invoke_response";

/** TOP "call limited" codes: 4 user, 5 session, 6 partner, 7 app, 8 api. */
const RATE_LIMIT_CODES: ReadonlySet<number> = new Set([4, 5, 6, 7, 8]);
/** TOP platform faults: 10 service unavailable, 15 remote service error, 50 remote service timeout. */
const UPSTREAM_FAULT_CODES: ReadonlySet<number> = new Set([10, 15, 50]);
/** `isp.*` sub-codes are faults of the service provider, not of the request. */
const UPSTREAM_FAULT_SUB_CODE_PREFIX = "isp.";

/** When a ban arrives without its length, wait this long before the next call. */
export const DEFAULT_BAN_MS = 1000;

const BAN_SECONDS_PATTERN = /ban will last for (\d+) more seconds?/i;

/**
 * Reads the ban length TOP writes into `sub_msg` of a call-limited error, in ms.
 * Absent, unreadable or zero (less than a second remains) gives {@link DEFAULT_BAN_MS}.
 * @example parseBanMs("This ban will last for 12 more seconds") // 12000
 */
export function parseBanMs(text: string | undefined): number {
  const seconds = text === undefined ? undefined : BAN_SECONDS_PATTERN.exec(text)?.[1];
  const n = seconds === undefined ? 0 : Number.parseInt(seconds, 10);
  return Number.isSafeInteger(n) && n > 0 ? n * 1000 : DEFAULT_BAN_MS;
}

type JsonObject = Readonly<Record<string, unknown>>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function asString(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** TOP documents numbers, but some gateways and SDKs hand them over as numeric strings. */
function asInteger(value: unknown): number | null {
  if (typeof value === "number") return Number.isInteger(value) ? value : null;
  if (typeof value === "string" && /^-?\d+$/.test(value.trim())) {
    const n = Number(value.trim());
    return Number.isSafeInteger(n) ? n : null;
  }
  return null;
}

/**
 * TOP documents Booleans; the strings "true" and "false" are accepted as the same
 * values (as TOP SDKs do). Anything else is `undefined`: not a readable Boolean.
 */
function asBoolean(value: unknown): boolean | undefined {
  if (value === true || value === "true") return true;
  if (value === false || value === "false") return false;
  return undefined;
}

function transient(message: string, requestId = ""): CheckbindOutcome {
  return { kind: "transient", message, requestId };
}

/** "TOP error 7 App Call Limited (accesscontrol.limited-by-app-access-count: This ban will last for 12 more seconds)" */
function describeTopError(err: JsonObject, code: number | null): string {
  const msg = asString(err.msg);
  const subCode = asString(err.sub_code);
  const subMsg = asString(err.sub_msg);
  let text = code === null ? "TOP error" : `TOP error ${code}`;
  if (msg) text += ` ${msg}`;
  const detail = [subCode, subMsg].filter((s): s is string => s !== undefined && s !== "").join(": ");
  if (detail) text += ` (${detail})`;
  return text;
}

function classifyErrorResponse(err: JsonObject): CheckbindOutcome {
  const code = asInteger(err.code);
  const subCode = asString(err.sub_code) ?? "";
  const requestId = asString(err.request_id) ?? "";
  const message = describeTopError(err, code);
  if (code !== null && RATE_LIMIT_CODES.has(code)) {
    // The ban length is only given in prose; this parse is the one the protocol requires.
    const subMsg = asString(err.sub_msg);
    const banMs = parseBanMs(subMsg !== undefined && BAN_SECONDS_PATTERN.test(subMsg) ? subMsg : asString(err.msg));
    return { kind: "rate_limited", banMs, message, requestId };
  }
  if ((code !== null && UPSTREAM_FAULT_CODES.has(code)) || subCode.startsWith(UPSTREAM_FAULT_SUB_CODE_PREFIX)) {
    return transient(message, requestId);
  }
  return { kind: "rejected", message, requestId };
}

function classifySuccess(body: JsonObject, terminalRetCodes: ReadonlySet<number>): CheckbindOutcome {
  const requestId = asString(body.request_id) ?? "";
  const result = asBoolean(body.result);
  if (result === undefined) return transient("checkbind response has no readable result", requestId);
  const upstream: UpstreamInfo = {
    ret_code: asInteger(body.ret_code),
    message: asString(body.message) ?? "",
    request_id: requestId,
    // TOP names its EagleEye id `trace_id`, like the request's parameter it is not.
    eagleeye_id: asString(body.trace_id) ?? "",
  };
  if (!result) {
    const terminal = upstream.ret_code !== null && terminalRetCodes.has(upstream.ret_code);
    return { kind: terminal ? "failed" : "waiting", upstream };
  }
  return { kind: asBoolean(body.ret_value) === true ? "bound" : "waiting", upstream };
}

/**
 * Classifies one checkbind HTTP answer after the table of SPEC §2.
 *
 * Leniency, decided once here: `ret_code` and error `code` may be numbers or numeric
 * strings; `result` and `ret_value` may be Booleans or the strings "true"/"false".
 * A success envelope whose `result` is neither is not "the JSON above": transient.
 * When a body holds both shapes, `error_response` wins.
 *
 * @example classifyCheckbindResponse(200, '{"error_response":{"code":7}}', new Set()) // { kind: "rate_limited", banMs: 1000, … }
 */
export function classifyCheckbindResponse(
  httpStatus: number,
  bodyText: string,
  terminalRetCodes: ReadonlySet<number>,
): CheckbindOutcome {
  if (httpStatus < 200 || httpStatus > 299) return transient(`HTTP ${httpStatus}`);
  let body: unknown;
  try {
    body = JSON.parse(bodyText);
  } catch {
    return transient("checkbind response is not JSON");
  }
  if (isObject(body)) {
    const err = body.error_response;
    if (isObject(err)) return classifyErrorResponse(err);
    const success = body[CHECKBIND_RESPONSE_KEY];
    if (isObject(success)) return classifySuccess(success, terminalRetCodes);
  }
  return transient("checkbind response is neither a result nor an error_response");
}
