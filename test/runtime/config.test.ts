import { describe, expect, it } from "vitest";
import { redactUrl } from "../../src/http/access.js";
import { parseConfig } from "../../src/runtime/config.js";
import { ConfigError } from "../../src/runtime/config-env.js";
import { createLogger, maskOpenId } from "../../src/runtime/logger.js";
import { createLogSink } from "../support/log-sink.js";

describe("parseConfig", () => {
  it("gives the SPEC §5 defaults, simulator mode without credentials, and a frozen object", () => {
    const config = parseConfig({});
    expect(config).toMatchObject({
      port: 8787,
      host: "0.0.0.0",
      simulator: true,
      redis: undefined,
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
    expect(config.redis).toEqual({ mode: "standalone", url: "redis://127.0.0.1:6379/0", auth: {} });
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

describe("Redis topologies (SPEC §5)", () => {
  const refusal = (env: Record<string, string>) => {
    try {
      parseConfig(env);
    } catch (err) {
      if (err instanceof ConfigError) return { variables: err.variables, message: err.message };
      throw err;
    }
    return null;
  };

  it("reads a standalone REDIS_URL, its credentials kept apart from the URL", () => {
    expect(parseConfig({ REDIS_URL: "redis://127.0.0.1:6379" }).redis).toEqual({
      mode: "standalone",
      url: "redis://127.0.0.1:6379",
      auth: {},
    });
    expect(parseConfig({ REDIS_URL: "rediss://app:s%3Acret@redis.example.com:6380/2" }).redis).toEqual({
      mode: "standalone",
      url: "rediss://redis.example.com:6380/2",
      auth: { username: "app", password: "s:cret" },
    });
    // Not in the URL: REDIS_USERNAME / REDIS_PASSWORD apply.
    expect(parseConfig({ REDIS_URL: "redis://h:1", REDIS_PASSWORD: "pw" }).redis?.auth).toEqual({ password: "pw" });
    expect(
      parseConfig({ REDIS_URL: "redis://:pw@h:1", REDIS_USERNAME: "app", REDIS_PASSWORD: "pw" }).redis?.auth,
    ).toEqual({ username: "app", password: "pw" });
  });

  it("reads REDIS_CLUSTER_NODES: host:port or URLs, TLS from rediss://, credentials from the URLs or the variables", () => {
    expect(parseConfig({ REDIS_CLUSTER_NODES: "10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002" }).redis).toEqual({
      mode: "cluster",
      nodes: [
        { host: "10.0.0.1", port: 7000 },
        { host: "10.0.0.2", port: 7001 },
        { host: "::1", port: 7002 },
      ],
      tls: false,
      auth: {},
    });
    expect(
      parseConfig({ REDIS_CLUSTER_NODES: "rediss://app:pw@a.example.com:7000,rediss://app:pw@b.example.com" }).redis,
    ).toEqual({
      mode: "cluster",
      nodes: [
        { host: "a.example.com", port: 7000 },
        { host: "b.example.com", port: 6379 },
      ],
      tls: true,
      auth: { username: "app", password: "pw" },
    });
    expect(
      parseConfig({ REDIS_CLUSTER_NODES: "a:1,redis://b:2/0", REDIS_USERNAME: "u", REDIS_PASSWORD: "pw" }).redis,
    ).toMatchObject({ tls: false, auth: { username: "u", password: "pw" } });
    // A seed listed twice is one seed.
    expect(parseConfig({ REDIS_CLUSTER_NODES: "a:1,a:1" }).redis).toMatchObject({ nodes: [{ host: "a", port: 1 }] });
  });

  it("reads REDIS_SENTINELS with REDIS_SENTINEL_MASTER: the data nodes' credentials from the variables, the sentinels' from their URLs", () => {
    const config = parseConfig({
      REDIS_SENTINELS: "10.0.0.1:26379,redis://:sentinel-pw@10.0.0.2,10.0.0.3:26380",
      REDIS_SENTINEL_MASTER: "bindwatch",
      REDIS_PASSWORD: "data-pw",
    });
    expect(config.redis).toEqual({
      mode: "sentinel",
      sentinels: [
        { host: "10.0.0.1", port: 26379 },
        { host: "10.0.0.2", port: 26379 },
        { host: "10.0.0.3", port: 26380 },
      ],
      masterName: "bindwatch",
      tls: false,
      sentinelAuth: { password: "sentinel-pw" },
      auth: { password: "data-pw" },
    });
    expect(Object.isFrozen(config.redis)).toBe(true);
    if (config.redis?.mode !== "sentinel") throw new Error("sentinel expected");
    expect(Object.isFrozen(config.redis.sentinels)).toBe(true);
    expect(Object.isFrozen(config.redis.sentinels[0])).toBe(true);
    expect(
      parseConfig({ REDIS_SENTINELS: "rediss://s1:26379,rediss://s2:26379", REDIS_SENTINEL_MASTER: "m" }).redis,
    ).toMatchObject({ tls: true, sentinelAuth: {}, auth: {} });
  });

  it("refuses more than one topology, naming each variable set", () => {
    expect(refusal({ REDIS_URL: "redis://h:1", REDIS_CLUSTER_NODES: "a:1" })?.variables).toEqual([
      "REDIS_URL",
      "REDIS_CLUSTER_NODES",
    ]);
    const all = refusal({ REDIS_URL: "redis://h:1", REDIS_CLUSTER_NODES: "a:1", REDIS_SENTINELS: "s:1" });
    expect(all?.variables).toEqual(["REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS"]);
    expect(all?.message).toMatch(/^REDIS_URL: REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS are set together/);
    expect(
      refusal({ REDIS_CLUSTER_NODES: "a:1", REDIS_SENTINELS: "s:1", REDIS_SENTINEL_MASTER: "m" })?.variables,
    ).toEqual(["REDIS_CLUSTER_NODES", "REDIS_SENTINELS"]);
  });

  it.each([
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: " , " }, /lists no cluster node/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "a:1,b" }, /"b" is not host:port/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "a:70000" }, /port must be between 1 and 65535, got 70000/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "a:0" }, /port must be between 1 and 65535, got 0/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "redis://a:99999" }, /port must be between 1 and 65535/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "http://a:1" }, /must use redis: or rediss:/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "redis://a:1/3" }, /only database 0/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "redis://a:1?x=1" }, /takes no query/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "rediss://a:1,b:2" }, /mixes rediss:\/\/ \(TLS\) and plain/],
    ["REDIS_CLUSTER_NODES", { REDIS_CLUSTER_NODES: "redis://:x@a:1,redis://:y@b:2" }, /different credentials/],
    ["REDIS_SENTINELS", { REDIS_SENTINELS: ",", REDIS_SENTINEL_MASTER: "m" }, /lists no sentinel/],
    ["REDIS_SENTINELS", { REDIS_SENTINELS: "s:1:2", REDIS_SENTINEL_MASTER: "m" }, /is not host:port/],
    ["REDIS_SENTINELS", { REDIS_SENTINELS: "redis://s:1/0", REDIS_SENTINEL_MASTER: "m" }, /takes no database/],
    ["REDIS_SENTINEL_MASTER", { REDIS_SENTINELS: "s:1" }, /is required with REDIS_SENTINELS/],
    ["REDIS_SENTINEL_MASTER", { REDIS_SENTINEL_MASTER: "m" }, /without REDIS_SENTINELS/],
    ["REDIS_SENTINEL_MASTER", { REDIS_URL: "redis://h:1", REDIS_SENTINEL_MASTER: "m" }, /without REDIS_SENTINELS/],
    ["REDIS_SENTINEL_MASTER", { REDIS_SENTINELS: "s:1", REDIS_SENTINEL_MASTER: "my master" }, /spaces/],
    ["REDIS_URL", { REDIS_URL: "redis://h:65536" }, /port must be between 1 and 65535/],
    ["REDIS_URL", { REDIS_URL: "not a url" }, /is not a valid URL/],
    ["REDIS_PASSWORD", { REDIS_PASSWORD: "pw" }, /there is no Redis to use it with/],
    ["REDIS_USERNAME", { REDIS_URL: "redis://h:1", REDIS_USERNAME: "u" }, /needs a password/],
    ["REDIS_USERNAME", { REDIS_SENTINELS: "s:1", REDIS_SENTINEL_MASTER: "m", REDIS_USERNAME: "u" }, /needs a password/],
    ["REDIS_PASSWORD", { REDIS_URL: "redis://:a@h:1", REDIS_PASSWORD: "b" }, /differs from the one in REDIS_URL/],
    ["REDIS_USERNAME", { REDIS_CLUSTER_NODES: "redis://x:a@h:1", REDIS_USERNAME: "y" }, /differs/],
  ])("stops on a bad value and names %s", (name, env, message) => {
    const refused = refusal(env);
    expect(refused?.variables[0]).toBe(name);
    expect(refused?.message).toMatch(new RegExp(`^${name}: `));
    expect(refused?.message).toMatch(message);
  });

  it("never shows a password in an error", () => {
    for (const env of [
      { REDIS_CLUSTER_NODES: "redis://app:hunter2@a:70000" },
      { REDIS_CLUSTER_NODES: "app:hunter2@a:1" },
      { REDIS_CLUSTER_NODES: "redis://:hunter2@a:1/5" },
      { REDIS_SENTINELS: "redis://:hunter2@s:1?x", REDIS_SENTINEL_MASTER: "m" },
      { REDIS_URL: "redis://:hunter2@h:1", REDIS_PASSWORD: "other" },
      { REDIS_URL: "http://:hunter2@h:1" },
      { REDIS_URL: "http://h:1?password=hunter2" },
      { REDIS_CLUSTER_NODES: "redis://a:1?password=hunter2" },
    ]) {
      const refused = refusal(env);
      expect(refused, JSON.stringify(env)).not.toBeNull();
      expect(refused?.message).not.toContain("hunter2");
    }
  });
});

describe("webhooks (SPEC §3, §5)", () => {
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const refusal = (env: Record<string, string>) => {
    try {
      parseConfig(env);
    } catch (err) {
      if (err instanceof ConfigError) return err.variable;
      throw err;
    }
    return null;
  };

  it("reads WEBHOOK_* and keeps the secret's decoded key, with SPEC §5's defaults", () => {
    expect(parseConfig({}).webhooks).toBeUndefined();
    const config = parseConfig({
      WEBHOOK_URL: "https://backend.example.com/hooks",
      WEBHOOK_SECRET: secret,
      WEBHOOK_ALLOWED_ORIGINS: "https://a.example.com, http://localhost:3000",
    });
    expect(config.webhooks).toMatchObject({
      url: "https://backend.example.com/hooks",
      allowedOrigins: ["https://a.example.com", "http://localhost:3000"],
      timeoutMs: 10_000,
      retryMs: 5_000,
      maxAgeMs: 86_400_000,
    });
    expect(config.webhooks?.key.length).toBe(24);
    expect(
      parseConfig({ WEBHOOK_ALLOWED_ORIGINS: "https://a.example.com", WEBHOOK_SECRET: secret }).webhooks?.url,
    ).toBeUndefined();
  });

  it.each([
    [{ WEBHOOK_URL: "ftp://backend.example.com/x", WEBHOOK_SECRET: secret }, "WEBHOOK_URL"],
    [{ WEBHOOK_URL: "not a url", WEBHOOK_SECRET: secret }, "WEBHOOK_URL"],
    [{ WEBHOOK_URL: "https://backend.example.com/x" }, "WEBHOOK_SECRET"],
    [{ WEBHOOK_ALLOWED_ORIGINS: "https://a.example.com" }, "WEBHOOK_SECRET"],
    [{ WEBHOOK_URL: "https://b.example.com/x", WEBHOOK_SECRET: "plain-secret" }, "WEBHOOK_SECRET"],
    [{ WEBHOOK_URL: "https://b.example.com/x", WEBHOOK_SECRET: "whsec_%%%" }, "WEBHOOK_SECRET"],
    [{ WEBHOOK_ALLOWED_ORIGINS: "https://a.example.com/path", WEBHOOK_SECRET: secret }, "WEBHOOK_ALLOWED_ORIGINS"],
    [{ WEBHOOK_ALLOWED_ORIGINS: "a.example.com", WEBHOOK_SECRET: secret }, "WEBHOOK_ALLOWED_ORIGINS"],
    [{ WEBHOOK_TIMEOUT_MS: "soon" }, "WEBHOOK_TIMEOUT_MS"],
    [{ WEBHOOK_RETRY_MS: "0" }, "WEBHOOK_RETRY_MS"],
    [{ WEBHOOK_MAX_AGE_MS: "-1" }, "WEBHOOK_MAX_AGE_MS"],
  ])("refuses %o, naming %s", (env, variable) => {
    expect(refusal(env)).toBe(variable);
  });
});

describe("logger", () => {
  it("censors secrets and masks open_id", async () => {
    const { lines, stream } = createLogSink();
    const logger = createLogger("info", { destination: stream });
    logger.info(
      {
        trace_id: "t",
        open_id: "ou_1234567890",
        token: "tok-secret",
        headers: { authorization: "Bearer k" },
        redis: { auth: { password: "redis-pw" }, sentinelAuth: { password: "sentinel-pw" } },
        options: { sentinelPassword: "sentinel-pw" },
        nested: { deeper: { app_secret: "top-secret", api_key: "key-secret", kept: "visible" } },
        err: new Error("boom"),
      },
      "x",
    );
    logger.info({ trace_id: "plain", created: true }, "y");
    logger.flush();
    await new Promise((r) => setImmediate(r));
    const line = lines.join("");
    expect(line).toContain('"trace_id":"t"');
    expect(line).not.toContain("ou_1234567890");
    expect(line).toContain("ou***90");
    expect(line).not.toContain("tok-secret");
    expect(line).not.toContain("Bearer k");
    expect(line).not.toContain("redis-pw");
    expect(line).not.toContain("sentinel-pw");
    expect(line).not.toContain("top-secret");
    expect(line).not.toContain("key-secret");
    expect(line).toContain('"kept":"visible"');
    // An error is left to pino's serializer: its type, message and stack.
    expect(line).toMatch(/"err":\{"type":"Error","message":"boom","stack":"Error: boom/);
    expect(line).toContain('"trace_id":"plain","created":true,"msg":"y"');
  });

  it("masks and redacts helpers", () => {
    expect(maskOpenId("abc")).toBe("***");
    expect(redactUrl("/v1/binds/t/events?token=abc")).toBe("/v1/binds/t/events?[redacted]");
    expect(redactUrl("/healthz")).toBe("/healthz");
  });
});
