import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { renderDemoPage } from "../../src/sim/demo-page.js";

describe("renderDemoPage", () => {
  const html = renderDemoPage({});

  it("is one self-contained HTML document", () => {
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    expect(html).toContain("</html>");
    // No external resources: no src/href attributes, no @import, no remote fonts.
    expect(html).not.toMatch(/\s(src|href)=/i);
    expect(html).not.toMatch(/@import|\burl\(|https?:\/\//);
  });

  it("talks to the bind API, the simulator control and EventSource", () => {
    expect(html).toContain("/v1/binds");
    expect(html).toContain("/sim/traces/");
    expect(html).toContain("new EventSource(");
    expect(html).toContain('method: "DELETE"');
  });

  it("writes data with textContent only", () => {
    expect(html).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it("escapes the title", () => {
    const page = renderDemoPage({ title: '<script>alert("x")</script>' });
    expect(page).not.toContain('<script>alert("x")</script>');
    expect(page).toContain("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;");
  });

  it("has a script that parses", () => {
    const script = extractScript(html);
    expect(() => new Function(script)).not.toThrow();
  });
});

describe("the demo page script (in a minimal fake DOM)", () => {
  it("scripts the trace, registers it, watches until the final event and closes the stream", async () => {
    const page = loadPage();
    const traceId = page.el("trace-id").value;
    expect(traceId).toMatch(/^[0-9a-f]{30}$/);
    expect(page.el("curl").textContent).toContain(`/v1/binds/${traceId}/events`);

    await page.click("register");
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

    expect(page.sources).toHaveLength(1);
    const es = page.sources[0]!;
    expect(es.url).toBe(`http://demo.test/v1/binds/${traceId}/events?token=tok`);

    es.emit("pending", {
      ...state(traceId, "pending", 1),
      error: { code: "upstream_unavailable", message: "<b>x</b>" },
    });
    expect(page.el("status").textContent).toBe("pending");
    expect(page.el("s-error").textContent).toBe("upstream_unavailable: <b>x</b>");
    es.emit("bound", state(traceId, "bound", 2));
    expect(page.el("status").textContent).toBe("bound");
    expect(page.el("status").className).toBe("badge bound");
    expect(es.closed).toBe(true);
    const rows = page.el("timeline").tBodies[0]!.children.map((tr) => tr.children.map((td) => td.textContent));
    expect(rows.some((r) => r[2] === "bound" && r[3] === "2" && r[4] === "bound")).toBe(true);

    // "Watch again": a second EventSource whose reconnect after the final event gets 204.
    await page.click("watch-again");
    expect(page.sources).toHaveLength(2);
    const again = page.sources[1]!;
    again.emit("bound", state(traceId, "bound", 2));
    again.fail(0);
    again.fail(2);
    const notes = page.el("timeline").tBodies[0]!.children.map((tr) => tr.children[6]?.textContent ?? "");
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
  });
});

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
    upstream: { ret_code: 0, message: "", request_id: "r" },
    error: null,
  };
}

function extractScript(html: string): string {
  const match = /<script>([\s\S]*)<\/script>/.exec(html);
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
  onerror: (() => void) | null = null;
  readonly listeners = new Map<string, Listener[]>();
  constructor(readonly url: string) {}
  addEventListener(type: string, fn: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  close(): void {
    this.closed = true;
    this.readyState = 2;
  }
  emit(type: string, data: Record<string, unknown>): void {
    this.lastEventId = String(data.version);
    for (const fn of this.listeners.get(type) ?? []) {
      fn({ type, data: JSON.stringify(data), lastEventId: this.lastEventId });
    }
  }
  fail(readyState: number): void {
    this.readyState = readyState;
    this.onerror?.();
  }
}

interface FetchCall {
  url: string;
  method: string;
  body: string | undefined;
}

function loadPage(opts: { registerStatus?: number } = {}) {
  const html = renderDemoPage({});
  const elements = new Map<string, FakeElement>();
  for (const m of html.matchAll(/<(\w+)[^>]*\sid="([^"]+)"([^>]*)>/g)) {
    const el = new FakeElement();
    const value = /\svalue="([^"]*)"/.exec(m[0]);
    if (value?.[1] !== undefined) el.value = value[1];
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
        token: "tok",
      });
    }
    if (url.startsWith("/sim/traces/")) return json(200, { call_count: 0, calls: [], script: {} });
    return json(204, null);
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
    EventSource: class extends FakeEventSource {
      constructor(url: string) {
        super(url);
        sources.push(this);
      }
    },
    URL,
    crypto: globalThis.crypto,
    setInterval: () => 1,
    clearInterval: () => {},
  };
  runInNewContext(extractScript(html), context);

  return {
    fetches,
    sources,
    el(id: string): FakeElement {
      const el = elements.get(id);
      if (!el) throw new Error(`no element #${id}`);
      return el;
    },
    async click(id: string): Promise<void> {
      for (const fn of elements.get(id)?.listeners.get("click") ?? []) await fn({});
    },
  };
}
