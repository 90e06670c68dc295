import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { BindRegistration, UpstreamInfo } from "../../src/domain/bind.js";
import {
  applyOutcome,
  canonicalJson,
  createInitialState,
  isSameRegistration,
  registrationText,
} from "../../src/domain/state.js";
import { upstreamInfo } from "../support/outcomes.js";

const REG: BindRegistration = { trace_id: "t-1", open_id: "o", product_key: "p", user_type: "ilop" };
const T0 = Date.UTC(2026, 10, 29, 10, 0, 0);

function upstream(fields: Partial<UpstreamInfo> = {}): UpstreamInfo {
  return upstreamInfo({ request_id: "r-1", eagleeye_id: "213cbe9116665898268912730d06de", ...fields });
}

describe("applyOutcome: versions (SPEC §3)", () => {
  const initial = createInitialState(REG, T0, 180_000);
  const first = applyOutcome(initial, { kind: "waiting", upstream: upstream() }, T0 + 2000);

  it("the first answer is a change: upstream goes from null to its ret_code", () => {
    expect(initial).toMatchObject({ version: 1, upstream: null });
    expect(first).toMatchObject({ version: 2, attempts: 1, upstream: upstream() });
  });

  it("new request and EagleEye ids are kept without a new version", () => {
    const ids = { request_id: "r-2", eagleeye_id: "213d614316665898871384404d071e" };
    const next = applyOutcome(first, { kind: "waiting", upstream: upstream(ids) }, T0 + 4000);
    expect(next).toMatchObject({
      version: 2,
      attempts: 2,
      upstream: ids,
      updated_at: new Date(T0 + 4000).toISOString(),
    });
  });

  it("a new ret_code or message makes one, with the ids of that answer", () => {
    const changed = upstream({ ret_code: 1001, eagleeye_id: "0b5a1c3f17646042271211000d4e2a" });
    expect(applyOutcome(first, { kind: "waiting", upstream: changed }, T0 + 4000)).toMatchObject({
      version: 3,
      upstream: changed,
    });
    expect(applyOutcome(first, { kind: "bound", upstream: upstream({ message: "ok" }) }, T0 + 4000)).toMatchObject({
      version: 3,
      status: "bound",
      final: true,
    });
  });

  it("an answer without upstream fields keeps the last answer's ids", () => {
    const errored = applyOutcome(first, { kind: "transient", message: "HTTP 502", requestId: "" }, T0 + 4000);
    expect(errored).toMatchObject({ version: 3, upstream: upstream(), error: { code: "upstream_unavailable" } });
  });
});

describe("canonicalJson", () => {
  it("is JSON with every object's keys sorted, at any depth, whatever order they came in", () => {
    const value = JSON.parse('{"b":1,"a":{"d":[3,{"z":true,"y":null}],"c":"é\\n\\u0000"},"e":[]}');
    expect(canonicalJson(value)).toBe('{"a":{"c":"é\\n\\u0000","d":[3,{"y":null,"z":true}]},"b":1,"e":[]}');
    expect(canonicalJson({ a: undefined, b: [undefined] })).toBe('{"b":[null]}');
    expect(canonicalJson("x")).toBe('"x"');
    const params = { ssProductKey: "k", authCode: "c" };
    expect(isSameRegistration({ ...REG, params }, { params: { authCode: "c", ssProductKey: "k" }, ...REG })).toBe(true);
    expect(isSameRegistration({ ...REG, params }, { ...REG, params: { ...params, authCode: "d" } })).toBe(false);
  });

  it("of a registration, is the text registrationText writes over its known fields, whatever their order", () => {
    const text = fc.string({ unit: "grapheme", minLength: 1, maxLength: 8 });
    const registration = fc.record(
      {
        trace_id: text,
        open_id: text,
        product_key: text,
        user_type: text,
        device_name: text,
        iot_id: text,
        server_event_request_id: text,
        params: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 3 })),
        callback_url: text,
      },
      { requiredKeys: ["trace_id", "open_id", "product_key", "user_type"] },
    );
    fc.assert(
      fc.property(registration, fc.boolean(), (reg, reversed) => {
        // Key order as a client may send it: reversed, or as generated.
        const sent = (reversed ? Object.fromEntries(Object.entries(reg).reverse()) : reg) as BindRegistration;
        expect(registrationText(sent)).toBe(canonicalJson(reg));
        expect(JSON.parse(registrationText(sent))).toEqual(JSON.parse(JSON.stringify(reg)));
      }),
      { numRuns: 300 },
    );
  });
});

describe("createInitialState", () => {
  it("writes each instant's own time, whatever was formatted before", () => {
    for (const now of [T0, T0, T0 + 1, T0, T0 + 86_400_000]) {
      const state = createInitialState(REG, now, 180_000);
      expect(state.created_at).toBe(new Date(now).toISOString());
      expect(state.updated_at).toBe(state.created_at);
      expect(state.expires_at).toBe(new Date(now + 180_000).toISOString());
    }
  });
});
