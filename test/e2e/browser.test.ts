import { type ChildProcessWithoutNullStreams, execFile, spawn } from "node:child_process";
import type { Server } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { promisify } from "node:util";
import { serve } from "@hono/node-server";
import type { ConsoleMessage, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTopSimulator } from "../../src/sim/gateway.js";
import { CHECKBIND_RESPONSE_KEY } from "../../src/sim/gateway-protocol.js";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { type ChromiumSession, launchChromium } from "../support/browser.js";
import { ENTRY, ensureBuilt, ROOT } from "../support/build.js";
import type { PageServer } from "../support/page-server.js";
import { startRedisServer } from "../support/redis-server.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";
import { startWatchPageServer } from "./watch-page.js";

/*
 * The product in a real browser: Debian's Chromium, headless, driven by playwright-core,
 * against servers started here. The demo page and an app's page on another origin, both
 * watching with the client module that bindwatch serves at /v1/client.js.
 *
 * Waits are DOM conditions with deadlines (page.waitForFunction), never fixed sleeps.
 */

// Not execFileSync: the server that answers the command runs in this process.
const execFileAsync = promisify(execFile);

let browser: ChromiumSession;
let pageServer: PageServer;
const openPages: Page[] = [];

beforeAll(async () => {
  // The servers serve the built client and the restart test runs the built entry.
  ensureBuilt();
  [browser, pageServer] = await Promise.all([launchChromium(), startWatchPageServer(2)]);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([browser?.close(), pageServer?.close()]);
});

afterEach(async () => {
  await Promise.allSettled(openPages.splice(0).map((page) => page.close()));
});

interface PageProblems {
  /** Uncaught exceptions in the page. */
  readonly errors: string[];
  /** Console messages of type error (CORS refusals are reported there). */
  readonly consoleErrors: string[];
}

async function newPage(): Promise<{ page: Page; problems: PageProblems }> {
  const page = await browser.newPage();
  openPages.push(page);
  const problems: PageProblems = { errors: [], consoleErrors: [] };
  page.on("pageerror", (err) => problems.errors.push(err.message));
  page.on("console", (msg: ConsoleMessage) => {
    if (msg.type() === "error") problems.consoleErrors.push(msg.text());
  });
  return { page, problems };
}

const text = async (page: Page, selector: string) => (await page.locator(selector).textContent()) ?? "";

/** The demo page's timeline, one array of cell texts per row. */
function timeline(page: Page): Promise<string[][]> {
  return page.$$eval("#timeline tbody tr", (rows) =>
    rows.map((tr) => Array.from(tr.children, (td) => td.textContent ?? "")),
  );
}

/** The watchBind rows of the demo page's timeline (no notes): [event, id]. */
async function watchBindEvents(page: Page): Promise<[string, number][]> {
  return (await timeline(page)).filter((r) => r[1] === "watchBind" && r[2] !== "·").map((r) => [r[2]!, Number(r[3])]);
}

/** The app page's onUpdate list, "<status> <version>" each. */
function updates(page: Page): Promise<string[]> {
  return page.$$eval("#updates li", (items) => items.map((li) => li.textContent ?? ""));
}

/**
 * Asserts `[status, version]` rows read "pending … then <final>": pending states, then one
 * final state, versions strictly increasing. (Registration is version 1; the first answer
 * of the gateway sets `upstream` and makes version 2, so a watcher sees one or two pendings.)
 */
function expectPendingThen(rows: readonly (readonly [string, number])[], final: string): void {
  expect(rows.length).toBeGreaterThanOrEqual(2);
  expect(rows.map(([status]) => status)).toEqual([...rows.slice(1).map(() => "pending"), final]);
  for (let i = 1; i < rows.length; i += 1) expect(rows[i]![1]).toBeGreaterThan(rows[i - 1]![1]);
}

/** "<status> <version>" → [status, version]. */
function parseUpdates(list: readonly string[]): [string, number][] {
  return list.map((item) => {
    const [status = "", version = ""] = item.split(" ");
    return [status, Number(version)];
  });
}

/** Pending answers the demo page's device gives before it binds. */
const PENDING_POLLS = 10;

function watchPageUrl(origin: string, params: Record<string, string>): string {
  return `${origin}/watch.html?${new URLSearchParams(params)}`;
}

// ============================================================================

describe("the demo page (simulator mode)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("registers a bind, shows pending then bound from watchBind, and a late watcher gets the 204", async () => {
    const { page, problems } = await newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => (document.getElementById("trace-id") as HTMLInputElement).value !== "");
    const traceId = await page.inputValue("#trace-id");
    expect(await text(page, "#client-code")).toContain(`import { watchBind } from "${server.url}/v1/client.js";`);

    // The device binds after ten pending polls (about 2 s): time enough to see it pending
    // however slowly the page gets its stream open on a loaded machine.
    await page.fill("#bound-after", String(PENDING_POLLS));
    await page.click("#register");
    await page.waitForFunction(
      () => document.getElementById("notice")?.textContent?.startsWith("Final state") === true,
      undefined,
      { timeout: 15_000 },
    );
    // One row per new version, in order.
    const events = await watchBindEvents(page);
    expectPendingThen(events, "bound");
    const finalVersion = events.at(-1)![1];
    expect(await text(page, "#status")).toBe("bound");
    expect(await page.getAttribute("#status", "class")).toBe("badge bound");
    expect(await text(page, "#notice")).toBe(
      `Final state of ${traceId}: bound. Watch again shows how a late watcher gets it.`,
    );
    expect((await timeline(page)).at(-1)?.[6]).toBe(`promise resolved: final state bound (version ${finalVersion})`);
    expect(await text(page, "#watch-error")).toBe("");
    expect(await page.isDisabled("#cancel")).toBe(true);
    // The gateway panel: the calls of this trace, one at a time.
    await page.waitForFunction((n) => Number(document.getElementById("g-calls")?.textContent) > n, PENDING_POLLS);
    expect(await text(page, "#g-max")).toBe("1");
    expect(await text(page, "#g-script")).toBe(`bound after ${PENDING_POLLS} pending polls`);
    expect(server.simulator.getTrace(traceId).callCount).toBe(PENDING_POLLS + 1);

    await page.screenshot({ path: "/tmp/demo-e2e.png", fullPage: true });

    // "Watch again": a raw EventSource gets the final state from storage; its reconnect, with
    // the final version as Last-Event-ID, gets 204 and EventSource stops for good.
    await page.click("#watch-again");
    await page.waitForFunction(
      () => document.getElementById("timeline")?.textContent?.includes("reconnect refused (204") === true,
      undefined,
      { timeout: 10_000 },
    );
    const again = (await timeline(page)).filter((r) => r[1] === "watch again" && r[2] !== "·");
    expect(again.map((r) => [r[2], r[3], r[6]])).toEqual([["bound", String(finalVersion), "final, from stored state"]]);

    expect(problems.errors).toEqual([]);
    expect(problems.consoleErrors).toEqual([]);
  });

  it("shows the TOP sandbox with a command that, run in bash on a UTC host, gets checkbind's envelope", async () => {
    const { page, problems } = await newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.getElementById("sandbox-curl")?.textContent !== "");
    const traceId = await page.inputValue("#trace-id");
    expect(await page.inputValue("#sandbox-url")).toBe(`${server.url}/sim/router/rest`);
    expect(await page.inputValue("#sandbox-app-key")).toBe(server.sandbox.appKey);
    expect(await page.inputValue("#sandbox-app-secret")).toBe(server.sandbox.appSecret);

    // As a person would: copy the command, paste it into a shell (bash, curl, openssl).
    const command = await text(page, "#sandbox-curl");
    const { stdout } = await execFileAsync("bash", ["-c", command], { env: { ...process.env, TZ: "UTC" } });
    const answer = (JSON.parse(stdout) as Record<string, Record<string, unknown>>)[CHECKBIND_RESPONSE_KEY];
    expect(answer, stdout).toMatchObject({ result: true, ret_value: false, ret_code: 0 });
    expect(answer?.trace_id).not.toBe(traceId);
    // The call reached the one simulator, the one bindwatch polls.
    expect(server.simulator.getTrace(traceId).calls.map((call) => call.eagleeyeId)).toEqual([answer?.trace_id]);
    expect(problems.errors).toEqual([]);
  });
});

// ============================================================================

describe("watch tokens (WATCH_TOKEN_SECRET set)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ WATCH_TOKEN_SECRET: "e2e-watch-token-secret-0123456789" });
  });
  afterAll(async () => {
    await server?.stop();
  });

  /**
   * Opens the demo page with its POST answer rewritten on the way in: `token` becomes
   * `replacement` (absent when undefined), as a page would have it that got no valid token.
   */
  async function demoWithToken(replacement: string | undefined): Promise<{ page: Page; problems: PageProblems }> {
    const opened = await newPage();
    await opened.page.route("**/v1/binds", async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      const response = await route.fetch();
      const body = (await response.json()) as Record<string, unknown>;
      if (replacement === undefined) delete body.token;
      else body.token = replacement;
      body.events_url = String(body.events_url).replace(/\?.*$/, replacement ? `?token=${replacement}` : "");
      await route.fulfill({ response, json: body });
    });
    await opened.page.goto(`${server.url}/`);
    await opened.page.waitForFunction(() => (document.getElementById("trace-id") as HTMLInputElement).value !== "");
    return opened;
  }

  it.each([
    ["without a token", undefined, "unauthorized", 401],
    ["with another trace's token", "other", "forbidden", 403],
  ] as const)("a page %s shows the access error", async (_, which, code, status) => {
    let replacement: string | undefined;
    if (which === "other") {
      const other = await postBind(server.url, bindBody(newTraceId("e2e-other")));
      expect(other.status).toBe(201);
      replacement = String(other.json.token);
    }
    const { page } = await demoWithToken(replacement);
    await page.click("#register");
    await page.waitForFunction(() => document.getElementById("watch-error")?.textContent !== "", undefined, {
      timeout: 15_000,
    });
    const shown = await text(page, "#watch-error");
    expect(shown).toMatch(new RegExp(`^Access refused: BindwatchError ${code} \\(HTTP ${status}\\): `));
    expect(await text(page, "#notice")).toContain(`failed: BindwatchError ${code} (HTTP ${status})`);
    expect(await page.getAttribute("#notice", "class")).toBe("notice error");
    expect(await text(page, "#status")).toBe("not watching");
    expect(await watchBindEvents(page)).toEqual([]);
  });

  it("a page with the token of the POST answer reaches bound", async () => {
    const { page, problems } = await newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => (document.getElementById("trace-id") as HTMLInputElement).value !== "");
    await page.fill("#bound-after", String(PENDING_POLLS));
    await page.click("#register");
    await page.waitForFunction(
      () => document.getElementById("notice")?.textContent?.startsWith("Final state") === true,
      undefined,
      { timeout: 15_000 },
    );
    expectPendingThen(await watchBindEvents(page), "bound");
    expect(await text(page, "#watch-error")).toBe("");
    expect(await text(page, "#client-code")).toContain("  token, // the token of the POST answer\n");
    expect(problems.consoleErrors).toEqual([]);
  });
});

// ============================================================================

describe("CORS: an app's page on another localhost origin", () => {
  let server: TestServer;
  let allowed: string;
  let other: string;
  beforeAll(async () => {
    [allowed, other] = pageServer.origins as [string, string];
    server = await startTestServer({ CORS_ORIGINS: allowed });
  });
  afterAll(async () => {
    await server?.stop();
  });

  async function registerPending(): Promise<string> {
    const traceId = newTraceId("e2e-cors");
    server.simulator.setScript(traceId, scriptNever());
    expect((await postBind(server.url, bindBody(traceId))).status).toBe(201);
    return traceId;
  }

  it("watches when its origin is in CORS_ORIGINS", async () => {
    const traceId = await registerPending();
    const { page, problems } = await newPage();
    await page.goto(watchPageUrl(allowed, { base: server.url, trace: traceId }));
    await page.waitForFunction(() => document.querySelectorAll("#updates li").length > 0, undefined, {
      timeout: 10_000,
    });
    server.simulator.setScript(traceId, scriptBoundAfter(0));
    await page.waitForFunction(() => document.getElementById("final")?.textContent !== "", undefined, {
      timeout: 10_000,
    });
    const seen = await updates(page);
    expectPendingThen(parseUpdates(seen), "bound");
    expect(await text(page, "#final")).toBe(seen.at(-1));
    expect(await text(page, "#error")).toBe("");
    expect(problems.consoleErrors).toEqual([]);
  });

  it("cannot watch when its origin is not: the browser refuses the answers and the page gets nothing", async () => {
    const traceId = await registerPending();
    const { page, problems } = await newPage();
    await page.goto(watchPageUrl(other, { base: server.url, trace: traceId }));
    // The module itself loads (it is public); the stream is answered, but without
    // Access-Control-Allow-Origin, so EventSource fails for good (readyState 2, CLOSED).
    await page.waitForFunction(
      () => document.getElementById("log")?.textContent?.includes("EventSource error, readyState 2") === true,
      undefined,
      { timeout: 10_000 },
    );
    await waitUntil(
      () => problems.consoleErrors.some((m) => m.includes(`from origin '${other}' has been blocked by CORS policy`)),
      5_000,
      "Chromium's CORS error",
    );
    expect(await text(page, "#status")).toBe("watching");
    expect(await updates(page)).toEqual([]);
    expect(await page.evaluate(() => (window as unknown as { rawEvents: unknown[] }).rawEvents)).toEqual([]);
    expect(await text(page, "#final")).toBe("");
    // The allowed origin's page, on the same trace, gets its state at once: the refusal is CORS.
    const check = await newPage();
    await check.page.goto(watchPageUrl(allowed, { base: server.url, trace: traceId }));
    await check.page.waitForFunction(() => document.querySelectorAll("#updates li").length > 0, undefined, {
      timeout: 10_000,
    });
    expect((await updates(check.page))[0]).toMatch(/^pending \d+$/);
    expect(await updates(page)).toEqual([]);
  });
});

// ============================================================================

interface BindwatchProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<void>;
  readonly output: () => string;
}

const processes: BindwatchProcess[] = [];

/** Starts `node dist/src/runtime/node-main.js` and resolves once it logs that it listens. */
async function startBindwatch(env: Record<string, string>, timeoutMs = 15_000): Promise<BindwatchProcess> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const child = spawn(process.execPath, [ENTRY], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env } });
    let output = "";
    let listening = false;
    let dead = false;
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (output.includes('"msg":"bindwatch listening"')) listening = true;
    });
    child.stderr.on("data", (chunk: string) => {
      output += chunk;
    });
    const exited = new Promise<void>((resolve) =>
      child.once("exit", () => {
        dead = true;
        resolve();
      }),
    );
    const proc: BindwatchProcess = { child, exited, output: () => output };
    processes.push(proc);
    await waitUntil(() => listening || dead, Math.max(1, deadline - Date.now()), "bindwatch to listen");
    if (listening) return proc;
    // The old process's port may not be free again yet: try once more until the deadline.
    if (!output.includes("EADDRINUSE") || Date.now() > deadline) {
      throw new Error(`bindwatch exited before listening:\n${output}`);
    }
  }
}

/** A loopback port nobody listens on now (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

describe("a server killed and restarted mid-watch (Redis, TOP credentials)", () => {
  const APP_KEY = "34567890";
  const APP_SECRET = "e2e-top-app-secret";
  const simulator = createTopSimulator({ appKey: APP_KEY, appSecret: APP_SECRET });
  let gateway: Server;
  let redis: Awaited<ReturnType<typeof startRedisServer>>;

  beforeAll(async () => {
    gateway = serve({ fetch: simulator.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    [redis] = await Promise.all([
      startRedisServer(),
      new Promise<void>((resolve) => gateway.once("listening", () => resolve())),
    ]);
  });
  afterAll(async () => {
    for (const proc of processes.splice(0)) {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGKILL");
      await proc.exited;
    }
    await Promise.allSettled([
      redis?.stop(),
      new Promise<void>((resolve) => {
        if (!gateway) return resolve();
        gateway.close(() => resolve());
        gateway.closeAllConnections();
      }),
    ]);
  });

  it("ends on bound, resuming from the last event id on the restarted server", async () => {
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const pageOrigin = pageServer.origins[0]!;
    const env = {
      PORT: String(port),
      HOST: "127.0.0.1",
      TOP_APP_KEY: APP_KEY,
      TOP_APP_SECRET: APP_SECRET,
      TOP_GATEWAY_URL: `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/router/rest`,
      REDIS_URL: redis.url,
      CORS_ORIGINS: pageOrigin,
      POLL_INTERVAL_MS: "200",
      LOG_LEVEL: "info",
    };
    const first = await startBindwatch(env);
    const traceId = newTraceId("e2e-restart");
    simulator.setScript(traceId, scriptNever());
    expect((await postBind(baseUrl, bindBody(traceId))).status).toBe(201);

    // Every answer the page gets about this trace, with the Last-Event-ID it sent.
    const answers: { seq: number; afterKill: boolean; url: string; status: number; lastEventId?: string }[] = [];
    let afterKill = false;
    let seq = 0;
    const { page, problems } = await newPage();
    page.on("response", (response) => {
      const request = response.request();
      if (!request.url().includes(`/v1/binds/${traceId}`) || request.method() !== "GET") return;
      const entry = { seq: seq++, afterKill, url: request.url(), status: response.status() };
      void request.allHeaders().then((headers) => {
        const lastEventId = headers["last-event-id"];
        answers.push(lastEventId === undefined ? entry : { ...entry, lastEventId });
      });
    });
    // Enough stream failures allowed that the browser's own reconnects (every `retry` ms)
    // outlast the restart: the resume is EventSource's, with its Last-Event-ID header.
    await page.goto(watchPageUrl(pageOrigin, { base: baseUrl, trace: traceId, max_stream_failures: "30" }));
    // Wait until the pending state is settled (polled at least once, so no further version
    // comes from the never-binding script) and the page holds it.
    const lastSeen = await waitUntil(
      async () => {
        const res = await fetch(`${baseUrl}/v1/binds/${traceId}`);
        const state = (await res.json()) as { status: string; version: number; attempts: number };
        const seen = parseUpdates(await updates(page));
        return state.attempts >= 1 && seen.at(-1)?.[1] === state.version ? state.version : null;
      },
      10_000,
      "the page to hold the polled pending state",
      50,
    );
    expect(parseUpdates(await updates(page)).every(([status]) => status === "pending")).toBe(true);
    const rawBefore = await page.evaluate(() => (window as unknown as { rawEvents: unknown[] }).rawEvents.length);

    first.child.kill("SIGKILL");
    await first.exited;
    afterKill = true;
    simulator.setScript(traceId, scriptBoundAfter(0));
    await startBindwatch(env);

    await page.waitForFunction(() => document.getElementById("final")?.textContent !== "", undefined, {
      timeout: 30_000,
    });
    const seen = parseUpdates(await updates(page));
    expectPendingThen(seen, "bound");
    expect(seen.at(-2)?.[1]).toBe(lastSeen);
    expect(await text(page, "#final")).toBe(`bound ${seen.at(-1)![1]}`);
    // The restarted server did not send the pending state again: the reconnect told it the
    // page had it. (onUpdate alone would not show a resend: the client drops old versions.)
    const rawAfter = await page.evaluate(
      (n) => (window as unknown as { rawEvents: unknown[] }).rawEvents.slice(n),
      rawBefore,
    );
    expect(rawAfter).toEqual([{ type: "bound", id: String(seen.at(-1)![1]) }]);
    // And the first answer from the restarted server was to a request carrying that id.
    await waitUntil(() => answers.some((a) => a.afterKill), 5_000, "the recorded answers");
    const resumed = answers.filter((a) => a.afterKill).sort((a, b) => a.seq - b.seq)[0]!;
    expect(resumed.status).toBe(200);
    expect(new URL(resumed.url).pathname).toBe(`/v1/binds/${traceId}/events`);
    expect(resumed.lastEventId ?? new URL(resumed.url).searchParams.get("last_event_id")).toBe(String(lastSeen));
    expect(problems.errors).toEqual([]);
  }, 60_000);
});
