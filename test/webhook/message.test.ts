import { randomBytes } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { destinationsOf, MAX_RETRY_DELAY_MS, retryDelayMs } from "../../src/domain/webhook.js";
import { signWebhook, webhookBodyOf, webhookIdOf, webhookKeyOf } from "../../src/webhook/message.js";

const final: BindState = {
  trace_id: "trace-1",
  status: "bound",
  final: true,
  version: 3,
  attempts: 4,
  created_at: "2026-12-01T10:00:00.000Z",
  updated_at: "2026-12-01T10:00:08.000Z",
  expires_at: "2026-12-01T10:03:00.000Z",
  upstream: { ret_code: 0, message: "", request_id: "r-1", eagleeye_id: "0b5a1c3f17646042271211000d4e2a" },
  error: null,
};

describe("a webhook message (Standard Webhooks)", () => {
  it("is signed as the standardwebhooks package verifies it", () => {
    const secret = `whsec_${randomBytes(32).toString("base64")}`;
    const key = webhookKeyOf(secret);
    if (!key) throw new Error("no key");
    const body = webhookBodyOf(final);
    const id = webhookIdOf(final);
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      "webhook-id": id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": signWebhook(key, id, timestamp, body),
    };
    expect(new Webhook(secret).verify(body, headers)).toEqual({
      type: "bind.bound",
      timestamp: final.updated_at,
      data: final,
    });
    // The package's own signature is the same bytes.
    expect(headers["webhook-signature"]).toBe(new Webhook(secret).sign(id, new Date(timestamp * 1000), body));
    const other = `whsec_${randomBytes(32).toString("base64")}`;
    expect(() => new Webhook(other).verify(body, headers)).toThrow();
  });

  it("takes its key from whsec_<base64> only", () => {
    expect(webhookKeyOf("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?.length).toBe(24);
    for (const bad of ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!", "whsec_abc"]) {
      expect(webhookKeyOf(bad), bad).toBeNull();
    }
  });

  it("names one final of one registration alike everywhere, and another final or registration otherwise", () => {
    expect(webhookIdOf(final)).toBe(webhookIdOf({ ...final }));
    expect(webhookIdOf(final)).toMatch(/^msg_[A-Za-z0-9_-]{27}$/);
    expect(webhookIdOf({ ...final, created_at: "2026-12-01T11:00:00.000Z" })).not.toBe(webhookIdOf(final));
    expect(webhookIdOf({ ...final, status: "cancelled", version: 4 })).not.toBe(webhookIdOf(final));
    // The body does not depend on when it is sent: every attempt sends the same bytes.
    expect(webhookBodyOf(final)).toBe(webhookBodyOf(final));
  });

  it("goes to WEBHOOK_URL and the bind's own callback_url, each once", () => {
    const reg = { trace_id: "t", open_id: "o", product_key: "p", user_type: "ilop" };
    expect(destinationsOf(reg, undefined)).toEqual([]);
    expect(destinationsOf(reg, "https://a.example/h")).toEqual(["https://a.example/h"]);
    expect(destinationsOf({ ...reg, callback_url: "https://b.example/h" }, "https://a.example/h")).toEqual([
      "https://a.example/h",
      "https://b.example/h",
    ]);
    expect(destinationsOf({ ...reg, callback_url: "https://a.example/h" }, "https://a.example/h")).toEqual([
      "https://a.example/h",
    ]);
  });
});

describe("the retry schedule", () => {
  it("waits WEBHOOK_RETRY_MS first, then about twice the previous, ±20 %, never more than an hour", () => {
    for (let n = 1; n <= 20; n += 1) {
      const base = Math.min(MAX_RETRY_DELAY_MS, 5_000 * 2 ** (n - 1));
      expect(retryDelayMs(n, 5_000, () => 0.5)).toBe(base);
      expect(retryDelayMs(n, 5_000, () => 0)).toBe(Math.round(base * 0.8));
      expect(retryDelayMs(n, 5_000, () => 0.999999)).toBeLessThanOrEqual(
        Math.min(MAX_RETRY_DELAY_MS, Math.round(base * 1.2)),
      );
    }
    expect(retryDelayMs(40, 5_000, () => 1)).toBe(MAX_RETRY_DELAY_MS);
  });
});
