import { describe, expect, it } from "vitest";
import { censorSecrets } from "../../src/domain/log-censor.js";

describe("censorSecrets", () => {
  it("hands a line without secrets back as it is, without a copy", () => {
    const line = { trace_id: "t", created: true, nested: { status: "pending" }, list: [1, 2] };
    expect(censorSecrets(line)).toBe(line);
  });

  it("censors secret keys at any depth and masks open_id, leaving the logged object untouched", () => {
    const line = {
      open_id: "ou_1234567890",
      config: { redis: { auth: { password: "pw" } }, top: { appSecret: "s" } },
      headers: { authorization: "Bearer k" },
      kept: "visible",
    };
    expect(censorSecrets(line)).toEqual({
      open_id: "ou***90",
      config: { redis: { auth: { password: "[redacted]" } }, top: { appSecret: "[redacted]" } },
      headers: { authorization: "[redacted]" },
      kept: "visible",
    });
    expect(line.config.redis.auth.password).toBe("pw");
  });

  it("leaves errors to the logger, or maps them when told how", () => {
    const err = new Error("boom");
    expect(censorSecrets({ err })).toEqual({ err });
    expect(censorSecrets({ err }, (e) => ({ name: e.name, message: e.message }))).toEqual({
      err: { name: "Error", message: "boom" },
    });
  });
});
