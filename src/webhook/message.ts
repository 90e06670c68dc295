// node:crypto: on Node and, under nodejs_compat, on workerd.
import { createHash, createHmac } from "node:crypto";
import type { BindState } from "../domain/bind.js";
import { webhookTypeOf } from "../domain/webhook.js";

/*
 * A webhook message as the Standard Webhooks specification (standardwebhooks.com) has
 * it: a JSON body `{type, timestamp, data}`, and the headers `webhook-id`,
 * `webhook-timestamp` and `webhook-signature` = `v1,<base64 HMAC-SHA256 of
 * "<id>.<timestamp>.<body>">`, keyed with the base64-decoded part of `whsec_…`. Three
 * lines of HMAC, written here rather than taken from a library so the tests' receiver
 * (the `standardwebhooks` package) checks an implementation that is not its own.
 */

const SECRET_PREFIX = "whsec_";

/** The signing key of a `whsec_<base64>` secret, or `null` when the text is not one. */
export function webhookKeyOf(secret: string): Buffer | null {
  if (!secret.startsWith(SECRET_PREFIX)) return null;
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 !== 0) return null;
  const key = Buffer.from(encoded, "base64");
  return key.length > 0 ? key : null;
}

/**
 * `webhook-id` of a final: one per final of one registration — derived from the trace,
 * its registration's `created_at` and the final's status and version — so every
 * instance, every attempt and every destination name it alike, and a trace_id
 * registered again after its retention gets a new one.
 */
export function webhookIdOf(final: BindState): string {
  const digest = createHash("sha256")
    .update(`${final.trace_id}\n${final.created_at}\n${final.status}\n${final.version}`, "utf8")
    .digest("base64url");
  return `msg_${digest.slice(0, 27)}`;
}

/** The body of a final's webhook; `timestamp` is when it became final, so every attempt sends the same bytes. */
export function webhookBodyOf(final: BindState): string {
  return JSON.stringify({ type: webhookTypeOf(final), timestamp: final.updated_at, data: final });
}

/** `webhook-signature` of one attempt. */
export function signWebhook(key: Buffer, id: string, timestampSeconds: number, body: string): string {
  const mac = createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`, "utf8").digest("base64");
  return `v1,${mac}`;
}
