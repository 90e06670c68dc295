// TOP signing on workerd: node:crypto under nodejs_compat gives MD5 and HMAC-MD5,
// which Web Crypto lacks. Checked against the public test vector and against the
// gateway double, which verifies each request's signature over real HTTP.
import { describe, expect, it } from "vitest";
import { createTopClient } from "../../src/top/client.js";
import { SIGN_METHODS, signTopParams } from "../../src/top/sign.js";
import { TOP_MD5_TEST_VECTOR } from "../support/top-signing.js";
import { GATEWAY_APP_KEY, GATEWAY_APP_SECRET } from "./constants.js";
import { gateway, newTraceId, registration } from "./support.js";

describe("TOP signing in workerd", () => {
  it("matches the public md5 test vector", () => {
    const { params, secret, sign } = TOP_MD5_TEST_VECTOR;
    expect(signTopParams(params, secret, "md5")).toBe(sign);
  });

  it.each(SIGN_METHODS)("%s: the gateway double accepts the signed checkbind call", async (signMethod) => {
    const traceId = newTraceId(`sign-${signMethod}`);
    await gateway.script(traceId, { outcome: "bound", after: 0 });
    const client = createTopClient({
      gatewayUrl: `${gateway.url()}/router/rest`,
      appKey: GATEWAY_APP_KEY,
      appSecret: GATEWAY_APP_SECRET,
      signMethod,
      timeoutMs: 5_000,
      terminalRetCodes: new Set(),
    });
    const outcome = await client.checkbind(registration(traceId));
    expect(outcome).toMatchObject({ kind: "bound" });
    const report = await gateway.trace(traceId);
    expect(report.call_count).toBe(1);
  });

  it.each(SIGN_METHODS)("%s: a wrong secret is refused by the double (it really verifies)", async (signMethod) => {
    const traceId = newTraceId(`badsign-${signMethod}`);
    const client = createTopClient({
      gatewayUrl: `${gateway.url()}/router/rest`,
      appKey: GATEWAY_APP_KEY,
      appSecret: "not-the-secret",
      signMethod,
      timeoutMs: 5_000,
      terminalRetCodes: new Set(),
    });
    const outcome = await client.checkbind(registration(traceId));
    expect(outcome).toMatchObject({ kind: "rejected" });
    expect((await gateway.trace(traceId)).call_count).toBe(0);
  });
});
