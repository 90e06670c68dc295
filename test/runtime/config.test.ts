import { describe, expect, it } from "vitest";
import { redactUrl } from "../../src/http/access.js";
import { ConfigError, parseConfig } from "../../src/runtime/config.js";
import { createLogger, maskOpenId } from "../../src/runtime/logger.js";
import { createLogSink } from "../support/log-sink.js";

describe("parseConfig", () => {
  it("gives the SPEC §5 defaults, simulator mode without credentials, and a frozen object", () => {
    const config = parseConfig({});
    expect(config).toMatchObject({
      port: 8787,
      host: "0.0.0.0",
      simulator: true,
      redisUrl: undefined,
      pollIntervalMs: 2000,
      pollLingerMs: 30_000,
      bindTimeoutMs: 180_000,
      resultTtlMs: 600_000,
      heartbeatMs: 15_000,
      upstreamQps: 40,
      maxStreams: 15_000,
      logLevel: "info",
      top: { gatewayUrl: "https://gw.api.taobao.com/router/rest", signMethod: "hmac-sha256", timeoutMs: 5000 },
    });
    expect(Object.isFrozen(config)).toBe(true);
    expect(config.terminalRetCodes.size).toBe(0);
    // Unset: the runtime picks random sandbox credentials.
    expect(config.sandbox).toEqual({ appKey: undefined, appSecret: undefined });
  });

  it("reads the sandbox credentials of simulator mode", () => {
    const config = parseConfig({ SIMULATOR_APP_KEY: "12345678", SIMULATOR_APP_SECRET: " s3cret-s3cret " });
    expect(config.sandbox).toEqual({ appKey: "12345678", appSecret: "s3cret-s3cret" });
    expect(parseConfig({ SIMULATOR_APP_SECRET: "only-the-secret" }).sandbox).toEqual({
      appKey: undefined,
      appSecret: "only-the-secret",
    });
  });

  it.each([
    ["SIMULATOR_APP_KEY", { SIMULATOR_APP_KEY: "has space" }],
    ["SIMULATOR_APP_KEY", { SIMULATOR_APP_KEY: "k".repeat(65) }],
    ["SIMULATOR_APP_SECRET", { SIMULATOR_APP_SECRET: "short" }],
    ["SIMULATOR_APP_SECRET", { SIMULATOR_APP_SECRET: "has a space" }],
    ["SIMULATOR_APP_SECRET", { SIMULATOR_APP_SECRET: "密钥密钥密钥密钥" }],
    ["SIMULATOR_APP_KEY", { SIMULATOR_APP_KEY: "12345678", TOP_APP_KEY: "k", TOP_APP_SECRET: "s" }],
    ["SIMULATOR_APP_SECRET", { SIMULATOR_APP_SECRET: "s3cret-s3cret", TOP_APP_KEY: "k", TOP_APP_SECRET: "s" }],
  ])("stops on a bad %s and names it (%j)", (name, env) => {
    expect(() => parseConfig(env)).toThrow(new RegExp(`^${name}:`));
  });

  it("reads every variable", () => {
    const config = parseConfig({
      TOP_APP_KEY: "k",
      TOP_APP_SECRET: "s",
      TOP_SIGN_METHOD: "md5",
      TERMINAL_RET_CODES: "1001, -2",
      API_KEYS: "a,b",
      CORS_ORIGINS: "https://app.example.com,http://localhost:3000",
      REDIS_URL: "redis://127.0.0.1:6379/0",
    });
    expect(config.simulator).toBe(false);
    expect(config.top.signMethod).toBe("md5");
    expect([...config.terminalRetCodes]).toEqual([1001, -2]);
    expect(config.apiKeys).toEqual(["a", "b"]);
    expect(config.corsOrigins).toEqual(["https://app.example.com", "http://localhost:3000"]);
    expect(config.redisUrl).toBe("redis://127.0.0.1:6379/0");
  });

  it.each([
    ["POLL_INTERVAL_MS", "abc"],
    ["PORT", "70000"],
    ["TOP_SIGN_METHOD", "sha1"],
    ["TERMINAL_RET_CODES", "1,x"],
    ["CORS_ORIGINS", "https://app.example.com/path"],
    ["REDIS_URL", "http://localhost"],
    ["TOP_GATEWAY_URL", "not a url"],
    ["WATCH_TOKEN_SECRET", "short"],
    ["LOG_LEVEL", "loud"],
    ["TOP_APP_KEY", "only-the-key"],
  ])("stops on a bad %s and names it", (name, value) => {
    expect(() => parseConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => parseConfig({ [name]: value })).toThrow(
      new RegExp(`^${name === "TOP_APP_KEY" ? "TOP_APP_SECRET" : name}:`),
    );
  });
});

describe("simulator or live, and production (SPEC §5, §6)", () => {
  const creds = { TOP_APP_KEY: "k", TOP_APP_SECRET: "s" };
  const refusal = (env: Record<string, string>, opts?: { production: boolean }) => {
    try {
      parseConfig(env, opts);
    } catch (err) {
      if (err instanceof ConfigError) return err.variables;
      throw err;
    }
    return null;
  };

  it("outside production: the simulator without credentials, live with them, SIMULATOR to choose", () => {
    expect(parseConfig({})).toMatchObject({ simulator: true, mode: "simulator", production: false });
    expect(parseConfig(creds)).toMatchObject({ simulator: false, mode: "live" });
    expect(parseConfig({ SIMULATOR: "on" })).toMatchObject({ mode: "simulator" });
    expect(parseConfig({ ...creds, SIMULATOR: "off" })).toMatchObject({ mode: "live" });
    expect(refusal({ SIMULATOR: "off" })).toEqual(["TOP_APP_KEY", "TOP_APP_SECRET"]);
    expect(refusal({ ...creds, SIMULATOR: "on" })).toEqual(["SIMULATOR", "TOP_APP_KEY"]);
    expect(refusal({ TOP_APP_SECRET: "s", SIMULATOR: "on" })).toEqual(["SIMULATOR", "TOP_APP_SECRET"]);
    expect(refusal({ SIMULATOR: "yes" })).toEqual(["SIMULATOR"]);
  });

  it("in production (NODE_ENV or the edge): no fallback to the simulator, no open access by accident", () => {
    const prod = { NODE_ENV: "production" };
    expect(refusal(prod)).toEqual(["TOP_APP_KEY", "TOP_APP_SECRET"]);
    expect(refusal({ ...prod, API_KEYS: "a" })).toEqual(["TOP_APP_KEY", "TOP_APP_SECRET"]);
    expect(refusal({ ...prod, ...creds })).toEqual(["API_KEYS", "ALLOW_OPEN_ACCESS"]);
    expect(refusal({ ...prod, ...creds, ALLOW_OPEN_ACCESS: "false" })).toEqual(["API_KEYS", "ALLOW_OPEN_ACCESS"]);
    expect(refusal({ ...prod, ...creds, ALLOW_OPEN_ACCESS: "maybe" })).toEqual(["ALLOW_OPEN_ACCESS"]);
    expect(parseConfig({ ...prod, ...creds, API_KEYS: "a" })).toMatchObject({ production: true, mode: "live" });
    expect(parseConfig({ ...prod, ...creds, ALLOW_OPEN_ACCESS: "true" })).toMatchObject({ allowOpenAccess: true });
    expect(parseConfig({ ...prod, SIMULATOR: "on", API_KEYS: "a" })).toMatchObject({ mode: "simulator" });
    // The edge holds every Worker to the same rules, whatever NODE_ENV says.
    expect(refusal({}, { production: true })).toEqual(["TOP_APP_KEY", "TOP_APP_SECRET"]);
    expect(parseConfig({ SIMULATOR: "on", ALLOW_OPEN_ACCESS: "true" }, { production: true }).mode).toBe("simulator");
  });

  it("reads REGISTRATIONS_PER_MINUTE as a positive whole number", () => {
    expect(parseConfig({}).registrationsPerMinute).toBeUndefined();
    expect(parseConfig({ REGISTRATIONS_PER_MINUTE: "120" }).registrationsPerMinute).toBe(120);
    expect(refusal({ REGISTRATIONS_PER_MINUTE: "0" })).toEqual(["REGISTRATIONS_PER_MINUTE"]);
    expect(refusal({ REGISTRATIONS_PER_MINUTE: "ten" })).toEqual(["REGISTRATIONS_PER_MINUTE"]);
  });
});

describe("logger", () => {
  it("censors secrets and masks open_id", async () => {
    const { lines, stream } = createLogSink();
    const logger = createLogger("info", { destination: stream });
    logger.info(
      { trace_id: "t", open_id: "ou_1234567890", token: "tok-secret", headers: { authorization: "Bearer k" } },
      "x",
    );
    logger.flush();
    await new Promise((r) => setImmediate(r));
    const line = lines.join("");
    expect(line).toContain('"trace_id":"t"');
    expect(line).not.toContain("ou_1234567890");
    expect(line).toContain("ou***90");
    expect(line).not.toContain("tok-secret");
    expect(line).not.toContain("Bearer k");
  });

  it("masks and redacts helpers", () => {
    expect(maskOpenId("abc")).toBe("***");
    expect(redactUrl("/v1/binds/t/events?token=abc")).toBe("/v1/binds/t/events?[redacted]");
    expect(redactUrl("/healthz")).toBe("/healthz");
  });
});
