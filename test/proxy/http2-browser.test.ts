import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scriptBoundAfter, scriptNever } from "../../src/sim/scripts.js";
import { type ChromiumSession, launchChromium } from "../support/browser.js";
import { type Cluster, startCluster } from "../support/cluster.js";
import { makeSelfSignedCertificate, type Nginx, startNginx } from "../support/nginx.js";
import { type PageServer, startPageServer } from "../support/page-server.js";
import { bindBody, newTraceId, postBind, startTestServer, type TestServer, waitUntil } from "../support/server.js";

/*
 * Why the recipe serves HTTP/2 to browsers: a page that watches ten binds at once (a
 * dashboard of devices) gets all ten streams on one HTTP/2 connection, while over
 * HTTP/1.1 Chromium opens at most six connections per origin and the other streams
 * wait. Both are measured from bindwatch's side (`bindwatch_open_streams`). The same
 * page on bindwatch's own HTTPS (Node serving HTTP/2 itself) gets all ten too.
 */

const APP_KEY = "h2-app-key";
const APP_SECRET = "h2-app-secret-0123456789ab";
const WATCHED = 10;
const HTTP1_CONNECTIONS_PER_ORIGIN = 6;

/** One page, many binds: `watchBind` for every trace of `?traces=`, each final recorded in `window.finals`. */
const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>devices</title></head>
<body>
<ul id="devices"></ul>
<script type="module">
const params = new URLSearchParams(location.search);
const base = params.get("base");
const traces = (params.get("traces") ?? "").split(",");
window.finals = {};
const { watchBind } = await import(base + "/v1/client.js");
for (const traceId of traces) {
  const li = document.createElement("li");
  li.textContent = traceId + ": watching";
  document.getElementById("devices").append(li);
  watchBind({ baseUrl: base, traceId, onUpdate: (s) => { li.textContent = traceId + ": " + s.status; } })
    .then((s) => { window.finals[traceId] = s.status; }, (err) => { window.finals[traceId] = "error " + err; });
}
</script>
</body>
</html>
`;

/** Waits for the dashboard's `count` watchBind calls to resolve, and expects every one `bound`. */
async function expectEveryFinalBound(page: Page, count: number): Promise<void> {
  const finals = await waitUntil(
    async () => {
      const seen = await page.evaluate(() => (window as unknown as { finals: Record<string, string> }).finals);
      return Object.keys(seen).length === count ? seen : null;
    },
    20_000,
    "every watchBind to resolve",
    50,
  );
  expect(Object.values(finals)).toEqual(Array(count).fill("bound"));
}

describe("a page watching ten binds through nginx", () => {
  let pages: PageServer;
  let cluster: Cluster;
  let nginx: Nginx;
  let browser: ChromiumSession;

  beforeAll(async () => {
    pages = await startPageServer(1, { "/dashboard.html": DASHBOARD_PAGE });
    cluster = await startCluster({
      count: 2,
      appKey: APP_KEY,
      appSecret: APP_SECRET,
      intervalMs: 500,
      env: { CORS_ORIGINS: pages.origins[0] ?? "" },
    });
    nginx = await startNginx({ upstreams: cluster.instances.map((i) => new URL(i.url).host) });
    browser = await launchChromium({ extraArgs: ["--ignore-certificate-errors"] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await nginx?.stop();
    await cluster?.stop();
    await pages?.close();
  });

  const openStreams = async () => {
    const counts = await Promise.all(cluster.instances.map((i) => i.metric("bindwatch_open_streams")));
    return counts.reduce((a, b) => a + b, 0);
  };

  /** The protocols the browser's stream requests of `traceIds` came in on, from nginx's access log. */
  async function streamProtocols(traceIds: readonly string[]): Promise<string[]> {
    const lines = (await nginx.accessLog()).filter((line) => traceIds.some((id) => line.includes(`/${id}/events`)));
    return [...new Set(lines.map((line) => /"GET \S+ (HTTP\/[\d.]+)"/.exec(line)?.[1] ?? line))];
  }

  /** Registers WATCHED pending traces and opens the dashboard on `base`; returns the trace ids and the page. */
  async function openDashboard(base: string) {
    const traceIds = Array.from({ length: WATCHED }, () => newTraceId("h2"));
    for (const id of traceIds) {
      await cluster.gateway.setScript(id, scriptNever());
      expect((await postBind(cluster.instances[0]?.url ?? "", bindBody(id))).status).toBe(201);
    }
    const page = await browser.newPage();
    await page.goto(`${pages.origins[0]}/dashboard.html?base=${encodeURIComponent(base)}&traces=${traceIds.join(",")}`);
    return { traceIds, page };
  }

  async function bindAllAndWait(traceIds: readonly string[], page: Awaited<ReturnType<typeof openDashboard>>["page"]) {
    for (const id of traceIds) await cluster.gateway.setScript(id, scriptBoundAfter(0));
    await expectEveryFinalBound(page, traceIds.length);
    await waitUntil(async () => (await openStreams()) === 0, 10_000, "every stream to close");
  }

  it("over HTTP/2 (TLS) all ten streams are open at once, and all end on their final", async () => {
    const { traceIds, page } = await openDashboard(nginx.httpsUrl);
    try {
      await waitUntil(async () => (await openStreams()) === WATCHED, 15_000, `${WATCHED} open streams`, 50);
      await bindAllAndWait(traceIds, page);
      // nginx logs a request when it ends.
      expect(await streamProtocols(traceIds)).toEqual(["HTTP/2.0"]);
    } finally {
      await page.close();
    }
  }, 60_000);

  it("over HTTP/1.1 the same page stops at six open streams; the others wait for a connection", async () => {
    const { traceIds, page } = await openDashboard(nginx.httpUrl);
    try {
      await waitUntil(
        async () => (await openStreams()) === HTTP1_CONNECTIONS_PER_ORIGIN,
        15_000,
        "six open streams",
        50,
      );
      // Held there while nothing ends: the seventh stream has no connection to go on.
      const heldUntil = Date.now() + 2_000;
      while (Date.now() < heldUntil) {
        expect(await openStreams()).toBe(HTTP1_CONNECTIONS_PER_ORIGIN);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      // Once the first six end, the waiting ones get their turn and the final from stored state.
      await bindAllAndWait(traceIds, page);
      expect(await streamProtocols(traceIds)).toEqual(["HTTP/1.1"]);
    } finally {
      await page.close();
    }
  }, 60_000);
});

describe("a page watching ten binds on bindwatch's own HTTPS (TLS_CERT_FILE, TLS_KEY_FILE)", () => {
  let pages: PageServer;
  let dir = "";
  let server: TestServer;
  let browser: ChromiumSession;

  beforeAll(async () => {
    pages = await startPageServer(1, { "/dashboard.html": DASHBOARD_PAGE });
    dir = await mkdtemp(join(tmpdir(), "bindwatch-h2-node-"));
    const { certFile, keyFile } = await makeSelfSignedCertificate(dir);
    server = await startTestServer({
      TLS_CERT_FILE: certFile,
      TLS_KEY_FILE: keyFile,
      CORS_ORIGINS: pages.origins[0] ?? "",
    });
    browser = await launchChromium({ extraArgs: ["--ignore-certificate-errors"] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await pages?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("all ten streams are open at once on HTTP/2, and all end on their final", async () => {
    const traceIds = Array.from({ length: WATCHED }, () => newTraceId("h2-node"));
    for (const id of traceIds) {
      server.simulator.setScript(id, scriptNever());
      const registered = await server.service.register({
        trace_id: id,
        open_id: "open-id-0123456789",
        product_key: "a1PrOdUcTkEy",
        user_type: "ilop",
      });
      expect(registered.kind).toBe("created");
    }
    const page = await browser.newPage();
    try {
      await page.goto(
        `${pages.origins[0]}/dashboard.html?base=${encodeURIComponent(server.url)}&traces=${traceIds.join(",")}`,
      );
      // More than the six connections per origin HTTP/1.1 would allow: one HTTP/2 connection carries them.
      await waitUntil(() => server.streams.size === WATCHED, 15_000, `${WATCHED} open streams`, 50);
      for (const id of traceIds) server.simulator.setScript(id, scriptBoundAfter(0));
      await expectEveryFinalBound(page, traceIds.length);
      await waitUntil(() => server.streams.size === 0, 10_000, "every stream to close");
    } finally {
      await page.close();
    }
  }, 60_000);
});
