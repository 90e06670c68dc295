import type { WebhookDeps } from "../watch/bind-service.js";
import { takeoverMs } from "../watch/poll-driver.js";
import { createWebhookSender } from "../webhook/sender.js";
import type { WebhookConfig } from "./config.js";

/**
 * The bind service's webhooks (SPEC §3) from the WEBHOOK_* configuration, the same on Node
 * and at the edge.
 * @example createBindService({ …, ...(config.webhooks ? { webhooks: webhookDeps(config.webhooks, config.pollIntervalMs) } : {}) });
 */
export function webhookDeps(hooks: WebhookConfig, pollIntervalMs: number): WebhookDeps {
  return {
    webhookUrl: hooks.url,
    send: createWebhookSender({ key: hooks.key, timeoutMs: hooks.timeoutMs }),
    timings: {
      retryMs: hooks.retryMs,
      maxAgeMs: hooks.maxAgeMs,
      timeoutMs: hooks.timeoutMs,
      // Within the takeover time of SPEC §4.4, an unpolled bind with destinations is adopted.
      checkMs: takeoverMs(pollIntervalMs),
    },
  };
}
