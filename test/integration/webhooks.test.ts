import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { scriptBoundAfter, scriptFailedAfter, scriptNever, scriptRejectedAfter } from "../../src/sim/scripts.js";
import { createLogSink } from "../support/log-sink.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import { startWebhookReceiver, type WebhookReceiver } from "../support/webhook-receiver.js";

/*
 * Webhooks to the backend (SPEC §3) on one instance in memory, with real sockets: a
 * receiver that verifies every delivery with the `standardwebhooks` package, answering
 * as each test scripts it.
 */

const SECRET = `whsec_${randomBytes(24).toString("base64")}`;
const RETRY_MS = 200;
const TIMEOUT_MS = 400;
const TERMINAL = 1001;

const opened: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  for (const thing of opened.splice(0).reverse()) await thing.stop();
});

async function receiver(): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver(SECRET);
  opened.push({ stop: () => r.close() });
  return r;
}

async function server(env: Record<string, string>, logTo?: ReturnType<typeof createLogSink>): Promise<TestServer> {
  const s = await startTestServer(
    {
      WEBHOOK_SECRET: SECRET,
      WEBHOOK_RETRY_MS: String(RETRY_MS),
      WEBHOOK_TIMEOUT_MS: String(TIMEOUT_MS),
      POLL_INTERVAL_MS: "100",
      POLL_LINGER_MS: "300",
      BIND_TIMEOUT_MS: "2500",
      TERMINAL_RET_CODES: String(TERMINAL),
      ...env,
    },
    logTo ? { logTo: logTo.stream } : {},
  );
  opened.push(s);
  return s;
}

async function stateOf(s: TestServer, traceId: string): Promise<BindState> {
  return (await (await fetch(`${s.url}/v1/binds/${traceId}`)).json()) as BindState;
}

describe("webhooks of every final", () => {
  it("deliver each kind of final once, verified, with its type, and data equal to the stored state — no watcher needed", async () => {
    const backend = await receiver();
    const s = await server({ WEBHOOK_URL: backend.url });
    const cases = [
      { type: "bind.bound", script: scriptBoundAfter(15) },
      { type: "bind.failed", script: scriptFailedAfter(1, TERMINAL, "the device refused") },
      { type: "bind.failed", script: scriptRejectedAfter(1, 41, "isv.invalid-parameter:open_id") },
      { type: "bind.expired", script: scriptNever() },
      { type: "bind.cancelled", script: scriptNever() },
    ] as const;
    const traces = cases.map((c) => ({ ...c, traceId: newTraceId("wh") }));
    for (const t of traces) {
      s.simulator.setScript(t.traceId, t.script);
      expect((await postBind(s.url, bindBody(t.traceId))).status).toBe(201);
    }
    const cancelled = traces[4]?.traceId ?? "";
    expect((await fetch(`${s.url}/v1/binds/${cancelled}`, { method: "DELETE" })).status).toBe(200);

    // Bound after 15 polls (1.5 s) and expired at 2.5 s, both past the linger of 0.3 s: polled to their end.
    await waitUntil(() => backend.delivered().length >= traces.length, 15_000, "every final delivered", 20);
    expect(backend.received.every((r) => r.verified)).toBe(true);
    for (const t of traces) {
      const got = backend.delivered().filter((r) => r.payload?.data?.trace_id === t.traceId);
      expect(got.length, t.traceId).toBe(1);
      expect(got[0]?.payload?.type).toBe(t.type);
      expect(got[0]?.payload?.data).toEqual(await stateOf(s, t.traceId));
      expect(got[0]?.id).toMatch(/^msg_[A-Za-z0-9_-]{27}$/);
    }
    expect(new Set(backend.received.map((r) => r.id)).size).toBe(traces.length);
  }, 30_000);

  it("retries a receiver that fails, hangs, then refuses, on the backoff, with one webhook-id, until it recovers", async () => {
    const backend = await receiver();
    const s = await server({ WEBHOOK_URL: backend.url, BIND_TIMEOUT_MS: "60000" });
    backend.script({ kind: "status", status: 500 }, { kind: "hang" });
    const traceId = newTraceId("wh-retry");
    s.simulator.setScript(traceId, scriptBoundAfter(0));
    expect((await postBind(s.url, bindBody(traceId))).status).toBe(201);
    await waitUntil(() => backend.received.length === 2, 10_000, "the failed and the hung attempt", 10);
    const hungAt = backend.received[1]?.at ?? 0;
    // Past its timeout the hung attempt has failed; the receiver then goes away before the next one.
    await waitUntil(() => Date.now() > hungAt + TIMEOUT_MS + 50, 10_000, "the hung attempt's timeout", 10);
    await backend.down();
    // The third attempt, about 2 × RETRY_MS after the timeout, is refused.
    await waitUntil(() => Date.now() > hungAt + TIMEOUT_MS + 2.4 * RETRY_MS + 100, 10_000, "the refused attempt", 10);
    await backend.up();
    await waitUntil(() => backend.delivered().length === 1, 15_000, "the delivery once it recovered", 10);

    const [failed, hung, delivered] = backend.received;
    expect(backend.received).toHaveLength(3);
    expect([failed?.answered, hung?.answered, delivered?.answered]).toEqual([500, null, 200]);
    expect(new Set(backend.received.map((r) => r.id)).size).toBe(1);
    // First retry RETRY_MS after the failed attempt, then about twice the previous each time (±20 %):
    // 1 × RETRY_MS, then after the hang timed out 2 ×, then (refused) 4 × before the delivery.
    const gap1 = (hung?.at ?? 0) - (failed?.at ?? 0);
    expect(gap1).toBeGreaterThanOrEqual(0.8 * RETRY_MS);
    expect(gap1).toBeLessThan(1.2 * RETRY_MS + 150);
    const gap2 = (delivered?.at ?? 0) - (hung?.at ?? 0);
    const minWait = TIMEOUT_MS + 0.8 * (2 + 4) * RETRY_MS;
    expect(gap2).toBeGreaterThanOrEqual(minWait);
    expect(gap2).toBeLessThan(TIMEOUT_MS + 1.2 * (2 + 4) * RETRY_MS + 2 * TIMEOUT_MS);
    console.log(
      `webhook retries (WEBHOOK_RETRY_MS ${RETRY_MS}, WEBHOOK_TIMEOUT_MS ${TIMEOUT_MS}): 500 → hang after ${gap1} ms, ` +
        `hang → timeout → refused → delivered after ${gap2} ms (at least ${minWait} ms by the schedule)`,
    );
  }, 30_000);

  it("never follows a redirect (a failed attempt), stops a destination at 410, and keeps delivering later binds", async () => {
    const backend = await receiver();
    const elsewhere = await receiver();
    const s = await server({ WEBHOOK_URL: backend.url });
    backend.script({ kind: "redirect", location: elsewhere.url }, { kind: "ok" }, { kind: "status", status: 410 });
    const redirected = newTraceId("wh-3xx");
    s.simulator.setScript(redirected, scriptBoundAfter(0));
    expect((await postBind(s.url, bindBody(redirected))).status).toBe(201);
    await waitUntil(() => backend.delivered().length === 1, 10_000, "the retry after the redirect", 10);
    expect(backend.received.map((r) => r.answered)).toEqual([302, 200]);
    expect(elsewhere.received).toEqual([]);

    const gone = newTraceId("wh-410");
    s.simulator.setScript(gone, scriptBoundAfter(0));
    expect((await postBind(s.url, bindBody(gone))).status).toBe(201);
    await waitUntil(() => backend.received.length === 3, 10_000, "the 410", 10);
    // No retry of that final: wait past a few backoff periods.
    const after410 = backend.received.length;
    await new Promise((resolve) => setTimeout(resolve, 4 * RETRY_MS));
    expect(backend.received.length).toBe(after410);

    const later = newTraceId("wh-later");
    s.simulator.setScript(later, scriptBoundAfter(0));
    expect((await postBind(s.url, bindBody(later))).status).toBe(201);
    await waitUntil(
      () => backend.delivered().some((r) => r.payload?.data?.trace_id === later),
      10_000,
      "a later bind's delivery",
      10,
    );
  }, 30_000);
});

describe("a bind's own callback_url", () => {
  it("is refused outside WEBHOOK_ALLOWED_ORIGINS (400 naming the field), and receives that bind's final inside", async () => {
    const backend = await receiver();
    const own = await receiver();
    const s = await server({ WEBHOOK_URL: backend.url, WEBHOOK_ALLOWED_ORIGINS: `http://127.0.0.1:${own.port}` });
    const refused = await postBind(
      s.url,
      bindBody(newTraceId("wh-cb"), { callback_url: "https://evil.example.com/hook" }),
    );
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ error: { code: "invalid_request", field: "callback_url" } });
    for (const bad of ["not a url", "ftp://127.0.0.1/x", `http://user:pw@127.0.0.1:${own.port}/x`]) {
      const res = await postBind(s.url, bindBody(newTraceId("wh-cb"), { callback_url: bad }));
      expect(res.status, bad).toBe(400);
      expect(res.json).toMatchObject({ error: { field: "callback_url" } });
    }

    const traceId = newTraceId("wh-cb");
    s.simulator.setScript(traceId, scriptBoundAfter(1));
    const body = bindBody(traceId, { callback_url: `${own.url}?bind=${traceId}` });
    expect((await postBind(s.url, body)).status).toBe(201);
    // callback_url is part of the registration that idempotency compares.
    expect((await postBind(s.url, body)).status).toBe(200);
    expect((await postBind(s.url, bindBody(traceId))).status).toBe(409);
    await waitUntil(() => own.delivered().length === 1 && backend.delivered().length === 1, 10_000, "both", 10);
    expect(own.delivered()[0]?.path).toBe(`/webhooks?bind=${traceId}`);
    // Every destination gets the same message.
    expect(own.delivered()[0]?.id).toBe(backend.delivered()[0]?.id);
    expect(own.delivered()[0]?.payload).toEqual(backend.delivered()[0]?.payload);
  }, 30_000);
});

describe("a graceful stop in memory", () => {
  it("tries every delivery left at once, and logs the ones it could not deliver", async () => {
    const backend = await receiver();
    const log = createLogSink();
    // A first retry far away: only the stop makes it come sooner.
    const s = await server({ WEBHOOK_URL: backend.url, WEBHOOK_RETRY_MS: "60000", LOG_LEVEL: "info" }, log);
    backend.script({ kind: "status", status: 503 });
    const sent = newTraceId("wh-stop-sent");
    s.simulator.setScript(sent, scriptBoundAfter(0));
    expect((await postBind(s.url, bindBody(sent))).status).toBe(201);
    await waitUntil(() => backend.received.length === 1, 10_000, "the failed attempt", 10);

    const lost = newTraceId("wh-stop-lost");
    const down = await receiver();
    await down.down();
    const s2 = await server({ WEBHOOK_URL: down.url, LOG_LEVEL: "info" }, log);
    s2.simulator.setScript(lost, scriptBoundAfter(0));
    expect((await postBind(s2.url, bindBody(lost))).status).toBe(201);
    await waitUntil(
      () => log.lines.some((l) => l.includes('"webhook attempt failed"') && l.includes(lost)),
      10_000,
      "a failed attempt",
      10,
    );

    const started = Date.now();
    await Promise.all([s.stop(), s2.stop()]);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(backend.delivered().map((r) => r.payload?.data?.trace_id)).toEqual([sent]);
    const undelivered = log.lines.filter((l) => l.includes("webhook not delivered before the stop"));
    expect(undelivered).toHaveLength(1);
    expect(undelivered[0]).toContain(`"trace_id":"${lost}"`);
    expect(undelivered[0]).toMatch(/"webhook_id":"msg_/);
    expect(log.lines.join("")).not.toContain(SECRET.slice("whsec_".length));
  }, 30_000);
});
