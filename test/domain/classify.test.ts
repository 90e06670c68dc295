import { describe, expect, it } from "vitest";
import { CHECKBIND_RESPONSE_KEY, classifyCheckbindResponse, parseBanMs } from "../../src/domain/classify.js";

const NONE: ReadonlySet<number> = new Set();
/** The trace_id of a TOP answer: its gateway's EagleEye id (SPEC §3). */
const EAGLEEYE_ID = "213cbe9116665898268912730d06de";

function success(fields: Record<string, unknown>): string {
  return JSON.stringify({ [CHECKBIND_RESPONSE_KEY]: { request_id: "req-1", ...fields } });
}

function error(fields: Record<string, unknown>): string {
  return JSON.stringify({ error_response: { request_id: "req-2", ...fields } });
}

describe("parseBanMs", () => {
  it.each([
    ["This ban will last for 12 more seconds", 12_000],
    ["This ban will last for 31062 more seconds", 31_062_000],
    ["This ban will last for 1 more second", 1_000],
    ["this BAN will last for 3 more seconds.", 3_000],
    ["This ban will last for 0 more seconds", 1_000],
    ["App Call Limited", 1_000],
    ["", 1_000],
    [undefined, 1_000],
  ])("%j → %d ms", (text, ms) => {
    expect(parseBanMs(text)).toBe(ms);
  });
});

describe("classifyCheckbindResponse: success", () => {
  it("result and ret_value true → bound", () => {
    const body = success({ result: true, ret_value: true, ret_code: 0, message: "ok", trace_id: EAGLEEYE_ID });
    expect(classifyCheckbindResponse(200, body, NONE)).toEqual({
      kind: "bound",
      upstream: { ret_code: 0, message: "ok", request_id: "req-1", eagleeye_id: EAGLEEYE_ID },
    });
  });

  it("keeps the answer's trace_id, the gateway's EagleEye id, as eagleeye_id in every success shape", () => {
    for (const fields of [
      { result: true, ret_value: false },
      { result: false, ret_code: 1001 },
    ]) {
      const body = success({ ...fields, trace_id: EAGLEEYE_ID });
      expect(classifyCheckbindResponse(200, body, new Set([1001]))).toMatchObject({
        upstream: { eagleeye_id: EAGLEEYE_ID },
      });
    }
    // Absent or not a string: empty, as request_id.
    expect(classifyCheckbindResponse(200, success({ result: true, trace_id: 42 }), NONE)).toMatchObject({
      upstream: { eagleeye_id: "" },
    });
  });

  it("result true, ret_value false → waiting", () => {
    expect(classifyCheckbindResponse(200, success({ result: true, ret_value: false, ret_code: 0 }), NONE)).toEqual({
      kind: "waiting",
      upstream: { ret_code: 0, message: "", request_id: "req-1", eagleeye_id: "" },
    });
  });

  it("result true, ret_value missing → waiting", () => {
    expect(classifyCheckbindResponse(200, success({ result: true }), NONE)).toMatchObject({
      kind: "waiting",
      upstream: { ret_code: null, message: "" },
    });
  });

  it("result false with a non-terminal ret_code → waiting, keeping ret_code and message", () => {
    const body = success({ result: false, ret_value: false, ret_code: 1001, message: "设备未上线" });
    expect(classifyCheckbindResponse(200, body, new Set([2001]))).toEqual({
      kind: "waiting",
      upstream: { ret_code: 1001, message: "设备未上线", request_id: "req-1", eagleeye_id: "" },
    });
  });

  it("result false with a terminal ret_code → failed", () => {
    const body = success({ result: false, ret_code: 2001, message: "bind refused" });
    expect(classifyCheckbindResponse(200, body, new Set([2001]))).toEqual({
      kind: "failed",
      upstream: { ret_code: 2001, message: "bind refused", request_id: "req-1", eagleeye_id: "" },
    });
  });

  it("result false wins over ret_value true", () => {
    expect(classifyCheckbindResponse(200, success({ result: false, ret_value: true, ret_code: 5 }), NONE).kind).toBe(
      "waiting",
    );
  });

  it("accepts a numeric-string ret_code (terminal check included)", () => {
    const body = success({ result: false, ret_code: "2001" });
    expect(classifyCheckbindResponse(200, body, new Set([2001]))).toMatchObject({
      kind: "failed",
      upstream: { ret_code: 2001 },
    });
  });

  it("treats a non-numeric ret_code as absent", () => {
    expect(classifyCheckbindResponse(200, success({ result: true, ret_code: "abc" }), NONE)).toMatchObject({
      upstream: { ret_code: null },
    });
  });

  it('accepts "true"/"false" strings for result and ret_value', () => {
    expect(classifyCheckbindResponse(200, success({ result: "true", ret_value: "true" }), NONE).kind).toBe("bound");
    expect(classifyCheckbindResponse(200, success({ result: "true", ret_value: "false" }), NONE).kind).toBe("waiting");
    expect(classifyCheckbindResponse(200, success({ result: "false", ret_code: 7 }), new Set([7])).kind).toBe("failed");
  });

  it("does not treat other truthy values as true", () => {
    expect(classifyCheckbindResponse(200, success({ result: true, ret_value: 1 }), NONE).kind).toBe("waiting");
    expect(classifyCheckbindResponse(200, success({ result: true, ret_value: "TRUE" }), NONE).kind).toBe("waiting");
  });

  it("a result that is not a Boolean → transient", () => {
    expect(classifyCheckbindResponse(200, success({ ret_value: true }), NONE)).toMatchObject({
      kind: "transient",
      requestId: "req-1",
    });
    expect(classifyCheckbindResponse(200, success({ result: 1, ret_value: true }), NONE).kind).toBe("transient");
  });

  it("request_id, eagleeye_id and message default to empty strings", () => {
    const body = JSON.stringify({ [CHECKBIND_RESPONSE_KEY]: { result: true, ret_value: false, message: 42 } });
    expect(classifyCheckbindResponse(200, body, NONE)).toEqual({
      kind: "waiting",
      upstream: { ret_code: null, message: "", request_id: "", eagleeye_id: "" },
    });
  });

  it("accepts any 2xx status", () => {
    expect(classifyCheckbindResponse(204, success({ result: true, ret_value: true }), NONE).kind).toBe("bound");
  });
});

describe("classifyCheckbindResponse: error_response", () => {
  it("code 7 with a ban in sub_msg → rate_limited for that long", () => {
    const body = error({
      code: 7,
      msg: "App Call Limited",
      sub_code: "accesscontrol.limited-by-app-access-count",
      sub_msg: "This ban will last for 12 more seconds",
    });
    expect(classifyCheckbindResponse(200, body, NONE)).toEqual({
      kind: "rate_limited",
      banMs: 12_000,
      message:
        "TOP error 7 App Call Limited (accesscontrol.limited-by-app-access-count: This ban will last for 12 more seconds)",
      requestId: "req-2",
    });
  });

  it.each([4, 5, 6, 7, 8])("code %d → rate_limited", (code) => {
    expect(classifyCheckbindResponse(200, error({ code, msg: "Call Limited" }), NONE)).toMatchObject({
      kind: "rate_limited",
      banMs: 1_000,
      requestId: "req-2",
    });
  });

  it("takes the ban from msg when sub_msg lacks it", () => {
    const body = error({ code: "8", msg: "This ban will last for 31062 more seconds", sub_msg: "limited" });
    expect(classifyCheckbindResponse(200, body, NONE)).toMatchObject({ kind: "rate_limited", banMs: 31_062_000 });
  });

  it("defaults the ban to 1 s when no length is given", () => {
    expect(classifyCheckbindResponse(200, error({ code: 7 }), NONE)).toMatchObject({
      kind: "rate_limited",
      banMs: 1_000,
      message: "TOP error 7",
    });
  });

  it.each([10, 15, 50, "15"])("code %j → transient", (code) => {
    expect(classifyCheckbindResponse(200, error({ code, msg: "Remote service error" }), NONE)).toMatchObject({
      kind: "transient",
      requestId: "req-2",
    });
  });

  it("an isp.* sub_code → transient whatever the code", () => {
    const body = error({ code: 40, msg: "Remote service error", sub_code: "isp.remote-service-timeout" });
    expect(classifyCheckbindResponse(200, body, NONE)).toEqual({
      kind: "transient",
      message: "TOP error 40 Remote service error (isp.remote-service-timeout)",
      requestId: "req-2",
    });
  });

  it("an isv.* sub_code → rejected, naming code, msg, sub_code and sub_msg", () => {
    const body = error({
      code: 41,
      msg: "Invalid arguments",
      sub_code: "isv.invalid-parameter",
      sub_msg: "bad open_id",
    });
    expect(classifyCheckbindResponse(200, body, NONE)).toEqual({
      kind: "rejected",
      message: "TOP error 41 Invalid arguments (isv.invalid-parameter: bad open_id)",
      requestId: "req-2",
    });
  });

  it("a fault code (10, 15, 50) stays transient even with an isv.* sub_code (table order)", () => {
    const body = error({ code: 15, msg: "Remote service error", sub_code: "isv.invalid-parameter:open_id" });
    expect(classifyCheckbindResponse(200, body, NONE).kind).toBe("transient");
  });

  it.each([
    11, 12, 13, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 40, 41, 42, 43, 1, 9, 99,
  ])("code %d → rejected", (code) => {
    const outcome = classifyCheckbindResponse(200, error({ code, msg: "Something wrong" }), NONE);
    expect(outcome).toEqual({ kind: "rejected", message: `TOP error ${code} Something wrong`, requestId: "req-2" });
  });

  it("an error_response without a code → rejected", () => {
    expect(classifyCheckbindResponse(200, JSON.stringify({ error_response: { msg: "odd" } }), NONE)).toEqual({
      kind: "rejected",
      message: "TOP error odd",
      requestId: "",
    });
  });

  it("error_response wins when a body holds both shapes", () => {
    const body = JSON.stringify({
      error_response: { code: 7 },
      [CHECKBIND_RESPONSE_KEY]: { result: true, ret_value: true },
    });
    expect(classifyCheckbindResponse(200, body, NONE).kind).toBe("rate_limited");
  });
});

describe("classifyCheckbindResponse: transient", () => {
  it.each([199, 301, 400, 403, 429, 500, 502, 503])("HTTP %d → transient, whatever the body", (status) => {
    expect(classifyCheckbindResponse(status, success({ result: true, ret_value: true }), NONE)).toEqual({
      kind: "transient",
      message: `HTTP ${status}`,
      requestId: "",
    });
  });

  it.each(["", "<html>502 Bad Gateway</html>", '{"error_response":', "undefined"])("invalid JSON %j", (text) => {
    expect(classifyCheckbindResponse(200, text, NONE)).toEqual({
      kind: "transient",
      message: "checkbind response is not JSON",
      requestId: "",
    });
  });

  it.each([
    "null",
    "42",
    '"text"',
    "[]",
    "{}",
    '{"some_other_method_response":{"result":true}}',
    `{"${CHECKBIND_RESPONSE_KEY}":"yes"}`,
    `{"${CHECKBIND_RESPONSE_KEY}":[{"result":true}]}`,
    '{"error_response":"no"}',
  ])("unexpected JSON %s", (text) => {
    expect(classifyCheckbindResponse(200, text, NONE)).toMatchObject({ kind: "transient", requestId: "" });
  });
});
