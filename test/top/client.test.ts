import { describe, expect, it, vi } from "vitest";
import type { BindRegistration } from "../../src/domain/bind.js";
import { CHECKBIND_RESPONSE_KEY } from "../../src/domain/classify.js";
import type { TopClientOptions } from "../../src/top/client.js";
import { CHECKBIND_METHOD, createTopClient, DEFAULT_GATEWAY_URL } from "../../src/top/client.js";
import { signTopParams } from "../../src/top/sign.js";

const SECRET = "top-secret-value";

const REG: BindRegistration = {
  trace_id: "213d614316665898871384404d071e",
  open_id: "open-1",
  product_key: "pk-1",
  user_type: "ilop",
  device_name: "dev 1",
  iot_id: "iot-1",
  server_event_request_id: "ser-1",
  params: { ssProductKey: "ss-1", authCode: "a&b=c" },
};

interface Captured {
  readonly url: string;
  readonly init: RequestInit;
}

function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function fetchReturning(make: () => Response | Promise<Response>, calls: Captured[] = []): typeof fetch {
  return async (input, init) => {
    calls.push({ url: String(input), init: init ?? {} });
    return make();
  };
}

/** A fetch that hangs until its signal aborts, then rejects with the signal's reason as undici does. */
const hangingFetch: typeof fetch = (_input, init) =>
  new Promise<Response>((_resolve, reject) => {
    const signal = init?.signal;
    if (!signal) return;
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });

function client(overrides: Partial<TopClientOptions> = {}) {
  return createTopClient({
    gatewayUrl: "http://top.test/router/rest",
    appKey: "12345678",
    appSecret: SECRET,
    signMethod: "hmac-sha256",
    timeoutMs: 5000,
    terminalRetCodes: new Set([2001]),
    now: () => new Date("2026-11-29T10:00:00.000Z"),
    ...overrides,
  });
}

/** TOP's answer names its EagleEye id `trace_id`; it is not the request's trace_id. */
const EAGLEEYE_ID = "213cbe9116665898268912730d06de";
const BOUND = {
  [CHECKBIND_RESPONSE_KEY]: { result: true, ret_value: true, ret_code: 0, trace_id: EAGLEEYE_ID, request_id: "r1" },
};

describe("createTopClient", () => {
  it("exports the checkbind method and the default gateway", () => {
    expect(CHECKBIND_METHOD).toBe("alibaba.ailabs.iot.device.inside.checkbind.invoke");
    expect(DEFAULT_GATEWAY_URL).toBe("https://gw.api.taobao.com/router/rest");
  });

  it("POSTs a signed form with every system and business parameter", async () => {
    const calls: Captured[] = [];
    const outcome = await client({ fetch: fetchReturning(() => jsonResponse(BOUND), calls) }).checkbind(REG);
    expect(outcome).toEqual({
      kind: "bound",
      upstream: { ret_code: 0, message: "", request_id: "r1", eagleeye_id: EAGLEEYE_ID },
    });
    expect(REG.trace_id).not.toBe(EAGLEEYE_ID);

    expect(calls).toHaveLength(1);
    const [call] = calls;
    expect(call?.url).toBe("http://top.test/router/rest");
    expect(call?.init.method).toBe("POST");
    expect(new Headers(call?.init.headers).get("content-type")).toBe("application/x-www-form-urlencoded;charset=utf-8");
    expect(typeof call?.init.body).toBe("string");
    const sent = Object.fromEntries(new URLSearchParams(String(call?.init.body)));
    expect(sent).toEqual({
      method: CHECKBIND_METHOD,
      app_key: "12345678",
      timestamp: "2026-11-29 18:00:00",
      v: "2.0",
      sign_method: "hmac-sha256",
      format: "json",
      open_id: "open-1",
      product_key: "pk-1",
      trace_id: "213d614316665898871384404d071e",
      user_type: "ilop",
      device_name: "dev 1",
      iot_id: "iot-1",
      server_event_request_id: "ser-1",
      params: '{"ssProductKey":"ss-1","authCode":"a&b=c"}',
      sign: expect.stringMatching(/^[0-9A-F]{64}$/),
    });
    expect(signTopParams(sent, SECRET, "hmac-sha256")).toBe(sent.sign);
    expect(String(call?.init.body)).not.toContain(SECRET);
  });

  it("leaves out the optional business parameters that are not set", async () => {
    const calls: Captured[] = [];
    const reg: BindRegistration = { trace_id: "t-1", open_id: "o", product_key: "p", user_type: "ilop" };
    await client({ fetch: fetchReturning(() => jsonResponse(BOUND), calls), signMethod: "md5" }).checkbind(reg);
    const sent = Object.fromEntries(new URLSearchParams(String(calls[0]?.init.body)));
    expect(Object.keys(sent).sort()).toEqual(
      [
        "app_key",
        "format",
        "method",
        "open_id",
        "product_key",
        "sign",
        "sign_method",
        "timestamp",
        "trace_id",
        "user_type",
        "v",
      ].sort(),
    );
    expect(signTopParams(sent, SECRET, "md5")).toBe(sent.sign);
  });

  it("sends session and partner_id only when configured", async () => {
    const without: Captured[] = [];
    await client({ fetch: fetchReturning(() => jsonResponse(BOUND), without) }).checkbind(REG);
    const a = new URLSearchParams(String(without[0]?.init.body));
    expect(a.has("session")).toBe(false);
    expect(a.has("partner_id")).toBe(false);

    const withBoth: Captured[] = [];
    await client({
      fetch: fetchReturning(() => jsonResponse(BOUND), withBoth),
      session: "sess-1",
      partnerId: "bindwatch",
      signMethod: "hmac",
    }).checkbind(REG);
    const b = Object.fromEntries(new URLSearchParams(String(withBoth[0]?.init.body)));
    expect(b.session).toBe("sess-1");
    expect(b.partner_id).toBe("bindwatch");
    expect(signTopParams(b, SECRET, "hmac")).toBe(b.sign);
  });

  it("classifies the answer with the configured terminal ret_codes", async () => {
    const body = { [CHECKBIND_RESPONSE_KEY]: { result: false, ret_code: 2001, message: "no", request_id: "r2" } };
    const outcome = await client({ fetch: fetchReturning(() => jsonResponse(body)) }).checkbind(REG);
    expect(outcome).toEqual({
      kind: "failed",
      upstream: { ret_code: 2001, message: "no", request_id: "r2", eagleeye_id: "" },
    });
  });

  it("a timeout → transient", async () => {
    const outcome = await client({ fetch: hangingFetch, timeoutMs: 20 }).checkbind(REG);
    expect(outcome).toEqual({ kind: "transient", message: "timeout after 20 ms", requestId: "" });
  });

  it("a body that stalls past the timeout → transient", async () => {
    const stalling: typeof fetch = async (_input, init) => {
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"alibaba'));
          init?.signal?.addEventListener("abort", () => controller.error(init.signal?.reason), { once: true });
        },
      });
      return new Response(stream, { status: 200 });
    };
    const outcome = await client({ fetch: stalling, timeoutMs: 20 }).checkbind(REG);
    expect(outcome).toEqual({ kind: "transient", message: "timeout after 20 ms", requestId: "" });
  });

  it("the caller's abort rejects with its reason", async () => {
    const controller = new AbortController();
    const reason = new Error("scheduler stopped");
    const pending = client({ fetch: hangingFetch }).checkbind(REG, controller.signal);
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it("an already aborted signal rejects without calling fetch", async () => {
    const fetchSpy = vi.fn(hangingFetch);
    const reason = new Error("gone");
    await expect(client({ fetch: fetchSpy }).checkbind(REG, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(fetchSpy).not.toHaveBeenCalled();
  });

  it("a network error → transient, naming the cause", async () => {
    const failing: typeof fetch = async () => {
      throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect"), { code: "ECONNREFUSED" }) });
    };
    const outcome = await client({ fetch: failing }).checkbind(REG);
    expect(outcome).toEqual({
      kind: "transient",
      message: "network error: fetch failed (ECONNREFUSED)",
      requestId: "",
    });
  });

  it("a real connection refused → transient", async () => {
    const outcome = await client({ gatewayUrl: "http://127.0.0.1:1/router/rest", fetch: globalThis.fetch }).checkbind(
      REG,
    );
    expect(outcome).toMatchObject({ kind: "transient", requestId: "" });
    if (outcome.kind === "transient") expect(outcome.message).not.toContain(SECRET);
  });

  it("a non-2xx status → transient", async () => {
    const outcome = await client({
      fetch: fetchReturning(() => new Response("<html>bad</html>", { status: 502 })),
    }).checkbind(REG);
    expect(outcome).toEqual({ kind: "transient", message: "HTTP 502", requestId: "" });
  });

  it("a body that is not JSON → transient", async () => {
    const outcome = await client({ fetch: fetchReturning(() => new Response("<html>ok</html>")) }).checkbind(REG);
    expect(outcome).toMatchObject({ kind: "transient" });
  });

  it("an unreadable body → transient", async () => {
    const broken: typeof fetch = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.error(new Error("connection reset"));
          },
        }),
      );
    const outcome = await client({ fetch: broken }).checkbind(REG);
    expect(outcome).toEqual({
      kind: "transient",
      message: "cannot read the response body: connection reset",
      requestId: "",
    });
  });

  it("an error_response → its classification", async () => {
    const body = {
      error_response: { code: 7, msg: "App Call Limited", sub_msg: "This ban will last for 3 more seconds" },
    };
    const outcome = await client({ fetch: fetchReturning(() => jsonResponse(body)) }).checkbind(REG);
    expect(outcome).toMatchObject({ kind: "rate_limited", banMs: 3000 });
  });

  it("uses the injected clock for the timestamp", async () => {
    const calls: Captured[] = [];
    await client({
      fetch: fetchReturning(() => jsonResponse(BOUND), calls),
      now: () => new Date("2016-01-01T04:00:00.000Z"),
    }).checkbind(REG);
    expect(new URLSearchParams(String(calls[0]?.init.body)).get("timestamp")).toBe("2016-01-01 12:00:00");
  });
});
