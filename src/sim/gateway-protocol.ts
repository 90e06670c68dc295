import type { Context } from "hono";
import { CHECKBIND_METHOD } from "../top/client.js";
import { isSignMethod, signTopParams } from "../top/sign.js";
import { parseTopTimestamp } from "../top/timestamp.js";
import type { ScriptStep } from "./scripts.js";

/*
 * What the simulated gateway checks in a request and what it answers, as the real TOP
 * gateway does (SPEC §2): the checks in the order it reports them, its envelopes, its
 * request ids and EagleEye ids. src/sim/gateway.ts keeps the state around them.
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

const REQUIRED_BUSINESS_PARAMS = ["open_id", "product_key", "trace_id", "user_type"] as const;

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

export interface CheckFailure {
  readonly reason: RejectReason;
  readonly code: number;
  readonly msg: string;
  readonly subCode?: string;
  readonly subMsg?: string;
}

/** System parameters may come in the query string (as TOP SDKs send them) or the body; the body wins. */
export async function readParams(c: Context): Promise<Record<string, string>> {
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
export function checkRequest(
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

export function banFailure(seconds: number): CheckFailure {
  return {
    reason: "banned",
    code: 7,
    msg: "App Call Limited",
    subCode: "accesscontrol.limited-by-app-access-count",
    subMsg: `This ban will last for ${seconds} more seconds`,
  };
}

export function answerStep(step: ScriptStep, call: CallIds): Response {
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

/** A call's ids: TOP's request id and the gateway's EagleEye id. */
export interface CallIds {
  readonly requestId: string;
  readonly eagleeyeId: string;
}

/** Like TOP's, the answer's `trace_id` is the gateway's EagleEye id, not the request's trace_id. */
function successEnvelope(fields: CheckbindFields, call: CallIds): Response {
  return jsonResponse({
    [CHECKBIND_RESPONSE_KEY]: { ...fields, trace_id: call.eagleeyeId, request_id: call.requestId },
  });
}

export function errorEnvelope(
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
export function newRequestId(): string {
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
