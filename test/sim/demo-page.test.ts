import { readFile } from "node:fs/promises";
import { runInNewContext } from "node:vm";
import { beforeAll, describe, expect, it } from "vitest";
import { BindwatchError, type ClientEnvironment, type WatchBindOptions, watchBind } from "../../src/client/index.js";
import { assembleDemoPage, renderDemoPage } from "../../src/sim/demo-page.js";
import { DEMO_PAGE_ASSET, ensureBuilt } from "../support/build.js";

/** The page as the build assembled it (dist/assets/demo.html), before its placeholders are filled. */
let built: string;
/** What the server fills in for the sandbox; the secret has characters that need escaping in HTML and a shell. */
const SANDBOX = { appKey: "40517723", appSecret: `s3cr"e't&<x>` };

beforeAll(async () => {
  ensureBuilt();
  built = await readFile(DEMO_PAGE_ASSET, "utf8");
}, 120_000);

describe("assembleDemoPage", () => {
  const html = '<head><link rel="stylesheet" href="page.css"></head><script type="module" src="page.js"></script>';

  it("inlines the stylesheet and the module, without tsc's export and source map lines", () => {
    const page = assembleDemoPage({
      html,
      css: "a { color: red; }\n",
      script: 'const x = "$&";\nexport {};\n//# sourceMappingURL=page.js.map\n',
    });
    expect(page).toBe(
      '<head><style>\na { color: red; }\n</style></head><script type="module">\nconst x = "$&";\n</script>',
    );
  });

  it("refuses sources it cannot inline faithfully", () => {
    expect(() => assembleDemoPage({ html: "<head></head>", css: "", script: "" })).toThrow(/page\.css/);
    expect(() => assembleDemoPage({ html, css: "", script: 'import "./x.js";' })).toThrow(/static imports/);
    expect(() => assembleDemoPage({ html, css: "", script: 'const s = "</script>";' })).toThrow(/<\/script/);
    expect(() => assembleDemoPage({ html, css: "p::after { content: '</style>'; }", script: "" })).toThrow(/<\/style/);
  });
});

describe("renderDemoPage", () => {
  let html: string;
  beforeAll(() => {
    html = renderDemoPage(built, { sandbox: SANDBOX });
  });

  it("is one self-contained HTML document", () => {
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    expect(html).toContain("</html>");
    // No external resources: no src/href attributes, no @import, no remote fonts; the one
    // module it imports is the browser client of the same server.
    expect(html).not.toMatch(/\s(src|href)=/i);
    expect(html).not.toMatch(/@import|\burl\(|https?:\/\//);
    expect([...html.matchAll(/\bimport\s*\(\s*("[^"]*")/g)].map((m) => m[1])).toEqual(['"/v1/client.js"']);
  });

  it("watches with the client module, and talks to the bind API, the simulator control and EventSource", () => {
    expect(html).toContain('<script type="module">');
    expect(html).toContain("mod.watchBind({");
    expect(html).toContain("instanceof mod.BindwatchError");
    expect(html).toContain("/v1/binds");
    expect(html).toContain("/sim/traces/");
    expect(html).toContain("new EventSource(");
    expect(html).toContain('method: "DELETE"');
  });

  it("writes data with textContent only", () => {
    expect(html).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it("escapes the title", () => {
    const page = renderDemoPage(built, { title: '<script>alert("x")</script>', sandbox: SANDBOX });
    expect(page).not.toContain('<script>alert("x")</script>');
    expect(page).toContain("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;");
  });

  it("shows the sandbox credentials, escaped", () => {
    expect(html).toContain('id="sandbox-app-key" readonly spellcheck="false" value="40517723"');
    expect(html).toContain('value="s3cr&#34;e&#39;t&#38;&#60;x&#62;"');
    expect(html).not.toMatch(/\{\{\w+\}\}/);
  });

  it("has a script that parses", () => {
    const script = extractScript(html);
    expect(() => new Function(script)).not.toThrow();
  });
});

describe("the demo page script (in a minimal fake DOM)", () => {
  it("scripts the trace, registers it, watches with watchBind until the final state and closes the stream", async () => {
    const page = loadPage();
    const traceId = page.el("trace-id").value;
    expect(traceId).toMatch(/^[0-9a-f]{30}$/);
    expect(page.el("curl").textContent).toContain(`/v1/binds/${traceId}/events`);
    // The equivalent client code: import, watchBind, await.
    const code = page.el("client-code").textContent.split("\n");
    expect(code.filter((line) => !line.startsWith("//"))).toEqual([
      'import { watchBind } from "http://demo.test/v1/client.js";',
      "const watching = watchBind({",
      '  baseUrl: "http://demo.test",',
      `  traceId: "${traceId}",`,
      "  token, // the token of the POST answer, when the server sets WATCH_TOKEN_SECRET",
      "  onUpdate: (state) => console.log(state.status, state.version),",
      "});",
      "const final = await watching; // bound, failed, expired or cancelled",
    ]);

    // The sandbox: a ready command for this trace that signs and sends a checkbind call.
    // (The end-to-end suite runs it against a real server.)
    expect(page.el("sandbox-url").value).toBe("http://demo.test/sim/router/rest");
    const sandbox = page.el("sandbox-curl").textContent;
    expect(sandbox).toContain(`app_key='40517723' app_secret='s3cr"e'\\''t&<x>'`);
    expect(sandbox).toContain(`trace_id='${traceId}' open_id='demo-open-id-0001' product_key='a1DemoProductKey'`);
    expect(sandbox).toContain("curl -sS 'http://demo.test/sim/router/rest'");
    expect(sandbox).toContain("TZ=CST-8 date");
    page.el("trace-id").value = "another-trace";
    page.fire("setup", "input");
    expect(page.el("sandbox-curl").textContent).toContain("trace_id='another-trace'");
    page.el("trace-id").value = traceId;
    page.fire("setup", "input");

    await page.click("register");
    await flush();
    const [putCall, postCall] = page.fetches;
    expect(putCall).toMatchObject({ url: `/sim/traces/${traceId}/script`, method: "PUT" });
    expect(JSON.parse(putCall?.body ?? "")).toEqual({ outcome: "bound", after: 3 });
    expect(postCall).toMatchObject({ url: "/v1/binds", method: "POST" });
    expect(JSON.parse(postCall?.body ?? "")).toEqual({
      trace_id: traceId,
      open_id: "demo-open-id-0001",
      product_key: "a1DemoProductKey",
      user_type: "ilop",
    });

    // watchBind opened the stream, relative to the page, with the token of the POST answer.
    expect(page.watches).toEqual([{ baseUrl: "", traceId, token: "tok" }]);
    expect(page.sources).toHaveLength(1);
    const es = page.sources[0]!;
    expect(es.url).toBe(`/v1/binds/${traceId}/events?token=tok`);
    expect(page.el("client-code").textContent).toContain("  token, // the token of the POST answer\n");
    expect(page.el("curl").textContent).toContain(`/v1/binds/${traceId}/events?token=$WATCH_TOKEN`);

    es.emit("pending", {
      ...state(traceId, "pending", 1),
      error: { code: "upstream_unavailable", message: "<b>x</b>" },
    });
    expect(page.el("status").textContent).toBe("pending");
    expect(page.el("s-error").textContent).toBe("upstream_unavailable: <b>x</b>");
    // A repeated version (a resent event) is not shown twice.
    es.emit("pending", state(traceId, "pending", 1));
    es.emit("bound", state(traceId, "bound", 2));
    await flush();
    expect(page.el("status").textContent).toBe("bound");
    expect(page.el("status").className).toBe("badge bound");
    expect(page.el("s-eagleeye").textContent).toBe("213cbe9116665898268912730d02de");
    expect(es.closed).toBe(true);
    const rows = page.rows();
    expect(rows.filter((r) => r[1] === "watchBind" && r[2] !== "·").map((r) => [r[2], r[3], r[4]])).toEqual([
      ["pending", "1", "pending"],
      ["bound", "2", "bound"],
    ]);
    expect(rows.at(-1)?.[6]).toBe("promise resolved: final state bound (version 2)");
    expect(page.el("notice").textContent).toContain(`Final state of ${traceId}: bound`);
    expect(page.el("cancel").disabled).toBe(true);
    expect(page.el("watch-error").textContent).toBe("");

    // "Watch again": a second EventSource whose reconnect after the final event gets 204.
    await page.click("watch-again");
    expect(page.sources).toHaveLength(2);
    const again = page.sources[1]!;
    expect(again.url).toBe(`http://demo.test/v1/binds/${traceId}/events?token=tok`);
    again.emit("bound", state(traceId, "bound", 2));
    again.fail(0);
    again.fail(2);
    const notes = page.rows().map((r) => r[6] ?? "");
    expect(notes.some((n) => n.includes("204"))).toBe(true);

    await page.click("cancel");
    expect(page.fetches.at(-1)).toMatchObject({ url: `/v1/binds/${traceId}`, method: "DELETE" });
  });

  it("shows the API's error and does not watch when registering fails", async () => {
    const page = loadPage({ registerStatus: 409 });
    await page.click("register");
    expect(page.el("notice").textContent).toContain("409 conflict");
    expect(page.el("notice").className).toBe("notice error");
    expect(page.sources).toHaveLength(0);
    expect(page.watches).toHaveLength(0);
  });

  it("shows the BindwatchError code and status when the server refuses the watch", async () => {
    const page = loadPage({ watchStatus: 403 });
    const traceId = page.el("trace-id").value;
    await page.click("register");
    await flush();
    // The server refuses the stream (EventSource gives up); the client asks the state endpoint why.
    page.sources[0]!.fail(2);
    await flush();
    expect(page.fetches.at(-1)).toMatchObject({ url: `/v1/binds/${traceId}?token=tok`, method: "GET" });
    expect(page.el("watch-error").textContent).toBe(
      "Access refused: BindwatchError forbidden (HTTP 403): the watch token is <invalid> for this trace",
    );
    expect(page.el("notice").textContent).toBe(`Watching ${traceId} failed: BindwatchError forbidden (HTTP 403)`);
    expect(page.el("notice").className).toBe("notice error");
    expect(page.el("status").textContent).toBe("not watching");
    expect(page.rows().at(-1)?.[6]).toBe("promise rejected: BindwatchError forbidden (HTTP 403)");
  });

  it("says so when the client module does not load, and the rest of the page still works", async () => {
    const page = loadPage({ clientMissing: true });
    await flush();
    expect(page.el("notice").textContent).toContain("/v1/client.js did not load");
    expect(page.el("curl").textContent).toContain("curl -N");
    await page.click("register");
    await flush();
    expect(page.fetches.map((f) => f.method)).toEqual(["PUT", "POST", "GET"]);
    expect(page.el("notice").textContent).toContain("npm run build");
    expect(page.sources).toHaveLength(0);
    expect(page.el("watch-again").disabled).toBe(false);
  });

  it("drops the token from the code shown when the server issues none", async () => {
    const page = loadPage({ noToken: true });
    const traceId = page.el("trace-id").value;
    await page.click("register");
    await flush();
    expect(page.watches).toEqual([{ baseUrl: "", traceId, token: undefined }]);
    expect(page.sources[0]?.url).toBe(`/v1/binds/${traceId}/events`);
    expect(page.el("client-code").textContent).toContain(`  traceId: "${traceId}",\n  onUpdate:`);
    expect(page.el("client-code").textContent).not.toContain("token");
    expect(page.el("curl").textContent).not.toContain("WATCH_TOKEN");
  });
});

/** What a browser makes of the `&#NN;` references renderDemoPage writes. */
function decodeEntities(text: string): string {
  return text.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)));
}

/** Lets pending promise callbacks (the page's and the client's) run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 20; i += 1) await new Promise<void>((resolve) => setImmediate(resolve));
}

function state(traceId: string, status: string, version: number): Record<string, unknown> {
  return {
    trace_id: traceId,
    status,
    final: status !== "pending",
    version,
    attempts: version,
    created_at: "2026-11-29T10:00:00.000Z",
    updated_at: "2026-11-29T10:00:02.000Z",
    expires_at: "2026-11-29T10:03:00.000Z",
    upstream: { ret_code: 0, message: "", request_id: "r", eagleeye_id: `213cbe9116665898268912730d0${version}de` },
    error: null,
  };
}

function extractScript(html: string): string {
  const match = /<script type="module">([\s\S]*)<\/script>/.exec(html);
  if (!match?.[1]) throw new Error("no script");
  return match[1];
}

type Listener = (ev: unknown) => unknown;

class FakeElement {
  value = "";
  textContent = "";
  className = "";
  disabled = false;
  scrollTop = 0;
  scrollHeight = 0;
  children: FakeElement[] = [];
  parentElement: FakeElement | null = null;
  tBodies: FakeElement[] = [];
  readonly listeners = new Map<string, Listener[]>();

  appendChild(child: FakeElement): FakeElement {
    child.parentElement = this;
    this.children.push(child);
    return child;
  }
  replaceChildren(): void {
    this.children = [];
  }
  addEventListener(type: string, fn: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
}

class FakeEventSource {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  readyState = 0;
  closed = false;
  lastEventId = "";
  onerror: ((event: Event) => void) | null = null;
  onopen: ((event: Event) => void) | null = null;
  readonly listeners = new Map<string, ((event: MessageEvent) => void)[]>();
  constructor(readonly url: string) {}
  addEventListener(type: string, fn: (event: MessageEvent) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  close(): void {
    this.closed = true;
    this.readyState = 2;
  }
  emit(type: string, data: Record<string, unknown>): void {
    this.lastEventId = String(data.version);
    for (const fn of this.listeners.get(type) ?? []) {
      fn({ type, data: JSON.stringify(data), lastEventId: this.lastEventId } as unknown as MessageEvent);
    }
  }
  fail(readyState: number): void {
    this.readyState = readyState;
    this.onerror?.(new Event("error"));
  }
}

interface FetchCall {
  url: string;
  method: string;
  body: string | undefined;
}

interface PageOptions {
  /** Status of POST /v1/binds (default 201). */
  readonly registerStatus?: number;
  /** Status of GET /v1/binds/:id (default 200, the pending state). */
  readonly watchStatus?: number;
  /** The POST answer carries no watch token (a server without WATCH_TOKEN_SECRET). */
  readonly noToken?: boolean;
  /** `import("/v1/client.js")` fails, as when the server runs unbuilt. */
  readonly clientMissing?: boolean;
}

/**
 * Runs the page's script in a vm context with a fake DOM, fetch and EventSource. Its one
 * `import("/v1/client.js")` gets the real client module, bound to the same fakes.
 */
function loadPage(opts: PageOptions = {}) {
  const html = renderDemoPage(built, { sandbox: SANDBOX });
  const elements = new Map<string, FakeElement>();
  for (const m of html.matchAll(/<(\w+)[^>]*\sid="([^"]+)"([^>]*)>/g)) {
    const el = new FakeElement();
    const value = /\svalue="([^"]*)"/.exec(m[0]);
    if (value?.[1] !== undefined) el.value = decodeEntities(value[1]);
    if (m[1] === "select") el.value = /<option value="([^"]+)"/.exec(html.slice(m.index))?.[1] ?? "";
    if (m[1] === "table") {
      const wrapper = new FakeElement();
      wrapper.appendChild(el);
      el.tBodies = [el.appendChild(new FakeElement())];
    }
    elements.set(m[2]!, el);
  }
  const fetches: FetchCall[] = [];
  const sources: FakeEventSource[] = [];
  const watches: { baseUrl: string; traceId: string; token: string | undefined }[] = [];
  const json = (status: number, body: unknown) => ({ ok: status < 300, status, json: async () => body });

  const fakeFetch = async (url: string, init: { method?: string; body?: string } = {}) => {
    fetches.push({ url, method: init.method ?? "GET", body: init.body });
    if (url.endsWith("/script")) return json(200, { script: { label: "bound after 3 pending polls" } });
    if (url === "/v1/binds") {
      if (opts.registerStatus && opts.registerStatus >= 400) {
        return json(opts.registerStatus, { error: { code: "conflict", message: "different parameters" } });
      }
      const id = JSON.parse(init.body ?? "{}").trace_id as string;
      return json(201, {
        trace_id: id,
        state: state(id, "pending", 1),
        events_url: `/v1/binds/${id}/events`,
        wait_url: `/v1/binds/${id}?wait=30`,
        ...(opts.noToken ? {} : { token: "tok" }),
      });
    }
    if (url.startsWith("/sim/traces/")) return json(200, { call_count: 0, calls: [], script: {} });
    const watched = /^\/v1\/binds\/([^/?]+)\?/.exec(url);
    if (watched && (init.method ?? "GET") === "GET") {
      const status = opts.watchStatus ?? 200;
      return status === 200
        ? json(200, state(watched[1]!, "pending", 1))
        : json(status, { error: { code: "forbidden", message: "the watch token is <invalid> for this trace" } });
    }
    return json(204, null);
  };
  class PageEventSource extends FakeEventSource {
    constructor(url: string) {
      super(url);
      sources.push(this);
    }
  }
  // What the client module uses of the browser: the same fakes as the page.
  const environment: ClientEnvironment = {
    EventSource: PageEventSource,
    fetch: fakeFetch as unknown as typeof fetch,
    window: new EventTarget(),
    document: Object.assign(new EventTarget(), { visibilityState: "visible" }),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  };
  const loadClient = async () => {
    if (opts.clientMissing) throw new TypeError("Failed to fetch dynamically imported module: /v1/client.js");
    return {
      BindwatchError,
      watchBind: (o: WatchBindOptions) => {
        watches.push({ baseUrl: o.baseUrl, traceId: o.traceId, token: o.token });
        return watchBind({ ...o, environment });
      },
    };
  };

  const context = {
    document: {
      getElementById: (id: string) => elements.get(id) ?? null,
      querySelector: () => ({ value: "bound" }),
      createElement: () => new FakeElement(),
    },
    window: { addEventListener: () => {} },
    location: { origin: "http://demo.test", href: "http://demo.test/" },
    navigator: { clipboard: { writeText: async () => {} } },
    fetch: fakeFetch,
    EventSource: PageEventSource,
    URL,
    AbortController,
    crypto: globalThis.crypto,
    setInterval: () => 1,
    clearInterval: () => {},
    loadClient,
  };
  const script = extractScript(html);
  expect(script.split('import("/v1/client.js")')).toHaveLength(2);
  runInNewContext(script.replace('import("/v1/client.js")', "loadClient()"), context);

  return {
    fetches,
    sources,
    watches,
    /** The timeline's cells, row by row. */
    rows(): string[][] {
      return elements.get("timeline")!.tBodies[0]!.children.map((tr) => tr.children.map((td) => td.textContent));
    },
    el(id: string): FakeElement {
      const el = elements.get(id);
      if (!el) throw new Error(`no element #${id}`);
      return el;
    },
    async click(id: string): Promise<void> {
      for (const fn of elements.get(id)?.listeners.get("click") ?? []) await fn({});
    },
    fire(id: string, type: string): void {
      for (const fn of elements.get(id)?.listeners.get(type) ?? []) fn({});
    },
  };
}
