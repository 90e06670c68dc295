import type { BindRegistration } from "../domain/bind.js";
import { classifyCheckbindResponse } from "../domain/classify.js";
import { describeNetworkError } from "../domain/network-error.js";
import type { CheckbindOutcome } from "../domain/outcome.js";
import { buildCheckbindParams } from "./request.js";
import type { SignMethod } from "./sign.js";

export { CHECKBIND_METHOD } from "./request.js";
export const DEFAULT_GATEWAY_URL = "https://gw.api.taobao.com/router/rest";

export interface TopClientOptions {
  readonly gatewayUrl: string;
  readonly appKey: string;
  readonly appSecret: string;
  readonly signMethod: SignMethod;
  readonly session?: string;
  readonly partnerId?: string;
  readonly timeoutMs: number;
  readonly terminalRetCodes: ReadonlySet<number>;
  readonly fetch?: typeof fetch;
  readonly now?: () => Date;
}

/** One checkbind exchange, classified. Never rejects but with the caller's abort reason. */
export interface CheckbindClient {
  checkbind(reg: BindRegistration, signal?: AbortSignal): Promise<CheckbindOutcome>;
}

const FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=utf-8";

function transient(message: string): CheckbindOutcome {
  return { kind: "transient", message, requestId: "" };
}

/**
 * Creates the TOP checkbind client: signs, POSTs the form, classifies the answer.
 * Timeouts, network errors, non-2xx statuses and unreadable bodies resolve as
 * `transient`; only the caller's abort rejects (with its reason).
 * @example await createTopClient({ gatewayUrl: DEFAULT_GATEWAY_URL, appKey, appSecret, signMethod: "hmac-sha256", timeoutMs: 5000, terminalRetCodes: new Set() }).checkbind(reg)
 */
export function createTopClient(opts: TopClientOptions): CheckbindClient {
  const fetchFn = opts.fetch ?? globalThis.fetch;
  const now = opts.now ?? (() => new Date());

  async function checkbind(reg: BindRegistration, signal?: AbortSignal): Promise<CheckbindOutcome> {
    signal?.throwIfAborted();
    let form: URLSearchParams;
    try {
      ({ form } = buildCheckbindParams(reg, {
        appKey: opts.appKey,
        appSecret: opts.appSecret,
        signMethod: opts.signMethod,
        session: opts.session,
        partnerId: opts.partnerId,
        now,
      }));
    } catch (error) {
      // Only JSON.stringify of `params` can throw here; the same request would fail forever.
      return { kind: "rejected", message: `cannot build the checkbind request: ${String(error)}`, requestId: "" };
    }

    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    // Which of the two signals fired decides between rejecting and a transient outcome.
    const failure = (what: string, error: unknown): CheckbindOutcome => {
      if (signal?.aborted) throw signal.reason;
      if (timeout.aborted) return transient(`timeout after ${opts.timeoutMs} ms`);
      return transient(`${what}: ${describeNetworkError(error)}`);
    };

    let response: Response;
    try {
      response = await fetchFn(opts.gatewayUrl, {
        method: "POST",
        headers: { "content-type": FORM_CONTENT_TYPE, accept: "application/json" },
        body: form.toString(),
        signal: combined,
      });
    } catch (error) {
      return failure("network error", error);
    }

    if (!response.ok) {
      // Release the connection; the body of a gateway error page is of no use here.
      await response.body?.cancel().catch(() => {});
      if (signal?.aborted) throw signal.reason;
      return classifyCheckbindResponse(response.status, "", opts.terminalRetCodes);
    }

    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      return failure("cannot read the response body", error);
    }
    if (signal?.aborted) throw signal.reason;
    return classifyCheckbindResponse(response.status, text, opts.terminalRetCodes);
  }

  return { checkbind };
}
