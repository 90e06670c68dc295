import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createTopSimulator, type TopSimulator, type TopSimulatorOptions } from "../../src/sim/gateway.js";
import { CHECKBIND_RESPONSE_KEY, createEagleEyeIds } from "../../src/sim/gateway-protocol.js";
import { scriptBoundAfter, scriptFailedAfter, scriptTrouble } from "../../src/sim/scripts.js";
import { CHECKBIND_METHOD } from "../../src/top/client.js";
import { type SignMethod, signTopParams } from "../../src/top/sign.js";
import { formatTopTimestamp } from "../../src/top/timestamp.js";

/** 8 hex digits of an IPv4 address, 13-digit epoch ms, a 4-digit sequence, `d` and 4 hex digits. */
const EAGLEEYE_ID = /^[0-9a-f]{8}\d{13}\d{4}d[0-9a-f]{4}$/;
const APP_KEY = "12345678";
const APP_SECRET = "helloworld";
const T0 = Date.UTC(2026, 10, 29, 10, 0, 0);

interface RequestOptions {
  readonly signMethod?: SignMethod;
  readonly secret?: string;
  readonly at?: number;
  readonly override?: Readonly<Record<string, string | undefined>>;
  readonly signal?: AbortSignal;
  readonly contentType?: string;
}

/** Builds a checkbind request the way the TOP client must: signed over every parameter but `sign`. */
function checkbindRequest(traceId: string, o: RequestOptions = {}): Request {
  const signMethod = o.signMethod ?? "hmac-sha256";
  const params: Record<string, string | undefined> = {
    method: CHECKBIND_METHOD,
    app_key: APP_KEY,
    timestamp: formatTopTimestamp(new Date(o.at ?? T0)),
    v: "2.0",
    format: "json",
    sign_method: signMethod,
    open_id: "open-1",
    product_key: "pk-1",
    trace_id: traceId,
    user_type: "ilop",
    params: JSON.stringify({ ssProductKey: "ss", authCode: "a b&c" }),
    ...o.override,
  };
  const sign = signTopParams(params, o.secret ?? APP_SECRET, signMethod);
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...params, sign })) if (v !== undefined) body.set(k, v);
  return new Request("http://sim.test/router/rest", {
    method: "POST",
    headers: { "content-type": o.contentType ?? "application/x-www-form-urlencoded;charset=utf-8" },
    body: body.toString(),
    ...(o.signal ? { signal: o.signal } : {}),
  });
}

function makeSim(extra: Partial<TopSimulatorOptions> = {}): { sim: TopSimulator; clock: { t: number } } {
  const clock = { t: T0 };
  const sim = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET, now: () => clock.t, ...extra });
  return { sim, clock };
}

async function envelope(res: Response): Promise<Record<string, Record<string, unknown>>> {
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, Record<string, unknown>>;
}

async function success(res: Response): Promise<Record<string, unknown>> {
  const body = await envelope(res);
  const inner = body[CHECKBIND_RESPONSE_KEY];
  expect(inner, JSON.stringify(body)).toBeDefined();
  return inner!;
}

async function errorResponse(res: Response): Promise<Record<string, unknown>> {
  const body = await envelope(res);
  expect(body.error_response, JSON.stringify(body)).toBeDefined();
  return body.error_response!;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("createEagleEyeIds", () => {
  it("makes ids of TOP's shape: host, the time in ms, a sequence that wraps, the process", () => {
    const clock = { t: 1666589826891 };
    const next = createEagleEyeIds(() => clock.t);
    const first = next();
    expect(first).toMatch(EAGLEEYE_ID);
    expect(first).toHaveLength("213cbe9116665898268912730d06de".length);
    expect(first.slice(0, 2)).toBe("0b");
    expect(first.slice(8, 21)).toBe("1666589826891");
    expect(first.slice(21, 25)).toBe("1000");
    const ids = [first, ...Array.from({ length: 9000 }, () => next())];
    // Within one millisecond every id is distinct until the sequence comes round again.
    expect(new Set(ids.slice(0, 9000)).size).toBe(9000);
    expect(ids[9000]).toBe(first);
    clock.t += 1;
    expect(next().slice(8, 25)).toBe("16665898268921001");
    // The host and process parts are fixed for one simulator.
    expect(new Set(ids.map((id) => id.slice(0, 8) + id.slice(25))).size).toBe(1);
  });
});

describe("TOP gateway simulator", () => {
  it("names the success envelope after the method", () => {
    expect(CHECKBIND_RESPONSE_KEY).toBe("alibaba_ailabs_iot_device_inside_checkbind_invoke_response");
  });

  for (const signMethod of ["md5", "hmac", "hmac-sha256"] as const) {
    it(`answers a ${signMethod}-signed request with the scripted steps in order`, async () => {
      const { sim, clock } = makeSim();
      sim.setScript("t-1", {
        steps: [{ kind: "pending" }, { kind: "not_ok", retCode: 1001, message: "device offline" }, { kind: "bound" }],
      });

      const first = await success(await sim.fetch(checkbindRequest("t-1", { signMethod })));
      expect(first).toMatchObject({ result: true, ret_value: false, ret_code: 0, message: "" });
      expect(first.request_id).toMatch(/^[0-9a-z]{13}$/);
      clock.t += 2000;
      const second = await success(await sim.fetch(checkbindRequest("t-1", { signMethod, at: clock.t })));
      expect(second).toMatchObject({ result: false, ret_code: 1001, message: "device offline" });
      clock.t += 2000;
      const third = await success(await sim.fetch(checkbindRequest("t-1", { signMethod, at: clock.t })));
      expect(third).toMatchObject({ result: true, ret_value: true, ret_code: 0 });
      // After the steps run out, `then` (default pending) repeats.
      const fourth = await success(await sim.fetch(checkbindRequest("t-1", { signMethod, at: clock.t })));
      expect(fourth).toMatchObject({ result: true, ret_value: false });

      // Like TOP's, an answer's trace_id is the gateway's EagleEye id, new with every answer.
      const ids = [first, second, third, fourth].map((answer) => answer.trace_id);
      for (const id of ids) expect(id).toMatch(EAGLEEYE_ID);
      expect(new Set(ids).size).toBe(4);
      expect(String(first.trace_id).slice(8, 21)).toBe(String(T0));

      const trace = sim.getTrace("t-1");
      expect(trace.calls.map((c) => c.eagleeyeId)).toEqual(ids);
      expect(trace.callCount).toBe(4);
      expect(trace.calls.map((c) => c.outcome)).toEqual(["pending", "not_ok", "bound", "pending"]);
      expect(trace.calls[0]?.params.open_id).toBe("open-1");
      expect(trace.minStartGapMs).toBe(0);
      expect(sim.stats()).toMatchObject({ checkbindCalls: 4, rejectedTotal: 0 });
    });
  }

  it("binds after three pending polls by default", async () => {
    const { sim } = makeSim();
    const answers: unknown[] = [];
    for (let i = 0; i < 5; i++) answers.push((await success(await sim.fetch(checkbindRequest("fresh")))).ret_value);
    expect(answers).toEqual([false, false, false, true, true]);
    expect(sim.getTrace("fresh").scripted).toBe(false);
  });

  it("uses the defaultScript option for traces without a script", async () => {
    const { sim } = makeSim({ defaultScript: scriptFailedAfter(0, 7001, "no") });
    expect(await success(await sim.fetch(checkbindRequest("x")))).toMatchObject({ result: false, ret_code: 7001 });
  });

  it("accepts POST / as well as POST /router/rest", async () => {
    const { sim } = makeSim();
    const req = checkbindRequest("root");
    const res = await sim.fetch(new Request("http://sim.test/", req));
    expect(await success(res)).toMatchObject({ trace_id: expect.stringMatching(EAGLEEYE_ID) });
    expect(sim.getTrace("root").callCount).toBe(1);
  });

  it("restarts the step cursor when a trace is scripted again", async () => {
    const { sim } = makeSim();
    sim.setScript("t", scriptBoundAfter(1));
    await sim.fetch(checkbindRequest("t"));
    sim.setScript("t", scriptBoundAfter(0));
    expect(sim.getTrace("t").stepIndex).toBe(0);
    expect(await success(await sim.fetch(checkbindRequest("t")))).toMatchObject({ ret_value: true });
    expect(sim.getTrace("t").callCount).toBe(2);
  });

  describe("rejects what the real gateway rejects, without counting a checkbind call", () => {
    const cases: ReadonlyArray<{
      name: string;
      options: RequestOptions;
      code: number;
      reason: string;
      subCode?: string;
    }> = [
      { name: "a bad signature", options: { secret: "not-the-secret" }, code: 25, reason: "invalid_signature" },
      { name: "a timestamp 11 minutes fast", options: { at: T0 + 11 * 60_000 }, code: 31, reason: "invalid_timestamp" },
      { name: "a timestamp 11 minutes slow", options: { at: T0 - 11 * 60_000 }, code: 31, reason: "invalid_timestamp" },
      {
        name: "a malformed timestamp",
        options: { override: { timestamp: "2026-11-29T10:00:00Z" } },
        code: 31,
        reason: "invalid_timestamp",
      },
      { name: "a wrong app key", options: { override: { app_key: "87654321" } }, code: 29, reason: "invalid_app_key" },
      { name: "no app key", options: { override: { app_key: undefined } }, code: 28, reason: "missing_app_key" },
      {
        name: "a missing open_id",
        options: { override: { open_id: undefined } },
        code: 40,
        reason: "missing_parameter",
        subCode: "isv.missing-parameter:open_id",
      },
      {
        name: "an empty user_type",
        options: { override: { user_type: "" } },
        code: 40,
        reason: "missing_parameter",
        subCode: "isv.missing-parameter:user_type",
      },
      {
        name: "a wrong method",
        options: { override: { method: "taobao.item.seller.get" } },
        code: 22,
        reason: "invalid_method",
      },
      { name: "no method", options: { override: { method: undefined } }, code: 21, reason: "missing_method" },
      { name: "v 1.0", options: { override: { v: "1.0" } }, code: 34, reason: "invalid_version" },
      { name: "format xml", options: { override: { format: "xml" } }, code: 23, reason: "invalid_format" },
      {
        name: "an unknown sign_method",
        options: { override: { sign_method: "sha1" } },
        code: 25,
        reason: "invalid_sign_method",
      },
      {
        name: "params that are not JSON",
        options: { override: { params: "{ssProductKey:" } },
        code: 41,
        reason: "invalid_parameter",
        subCode: "isv.invalid-parameter:params",
      },
      { name: "a JSON body", options: { contentType: "application/json" }, code: 43, reason: "content_type" },
    ];

    for (const c of cases) {
      it(c.name, async () => {
        const { sim } = makeSim();
        const err = await errorResponse(await sim.fetch(checkbindRequest("t-bad", c.options)));
        expect(err.code).toBe(c.code);
        expect(typeof err.msg).toBe("string");
        expect(typeof err.request_id).toBe("string");
        if (c.subCode) expect(err.sub_code).toBe(c.subCode);
        const stats = sim.stats();
        expect(stats.checkbindCalls).toBe(0);
        expect(stats.rejectedTotal).toBe(1);
        expect(stats.rejected).toEqual({ [c.reason]: 1 });
        expect(sim.getTrace("t-bad").callCount).toBe(0);
      });
    }

    it("a request without a signature", async () => {
      const { sim } = makeSim();
      const body = new URLSearchParams({
        method: CHECKBIND_METHOD,
        app_key: APP_KEY,
        timestamp: formatTopTimestamp(new Date(T0)),
        v: "2.0",
        format: "json",
        sign_method: "md5",
        open_id: "o",
        product_key: "p",
        trace_id: "t",
        user_type: "ilop",
      });
      const res = await sim.fetch(
        new Request("http://sim.test/router/rest", {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body,
        }),
      );
      expect((await errorResponse(res)).code).toBe(24);
      expect(sim.stats().rejected).toEqual({ missing_signature: 1 });
    });

    it("a GET", async () => {
      const { sim } = makeSim();
      const err = await errorResponse(await sim.fetch(new Request("http://sim.test/router/rest")));
      expect(err.code).toBe(9);
      expect(sim.stats().rejected).toEqual({ http_method: 1 });
    });

    it("a tampered parameter after signing", async () => {
      const { sim } = makeSim();
      const req = checkbindRequest("t");
      const body = new URLSearchParams(await req.text());
      body.set("open_id", "someone-else");
      const res = await sim.fetch(
        new Request(req.url, { method: "POST", headers: req.headers, body: body.toString() }),
      );
      expect((await errorResponse(res)).code).toBe(25);
    });
  });

  it("accepts a timestamp 9 minutes off", async () => {
    const { sim } = makeSim();
    await success(await sim.fetch(checkbindRequest("t", { at: T0 - 9 * 60_000 })));
    expect(sim.stats().checkbindCalls).toBe(1);
  });

  it("signs over system parameters sent in the query string too", async () => {
    const { sim } = makeSim();
    const req = checkbindRequest("q");
    const all = new URLSearchParams(await req.text());
    const query = new URLSearchParams();
    const body = new URLSearchParams();
    for (const [k, v] of all)
      (["method", "app_key", "sign", "sign_method", "timestamp"].includes(k) ? query : body).set(k, v);
    const res = await sim.fetch(
      new Request(`http://sim.test/router/rest?${query}`, {
        method: "POST",
        headers: req.headers,
        body: body.toString(),
      }),
    );
    expect(await success(res)).toMatchObject({ result: true });
    expect(sim.getTrace("q").callCount).toBe(1);
  });

  describe("trouble steps", () => {
    it("ban: error_response code 7 with the ban length, and the app key stays banned", async () => {
      const { sim, clock } = makeSim();
      sim.setScript("b", scriptTrouble({ kind: "ban", seconds: 12 }, 1));
      const err = await errorResponse(await sim.fetch(checkbindRequest("b")));
      expect(err).toMatchObject({
        code: 7,
        msg: "App Call Limited",
        sub_code: "accesscontrol.limited-by-app-access-count",
        sub_msg: "This ban will last for 12 more seconds",
      });
      expect(typeof err.request_id).toBe("string");

      // Any trace of this app key, during the ban: refused, not a checkbind call.
      clock.t += 4500;
      const during = await errorResponse(await sim.fetch(checkbindRequest("other", { at: clock.t })));
      expect(during).toMatchObject({ code: 7, sub_msg: "This ban will last for 8 more seconds" });
      expect(sim.stats().rejected).toEqual({ banned: 1 });
      expect(sim.getTrace("other").callCount).toBe(0);

      clock.t += 7500;
      expect(await success(await sim.fetch(checkbindRequest("b", { at: clock.t })))).toMatchObject({ ret_value: true });
      expect(sim.stats()).toMatchObject({ checkbindCalls: 2, outcomes: { ban: 1, bound: 1 } });
    });

    it("ban is not enforced afterwards when enforceBans is false", async () => {
      const { sim } = makeSim({ enforceBans: false });
      sim.setScript("b", scriptTrouble({ kind: "ban", seconds: 60 }, 1));
      await errorResponse(await sim.fetch(checkbindRequest("b")));
      expect(await success(await sim.fetch(checkbindRequest("b")))).toMatchObject({ ret_value: true });
    });

    it("isp_error, reject, http_error and garbage", async () => {
      const { sim } = makeSim();
      sim.setScript("t", [
        { kind: "isp_error" },
        { kind: "reject", code: 11, subCode: "isv.permission-api-package-limit", msg: "Insufficient ISV Permissions" },
        { kind: "http_error", status: 502 },
        { kind: "garbage" },
      ]);
      expect(await errorResponse(await sim.fetch(checkbindRequest("t")))).toMatchObject({
        code: 15,
        sub_code: "isp.remote-service-error",
      });
      expect(await errorResponse(await sim.fetch(checkbindRequest("t")))).toMatchObject({
        code: 11,
        msg: "Insufficient ISV Permissions",
        sub_code: "isv.permission-api-package-limit",
      });
      const http = await sim.fetch(checkbindRequest("t"));
      expect(http.status).toBe(502);
      const garbage = await sim.fetch(checkbindRequest("t"));
      expect(garbage.status).toBe(200);
      const text = await garbage.text();
      expect(() => JSON.parse(text)).toThrow();
      expect(sim.getTrace("t").calls.map((c) => c.outcome)).toEqual(["isp_error", "reject", "http_error", "garbage"]);
    });
  });

  describe("instrumentation", () => {
    it("records overlapping calls of one trace", async () => {
      vi.useFakeTimers({ now: T0 });
      const sim = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
      sim.setScript("t", [
        { kind: "pending", delayMs: 1000 },
        { kind: "bound", delayMs: 1000 },
      ]);

      const a = sim.fetch(checkbindRequest("t"));
      await vi.advanceTimersByTimeAsync(300);
      const b = sim.fetch(checkbindRequest("t", { at: Date.now() }));
      await vi.advanceTimersByTimeAsync(100);
      expect(sim.getTrace("t").inFlight).toBe(2);
      await vi.advanceTimersByTimeAsync(1000);
      await success(await a);
      await success(await b);

      const trace = sim.getTrace("t");
      expect(trace.inFlight).toBe(0);
      expect(trace.maxInFlight).toBe(2);
      expect(trace.minStartGapMs).toBe(300);
      expect(trace.calls.map((c) => [c.startedAt - T0, c.endedAt === null ? null : c.endedAt - T0])).toEqual([
        [0, 1000],
        [300, 1300],
      ]);
      expect(sim.stats()).toMatchObject({ maxInFlight: 2, maxInFlightPerTrace: 2, inFlight: 0 });
    });

    it("sees single flight when calls do not overlap, and keeps traces apart", async () => {
      vi.useFakeTimers({ now: T0 });
      const sim = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
      sim.setScript("a", { steps: [], thereafter: { kind: "pending", delayMs: 500 } });
      sim.setScript("b", { steps: [], thereafter: { kind: "pending", delayMs: 500 } });

      const first = sim.fetch(checkbindRequest("a"));
      const other = sim.fetch(checkbindRequest("b"));
      await vi.advanceTimersByTimeAsync(2000);
      await first;
      await other;
      const second = sim.fetch(checkbindRequest("a", { at: Date.now() }));
      await vi.advanceTimersByTimeAsync(600);
      await second;

      expect(sim.getTrace("a")).toMatchObject({ maxInFlight: 1, minStartGapMs: 2000, callCount: 2 });
      expect(sim.stats()).toMatchObject({ maxInFlight: 2, maxInFlightPerTrace: 1 });
    });

    it("a delayed answer ends as soon as the request is aborted", async () => {
      vi.useFakeTimers({ now: T0 });
      const sim = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
      sim.setScript("slow", { steps: [], thereafter: { kind: "bound", delayMs: 60_000 } });

      const ac = new AbortController();
      const pending = sim.fetch(checkbindRequest("slow", { signal: ac.signal }));
      await vi.advanceTimersByTimeAsync(5000);
      expect(sim.getTrace("slow").inFlight).toBe(1);
      ac.abort();
      await pending;
      await vi.advanceTimersByTimeAsync(0);

      const trace = sim.getTrace("slow");
      expect(trace.inFlight).toBe(0);
      expect(trace.calls[0]).toMatchObject({ outcome: "aborted", startedAt: T0, endedAt: T0 + 5000 });
      expect(sim.stats().outcomes).toEqual({ aborted: 1 });
      expect(vi.getTimerCount()).toBe(0);
    });

    it("on a real socket, a client timeout frees the delayed call", async () => {
      const sim = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
      sim.setScript("sock", { steps: [], thereafter: { kind: "bound", delayMs: 30_000 } });
      const server = serve({ fetch: sim.fetch, port: 0, hostname: "127.0.0.1" });
      try {
        await new Promise<void>((resolve) => server.once("listening", () => resolve()));
        const { port } = server.address() as AddressInfo;
        const req = checkbindRequest("sock", { at: Date.now() });
        const call = fetch(`http://127.0.0.1:${port}/router/rest`, {
          method: "POST",
          headers: req.headers,
          body: await req.text(),
          signal: AbortSignal.timeout(150),
        });
        await expect(call).rejects.toThrow();
        await vi.waitFor(() => expect(sim.getTrace("sock").calls[0]?.outcome).toBe("aborted"), { timeout: 2000 });
        expect(sim.getTrace("sock").inFlight).toBe(0);
      } finally {
        // The undici client keeps its socket alive; close it rather than wait for the idle timeout.
        (server as Server).closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it("reset forgets scripts, calls and counters", async () => {
      const { sim } = makeSim();
      sim.setScript("t", scriptBoundAfter(0));
      await sim.fetch(checkbindRequest("t"));
      await sim.fetch(checkbindRequest("t", { secret: "x" }));
      sim.reset();
      expect(sim.stats()).toMatchObject({ requests: 0, checkbindCalls: 0, rejectedTotal: 0, traces: 0 });
      expect(sim.getTrace("t")).toMatchObject({ scripted: false, callCount: 0, calls: [] });
    });

    it("forgets the oldest traces beyond maxTraces", async () => {
      const { sim } = makeSim({ maxTraces: 2 });
      for (const id of ["a", "b", "c"]) await sim.fetch(checkbindRequest(id));
      expect(sim.stats().traces).toBe(2);
      expect(sim.getTrace("a").callCount).toBe(0);
      expect(sim.getTrace("c").callCount).toBe(1);
    });
  });
});
