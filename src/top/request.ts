import type { BindRegistration } from "../domain/bind.js";
import type { SignMethod } from "./sign.js";
import { signTopParams } from "./sign.js";
import { formatTopTimestamp } from "./timestamp.js";

export const CHECKBIND_METHOD = "alibaba.ailabs.iot.device.inside.checkbind.invoke";

export interface CheckbindRequestOptions {
  readonly appKey: string;
  readonly appSecret: string;
  readonly signMethod: SignMethod;
  /** Sent as `session` only when set. */
  readonly session?: string | undefined;
  /** Sent as `partner_id` only when set. */
  readonly partnerId?: string | undefined;
  readonly now: () => Date;
}

export interface CheckbindRequest {
  /** Every parameter sent, `sign` included; all strings, none empty. */
  readonly params: Readonly<Record<string, string>>;
  /** The same parameters as an `application/x-www-form-urlencoded` body. */
  readonly form: URLSearchParams;
}

/**
 * Builds the signed TOP form parameters of one checkbind call (SPEC §2).
 * `params` is serialized once, and that same text is signed and sent.
 * @example buildCheckbindParams(reg, { appKey, appSecret, signMethod: "hmac-sha256", now: () => new Date() }).form.toString()
 */
export function buildCheckbindParams(reg: BindRegistration, opts: CheckbindRequestOptions): CheckbindRequest {
  const candidates: Record<string, string | undefined> = {
    method: CHECKBIND_METHOD,
    app_key: opts.appKey,
    timestamp: formatTopTimestamp(opts.now()),
    v: "2.0",
    sign_method: opts.signMethod,
    format: "json",
    session: opts.session,
    partner_id: opts.partnerId,
    open_id: reg.open_id,
    product_key: reg.product_key,
    trace_id: reg.trace_id,
    user_type: reg.user_type,
    device_name: reg.device_name,
    iot_id: reg.iot_id,
    server_event_request_id: reg.server_event_request_id,
    params: reg.params === undefined ? undefined : JSON.stringify(reg.params),
  };
  // Unset and empty values are left out: the gateway ignores empty values when it
  // checks the signature, so sending them would only be noise.
  const params: Record<string, string> = {};
  for (const [key, value] of Object.entries(candidates)) {
    if (value !== undefined && value !== "") params[key] = value;
  }
  params.sign = signTopParams(params, opts.appSecret, opts.signMethod);
  return { params, form: new URLSearchParams(params) };
}
