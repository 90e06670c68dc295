import { describeNetworkError } from "../domain/network-error.js";
import type { DeliveryRecord } from "../domain/webhook.js";
import { signWebhook } from "./message.js";

/** What one POST to a destination came to. */
export type SendResult =
  | { readonly kind: "delivered"; readonly status: number }
  /** 410 Gone: stop delivering this final there. */
  | { readonly kind: "gone" }
  | { readonly kind: "failed"; readonly error: string };

export interface WebhookSenderOptions {
  /** The signing key: the base64-decoded part of WEBHOOK_SECRET. */
  readonly key: Buffer;
  /** A 2xx must come within this long (WEBHOOK_TIMEOUT_MS). */
  readonly timeoutMs: number;
  readonly fetch?: typeof fetch;
  /** Unix seconds for `webhook-timestamp`. */
  readonly nowSeconds?: () => number;
}

/** One attempt; `signal` cuts it short (a graceful stop). */
export type WebhookSender = (url: string, record: DeliveryRecord, signal?: AbortSignal) => Promise<SendResult>;

/**
 * POSTs one attempt of a delivery, signed. A 2xx within the timeout confirms; 410 stops;
 * anything else — another status, a timeout, a refused connection, a redirect (never
 * followed: a webhook goes only where it was configured to go) — is a failed attempt.
 * @example const send = createWebhookSender({ key, timeoutMs: 10_000 }); await send(url, record);
 */
export function createWebhookSender(opts: WebhookSenderOptions): WebhookSender {
  const fetchFn = opts.fetch ?? globalThis.fetch;
  const nowSeconds = opts.nowSeconds ?? (() => Math.floor(Date.now() / 1000));
  return async (url, record, signal) => {
    const timestamp = nowSeconds();
    let response: Response;
    try {
      response = await fetchFn(url, {
        method: "POST",
        redirect: "manual",
        headers: {
          "content-type": "application/json",
          "user-agent": "bindwatch-webhooks",
          "webhook-id": record.id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": signWebhook(opts.key, record.id, timestamp, record.body),
        },
        body: record.body,
        signal: signal
          ? AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs)])
          : AbortSignal.timeout(opts.timeoutMs),
      });
    } catch (error) {
      const timedOut = error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
      return {
        kind: "failed",
        error: timedOut ? `no answer within ${opts.timeoutMs} ms` : describeNetworkError(error),
      };
    }
    // The body is of no use; release the connection.
    await response.body?.cancel().catch(() => {});
    if (response.status >= 200 && response.status < 300) return { kind: "delivered", status: response.status };
    if (response.status === 410) return { kind: "gone" };
    const redirect = response.status >= 300 && response.status < 400 ? " (redirects are not followed)" : "";
    return { kind: "failed", error: `HTTP ${response.status}${redirect}` };
  };
}
