import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChromiumSession, launchChromium } from "../support/browser.js";
import { ensureBuilt } from "../support/build.js";
import { startTestServer, type TestServer } from "../support/server.js";

/*
 * The API reference page, /docs, in Chromium: rendered from /openapi.json by the script
 * bindwatch serves itself, it lists every operation and the webhook, and the browser
 * sends no request anywhere but to bindwatch on loopback (no CDN, no fonts, no telemetry).
 */

let browser: ChromiumSession;
let server: TestServer;

beforeAll(async () => {
  // The page's script is the build's dist/assets/scalar.js.
  ensureBuilt();
  [browser, server] = await Promise.all([launchChromium(), startTestServer()]);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([browser?.close(), server?.stop()]);
});

describe("GET /docs", () => {
  it("lists every endpoint of the description, with no request leaving loopback", async () => {
    const requested: string[] = [];
    const failed: string[] = [];
    browser.context.on("request", (request) => requested.push(request.url()));
    browser.context.on("requestfailed", (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    const sockets: string[] = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));

    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { summary: string }>>;
      webhooks: Record<string, Record<string, { summary: string }>>;
    };
    const summaries = [...Object.values(doc.paths), ...Object.values(doc.webhooks)].flatMap((item) =>
      Object.values(item).map((op) => op.summary),
    );
    expect(summaries.length).toBe(11);

    const response = await page.goto(`${server.url}/docs`);
    expect(response?.status()).toBe(200);
    // Scalar lists every operation's summary in its sidebar, and the paths of the first
    // group in its overview (zero-width spaces break the paths' lines), once the document is in.
    const paths = ["/v1/binds", "/v1/binds/{trace_id}/events", "/v1/binds/{trace_id}"];
    await page.waitForFunction(
      (wanted) => {
        const shown = document.body.innerText.replace(/\u200b/g, "");
        return wanted.every((s) => shown.includes(s));
      },
      [...summaries, ...paths],
      { timeout: 30_000 },
    );
    await page.close();

    const origin = new URL(server.url).origin;
    expect(requested).toContain(`${origin}/docs/scalar.js`);
    expect(requested).toContain(`${origin}/openapi.json`);
    const elsewhere = requested.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith("data:"));
    expect(elsewhere, "requests that left bindwatch").toEqual([]);
    expect(sockets).toEqual([]);
    expect(failed).toEqual([]);
    expect(errors).toEqual([]);
  });
});
