// The simulator as a TOP sandbox (SPEC §6), called the way another team's TOP client would
// call it: signed by test/support/top-signing.ts, from the public rules of SPEC §2, with
// none of bindwatch's own TOP code.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/runtime/config.js";
import { createLogger } from "../../src/runtime/logger.js";
import { startNodeServer } from "../../src/runtime/node-server.js";
import { ensureBuilt } from "../support/build.js";
import { createLogSink } from "../support/log-sink.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import {
  type CheckbindCall,
  checkbindRequest,
  formatGmt8,
  CHECKBIND_SUCCESS_KEY as SUCCESS_KEY,
  signTop,
  TOP_MD5_TEST_VECTOR,
} from "../support/top-signing.js";

const APP_KEY = "20240601";
const APP_SECRET = "sandbox-secret-0123456789";
const EAGLEEYE_ID = /^[0-9a-f]{8}\d{13}\d{4}d[0-9a-f]{4}$/;

/** One checkbind call to `<base>/sim/router/rest`; answers the parsed JSON envelope. */
async function checkbind(
  base: string,
  traceId: string,
  o: Partial<CheckbindCall> = {},
): Promise<Record<string, Record<string, unknown>>> {
  const res = await fetch(
    checkbindRequest(`${base}/sim/router/rest`, { appKey: APP_KEY, appSecret: APP_SECRET, traceId, ...o }),
  );
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, Record<string, unknown>>;
}

describe("the signing of these suites (test/support/top-signing.ts)", () => {
  it("matches TOP's public md5 test vector", () => {
    const { params, secret, sign } = TOP_MD5_TEST_VECTOR;
    expect(signTop(params, secret, "md5")).toBe(sign);
    expect(formatGmt8(Date.UTC(2016, 0, 1, 4, 0, 0))).toBe("2016-01-01 12:00:00");
  });
});

describe("POST /sim/router/rest: the sandbox gateway", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ SIMULATOR_APP_KEY: APP_KEY, SIMULATOR_APP_SECRET: APP_SECRET });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it.each(["md5", "hmac-sha256"] as const)("answers a %s-signed call with the success envelope", async (method) => {
    const traceId = newTraceId(`sandbox-${method}`);
    const body = await checkbind(server.url, traceId, { signMethod: method });
    const answer = body[SUCCESS_KEY];
    expect(answer, JSON.stringify(body)).toMatchObject({ result: true, ret_value: false, ret_code: 0, message: "" });
    expect(answer?.request_id).toEqual(expect.any(String));
    // Like TOP's: an EagleEye id of the gateway's own, not the request's trace_id.
    expect(answer?.trace_id).toMatch(EAGLEEYE_ID);
    expect(answer?.trace_id).not.toBe(traceId);
    expect(server.simulator.getTrace(traceId).calls[0]?.params.params).toBe(
      '{"ssProductKey":"ss","authCode":"a b&c=d"}',
    );
  });

  it("refuses a wrong secret with code 25 and a wrong app key with code 29", async () => {
    const traceId = newTraceId("sandbox-forged");
    expect((await checkbind(server.url, traceId, { appSecret: "not-the-secret" })).error_response).toMatchObject({
      code: 25,
      msg: "Invalid Signature",
    });
    expect((await checkbind(server.url, traceId, { appKey: "sim-app-key" })).error_response).toMatchObject({
      code: 29,
    });
    expect(server.simulator.getTrace(traceId).callCount).toBe(0);
  });

  it("refuses a timestamp more than 10 minutes off with code 31", async () => {
    const traceId = newTraceId("sandbox-stale");
    // 11 minutes either way, and UTC wall-clock time where GMT+8 is due: what an SDK that
    // formats the host's local time sends from a UTC host without TZ=Asia/Shanghai.
    for (const offMs of [-11 * 60_000, 11 * 60_000, -8 * 3_600_000]) {
      expect((await checkbind(server.url, traceId, { at: Date.now() + offMs })).error_response).toMatchObject({
        code: 31,
        msg: "Invalid Timestamp",
      });
    }
    expect(server.simulator.getTrace(traceId).callCount).toBe(0);
  });

  it("answers other methods with code 9, as the gateway does", async () => {
    const res = await fetch(`${server.url}/sim/router/rest`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ error_response: { code: 9 } });
  });

  it("is the simulator bindwatch polls: a script set on /sim applies to both", async () => {
    const traceId = newTraceId("sandbox-shared");
    const put = await fetch(`${server.url}/sim/traces/${traceId}/script`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ outcome: "failed", after: 0, ret_code: 1001, message: "device offline" }),
    });
    expect(put.status).toBe(200);
    expect((await checkbind(server.url, traceId))[SUCCESS_KEY]).toMatchObject({
      result: false,
      ret_code: 1001,
      message: "device offline",
    });
    expect((await postBind(server.url, bindBody(traceId))).status).toBe(201);
    await waitUntil(() => server.simulator.getTrace(traceId).callCount >= 2, 5_000, "bindwatch's own call");
    const seen = await waitUntil(async () => {
      const state = (await (await fetch(`${server.url}/v1/binds/${traceId}`)).json()) as {
        upstream: { ret_code: number; eagleeye_id: string } | null;
      };
      return state.upstream;
    }, 5_000);
    expect(seen.ret_code).toBe(1001);
    // Both callers' calls are in one log, each answer with its own EagleEye id.
    const calls = server.simulator.getTrace(traceId).calls;
    expect(calls.map((call) => call.params.app_key)).toEqual(calls.map(() => APP_KEY));
    expect(calls.map((call) => call.eagleeyeId)).toContain(seen.eagleeye_id);
    await fetch(`${server.url}/v1/binds/${traceId}`, { method: "DELETE" });
  });
});

describe("sandbox credentials left unset", () => {
  // The demo page is the build's dist/assets/demo.html.
  beforeAll(() => ensureBuilt(), 120_000);

  it("are random per start, in the start-up log and on the demo page", async () => {
    const log = createLogSink();
    const config = parseConfig({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" });
    const running = await startNodeServer(config, createLogger("info", { destination: log.stream }));
    const sandbox = running.sandbox!;
    try {
      expect(sandbox.appKey).toMatch(/^\d{8}$/);
      expect(sandbox.appSecret).toMatch(/^[0-9a-f]{32}$/);
      expect(sandbox.url).toBe(`${running.url}/sim/router/rest`);
      const logged = log.lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((l) => l.sandbox_url);
      expect(logged).toMatchObject({
        sandbox_url: sandbox.url,
        sandbox_app_key: sandbox.appKey,
        sandbox_app_secret: sandbox.appSecret,
      });
      const page = await (await fetch(`${running.url}/`)).text();
      expect(page).toContain(`value="${sandbox.appKey}"`);
      expect(page).toContain(`value="${sandbox.appSecret}"`);

      const answer = await checkbind(running.url, newTraceId("sandbox-random"), {
        appKey: sandbox.appKey,
        appSecret: sandbox.appSecret,
        signMethod: "md5",
      });
      expect(answer[SUCCESS_KEY]).toMatchObject({ result: true });
    } finally {
      await running.stop();
    }
    const again = await startNodeServer(config, createLogger("silent"));
    await again.stop();
    expect(again.sandbox?.appSecret).not.toBe(sandbox.appSecret);
  });
});
