import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { BindState } from "../../src/domain/bind.js";
import { createTopSimulator, type TopSimulator } from "../../src/sim/gateway.js";
import { scriptNever } from "../../src/sim/scripts.js";
import { ENTRY, ensureBuilt, ROOT } from "../support/build.js";
import { bindBody, newTraceId, postBind, waitUntil } from "../support/server.js";
import { openSse, type SseReader } from "../support/sse-reader.js";

/*
 * The built entry (`npm start`) as a real process: what only a process shows —
 * its log lines, its exit codes, SIGTERM.
 */

beforeAll(() => ensureBuilt(), 120_000);

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly trace_id?: string;
  readonly [key: string]: unknown;
}

interface RunningProcess {
  readonly child: ChildProcessWithoutNullStreams;
  /** Raw stdout lines so far. */
  readonly lines: string[];
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly url: string;
}

const children: ChildProcessWithoutNullStreams[] = [];
const readers: SseReader[] = [];

afterEach(() => {
  for (const reader of readers.splice(0)) reader.close();
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

/** A clean environment: nothing of the test runner's leaks in, TOP credentials only when given. */
function processEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", ...env };
}

/** The process's exit, or a failure when it has not exited within `ms`. */
function exitWithin(proc: { exited: RunningProcess["exited"] }, ms: number): RunningProcess["exited"] {
  const timeout = new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new Error("the process did not exit")), ms);
    void proc.exited.finally(() => clearTimeout(timer));
  });
  return Promise.race([proc.exited, timeout]);
}

function spawnEntry(env: Record<string, string>): {
  child: ChildProcessWithoutNullStreams;
  lines: string[];
  stderr: () => string;
  exited: RunningProcess["exited"];
} {
  const child = spawn(process.execPath, [ENTRY], { cwd: ROOT, env: processEnv(env) });
  children.push(child);
  const lines: string[] = [];
  let partial = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    partial += chunk;
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts.filter((l) => l !== ""));
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      // Flush stdout before reporting the exit: the last log lines matter.
      child.stdout.once("end", () => {
        if (partial !== "") lines.push(partial);
        resolve({ code, signal });
      });
      if (child.stdout.readableEnded) resolve({ code, signal });
    });
  });
  return { child, lines, stderr: () => stderr, exited };
}

async function startEntry(env: Record<string, string>): Promise<RunningProcess> {
  const proc = spawnEntry(env);
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  const url = await waitUntil(
    () => {
      if (exited) throw new Error(`the process exited before listening:\n${proc.stderr()}${proc.lines.join("\n")}`);
      for (const line of proc.lines) {
        const parsed = parseLine(line);
        if (parsed?.msg === "bindwatch listening" && typeof parsed.url === "string") return parsed.url;
      }
      return null;
    },
    15_000,
    "the listening log line",
  );
  return { ...proc, url };
}

function parseLine(line: string): LogLine | null {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null ? (value as LogLine) : null;
  } catch {
    return null;
  }
}

async function sse(url: string): Promise<SseReader> {
  const reader = await openSse(url);
  readers.push(reader);
  return reader;
}

/** SIGTERM, then the exit code and how long it took. */
async function terminate(proc: RunningProcess): Promise<{ code: number | null; ms: number }> {
  const started = Date.now();
  proc.child.kill("SIGTERM");
  const timeout = new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new Error("no exit within 10 s of SIGTERM")), 10_000);
    void proc.exited.finally(() => clearTimeout(timer));
  });
  const { code } = await Promise.race([proc.exited, timeout]);
  return { code, ms: Date.now() - started };
}

// ============================================================================

describe("with TOP credentials, against a gateway double", () => {
  const APP_KEY = "23456789";
  const APP_SECRET = "s3cr3t-0f-th3-t0p-app-d0-n0t-l0g";
  const OPEN_ID = "raw-open-id-AbCdEf-0123456789";
  const API_KEY = "api-key-0f-th3-backend-d0-n0t-l0g";
  const WATCH_TOKEN_SECRET = "watch-token-secret-d0-n0t-l0g";
  const auth = { authorization: `Bearer ${API_KEY}` };
  let simulator: TopSimulator;
  let gateway: Server;
  let gatewayUrl: string;

  beforeAll(async () => {
    simulator = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
    gateway = serve({ fetch: simulator.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    await new Promise<void>((resolve) => gateway.once("listening", () => resolve()));
    gatewayUrl = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/router/rest`;
  });
  afterAll(async () => {
    if (!gateway) return;
    await new Promise<void>((resolve) => {
      gateway.close(() => resolve());
      gateway.closeAllConnections();
    });
  });

  it("binds over POST + SSE; logs JSON lines with trace_id and no secret, key, token or raw open_id; stops on SIGTERM", async () => {
    const proc = await startEntry({
      TOP_APP_KEY: APP_KEY,
      TOP_APP_SECRET: APP_SECRET,
      TOP_GATEWAY_URL: gatewayUrl,
      TOP_SIGN_METHOD: "md5",
      TOP_SESSION: "session-token-do-not-log",
      API_KEYS: `other-key-1,${API_KEY}`,
      WATCH_TOKEN_SECRET,
      POLL_INTERVAL_MS: "200",
      LOG_LEVEL: "trace",
    });

    const traceId = newTraceId("proc");
    simulator.setScript(traceId, [{ kind: "isp_error" }, { kind: "pending" }, { kind: "bound" }]);
    const body = bindBody(traceId, { open_id: OPEN_ID, params: { authCode: "c0de" } });
    const wrongKey = await postBind(proc.url, body, { authorization: "Bearer wrong-key-d0-n0t-l0g" });
    expect(wrongKey.status).toBe(401);
    const created = await postBind(proc.url, body, auth);
    expect(created.status).toBe(201);
    const token = String(created.json.token);
    expect(String(created.json.events_url)).toContain(`token=${encodeURIComponent(token)}`);
    const reader = await sse(new URL(String(created.json.events_url), proc.url).href);
    await reader.waitFor((r) => r.ended, 15_000, "the end of the stream");
    const final = reader.states<BindState>().at(-1);
    expect(final).toMatchObject({ trace_id: traceId, status: "bound", error: null });
    // Every call reached the gateway double well signed, with the registered parameters.
    expect(simulator.stats().rejectedTotal).toBe(0);
    const calls = simulator.getTrace(traceId).calls;
    expect(calls.length).toBeGreaterThanOrEqual(3);
    expect(calls[0]?.params).toMatchObject({ open_id: OPEN_ID, app_key: APP_KEY, sign_method: "md5" });

    // A second trace, cancelled, so that path logs too.
    const other = newTraceId("proc-cancel");
    simulator.setScript(other, scriptNever());
    const otherCreated = await postBind(proc.url, bindBody(other, { open_id: OPEN_ID }), auth);
    expect(otherCreated.status).toBe(201);
    // A watch token opens its own trace only.
    const foreign = await fetch(`${proc.url}/v1/binds/${other}?token=${encodeURIComponent(token)}`);
    expect(foreign.status).toBe(403);
    const waited = await fetch(new URL(String(otherCreated.json.wait_url).replace("wait=30", "wait=0"), proc.url));
    expect(waited.status).toBe(200);
    expect((await fetch(`${proc.url}/v1/binds/${other}`, { method: "DELETE", headers: auth })).status).toBe(200);

    const { code, ms } = await terminate(proc);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(10_000);

    const parsed = proc.lines.map((line) => ({ line, log: parseLine(line) }));
    expect(parsed.length).toBeGreaterThan(5);
    // Each check lists every offending line, so one failure shows them all.
    expect(
      parsed.filter(({ log }) => log === null || typeof log.level !== "number" || typeof log.msg !== "string"),
    ).toEqual([]);
    const secrets = [
      APP_SECRET,
      "session-token-do-not-log",
      OPEN_ID,
      API_KEY,
      "wrong-key-d0-n0t-l0g",
      WATCH_TOKEN_SECRET,
      token,
      String(otherCreated.json.token),
    ];
    expect(parsed.filter(({ line }) => secrets.some((secret) => line.includes(secret))).map((p) => p.line)).toEqual([]);
    expect(
      parsed.filter(({ log }) => typeof log?.open_id === "string" && !log.open_id.includes("***")).map((p) => p.line),
    ).toEqual([]);
    // Every line that is about one of the traces says which, in trace_id.
    const aboutTrace = parsed.filter(({ line }) => line.includes(traceId) || line.includes(other));
    expect(aboutTrace.length).toBeGreaterThanOrEqual(2);
    expect(
      aboutTrace.filter(({ log }) => log?.trace_id !== traceId && log?.trace_id !== other).map((p) => p.line),
    ).toEqual([]);
    const perTraceMessages = /bind|poll|checkbind|lease|watcher|subscribe|interest|cancel/i;
    expect(
      parsed
        .filter(({ log }) => log && perTraceMessages.test(log.msg) && !/unset|starting|listening|stopp/.test(log.msg))
        .filter(({ log }) => typeof log?.trace_id !== "string")
        .map((p) => p.line),
    ).toEqual([]);
    expect(parsed.some(({ log }) => log?.msg === "bind registered" && log.trace_id === traceId)).toBe(true);
    expect(parsed.some(({ log }) => log?.msg === "bind cancelled" && log.trace_id === other)).toBe(true);
    expect(parsed.at(-1)?.log?.msg).toBe("stopped");
  }, 40_000);
});

// ============================================================================

describe("in simulator mode", () => {
  it("binds with the default script and, on SIGTERM, ends open streams with a retry hint and exits 0", async () => {
    const proc = await startEntry({ POLL_INTERVAL_MS: "200", LOG_LEVEL: "info" });
    expect(proc.lines.some((line) => parseLine(line)?.msg.startsWith("simulator mode") === true)).toBe(true);

    const bound = newTraceId("sim");
    const created = await postBind(proc.url, bindBody(bound));
    expect(created.status).toBe(201);
    const reader = await sse(new URL(String(created.json.events_url), proc.url).href);
    await reader.waitFor((r) => r.ended, 15_000, "the end of the stream");
    expect(reader.events.map((e) => e.event)).toContain("pending");
    expect(reader.events.at(-1)?.event).toBe("bound");

    // A trace that never binds, scripted through the simulator's control API, keeps a stream open.
    const open = newTraceId("sim-open");
    const scripted = await fetch(`${proc.url}/sim/traces/${open}/script`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ outcome: "never" }),
    });
    expect(scripted.status).toBe(200);
    expect((await postBind(proc.url, bindBody(open))).status).toBe(201);
    const watching = await sse(`${proc.url}/v1/binds/${open}/events`);
    await watching.waitFor((r) => r.events.length >= 1, 5_000, "the current state");

    const { code, ms } = await terminate(proc);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(10_000);
    await watching.done;
    expect(watching.frames.at(-1)?.retry).toBeGreaterThan(0);
    expect(watching.events.every((e) => e.event === "pending")).toBe(true);
  }, 40_000);
});

// ============================================================================

describe("log lines", () => {
  it("reach stdout soon after they are logged while traffic is light, and the last ones before exit are kept", async () => {
    const proc = await startEntry({ POLL_INTERVAL_MS: "200", LOG_LEVEL: "info" });
    // One registration logs one short line, far below a full write buffer: it must not wait for more.
    for (let i = 0; i < 3; i++) {
      const traceId = newTraceId("log");
      expect((await postBind(proc.url, bindBody(traceId))).status).toBe(201);
      await waitUntil(
        () =>
          proc.lines.some(
            (line) => parseLine(line)?.trace_id === traceId && parseLine(line)?.msg === "bind registered",
          ),
        2_000,
        `the "bind registered" line of ${traceId}`,
      );
    }
    const before = proc.lines.length;
    const { code } = await terminate(proc);
    expect(code).toBe(0);
    // "stopping" and "stopped" are logged moments before process.exit: both are on stdout.
    const tail = proc.lines.slice(before).map((line) => parseLine(line)?.msg);
    expect(tail).toContain("stopping");
    expect(tail.at(-1)).toBe("stopped");
  }, 30_000);
});

// ============================================================================

describe("a bad configuration", () => {
  it.each([
    ["POLL_INTERVAL_MS", "abc"],
    ["PORT", "70000"],
    ["TOP_SIGN_METHOD", "sha1"],
    ["TOP_APP_KEY", "only-the-key"],
    ["LOG_LEVEL", "loud"],
  ])("%s=%s stops start-up with a message naming the variable", async (name, value) => {
    const proc = spawnEntry({ [name]: value });
    const { code } = await exitWithin(proc, 10_000);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(proc.stderr()).toContain(name);
    expect(proc.lines.some((line) => parseLine(line)?.msg === "bindwatch listening")).toBe(false);
  });

  it.each([
    ["TLS_CERT_FILE without TLS_KEY_FILE", { TLS_CERT_FILE: "/etc/bindwatch/cert.pem" }, "TLS_KEY_FILE"],
    [
      "TLS files that cannot be read",
      { TLS_CERT_FILE: "/nonexistent/cert.pem", TLS_KEY_FILE: "/nonexistent/key.pem" },
      "TLS_CERT_FILE: cannot be read",
    ],
  ])("%s: refuses to start (exit 78), naming the variable", async (_name, env, named) => {
    const proc = spawnEntry(env);
    const { code } = await exitWithin(proc, 10_000);
    expect(code).toBe(78);
    expect(proc.stderr()).toContain(named);
    expect(proc.lines.some((line) => parseLine(line)?.msg === "bindwatch listening")).toBe(false);
  });
});

// ============================================================================

describe("production rules (SPEC §5): never a simulated device or open registration by accident", () => {
  it.each([
    [
      "production without TOP credentials",
      { NODE_ENV: "production", API_KEYS: "k" },
      ["TOP_APP_KEY", "TOP_APP_SECRET"],
    ],
    [
      "production without API_KEYS",
      { NODE_ENV: "production", TOP_APP_KEY: "k", TOP_APP_SECRET: "s" },
      ["API_KEYS", "ALLOW_OPEN_ACCESS"],
    ],
    ["SIMULATOR=on with credentials", { SIMULATOR: "on", TOP_APP_KEY: "k", TOP_APP_SECRET: "s" }, ["SIMULATOR"]],
    ["SIMULATOR=off without credentials", { SIMULATOR: "off" }, ["TOP_APP_KEY", "TOP_APP_SECRET"]],
    ["SIMULATOR=maybe", { SIMULATOR: "maybe" }, ["SIMULATOR"]],
  ])("%s: refuses to start (exit 78), naming the variables", async (_name, env, named) => {
    const proc = spawnEntry(env);
    const { code } = await exitWithin(proc, 10_000);
    expect(code).toBe(78);
    for (const name of named) expect(proc.stderr()).toContain(name);
    expect(proc.lines.some((line) => parseLine(line)?.msg === "bindwatch listening")).toBe(false);
  });

  it("SIMULATOR=on in production runs the simulator on purpose and says so: first log line, /healthz", async () => {
    const proc = await startEntry({ NODE_ENV: "production", SIMULATOR: "on", API_KEYS: "prod-key" });
    const first = parseLine(proc.lines[0] ?? "");
    expect(first).toMatchObject({ mode: "simulator", production: true });
    expect(first?.msg).toMatch(/simulator mode/);
    expect(await (await fetch(`${proc.url}/healthz`)).json()).toEqual({ status: "ok", mode: "simulator" });
    expect((await fetch(`${proc.url}/`)).status).toBe(200);
    expect((await fetch(`${proc.url}/sim/stats`)).status).toBe(200);
    expect((await terminate(proc)).code).toBe(0);
  }, 30_000);

  it("live in production with ALLOW_OPEN_ACCESS=true: says live, and has no demo page or /sim routes", async () => {
    const proc = await startEntry({
      NODE_ENV: "production",
      TOP_APP_KEY: "k",
      TOP_APP_SECRET: "s",
      TOP_GATEWAY_URL: "http://127.0.0.1:9/router/rest",
      ALLOW_OPEN_ACCESS: "true",
    });
    const first = parseLine(proc.lines[0] ?? "");
    expect(first).toMatchObject({ mode: "live", production: true });
    expect(first?.msg).toMatch(/live mode/);
    expect(await (await fetch(`${proc.url}/healthz`)).json()).toEqual({ status: "ok", mode: "live" });
    expect((await fetch(`${proc.url}/`)).status).toBe(404);
    expect((await fetch(`${proc.url}/sim/stats`)).status).toBe(404);
    expect((await fetch(`${proc.url}/sim/traces/x/script`, { method: "PUT", body: "{}" })).status).toBe(404);
    expect((await terminate(proc)).code).toBe(0);
  }, 30_000);
});
