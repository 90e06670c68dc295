/*
 * The demo page of simulator mode (SPEC §6), served at `GET /`. One document with inline
 * CSS and JS; the only other resource is the browser client, `/v1/client.js`, from the
 * same server: the page watches with `watchBind` exactly as an app's page would. Every
 * piece of data that goes into the DOM goes through textContent, never innerHTML.
 */

export interface DemoPageOptions {
  readonly title?: string;
}

const DEFAULT_TITLE = "bindwatch — simulator demo";

/**
 * Renders the demo page.
 * @example app.get("/", (c) => c.html(renderDemoPage({ title: "bindwatch demo" })));
 */
export function renderDemoPage(opts: DemoPageOptions = {}): string {
  const title = escapeHtml(opts.title ?? DEFAULT_TITLE);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>${title}</h1>
  <p class="lead">Simulator mode: the server polls a built-in TOP gateway over real HTTP. Pick the simulated
  device's fate, register a bind and watch its events arrive.</p>
</header>
<main>
  <section class="card" id="setup">
    <h2>1. The bind attempt</h2>
    <div class="grid">
      <label>trace_id
        <span class="row"><input id="trace-id" autocomplete="off" spellcheck="false" maxlength="128">
        <button type="button" id="new-trace" class="ghost" title="Generate a new trace_id">New</button></span>
      </label>
      <label>product_key <input id="product-key" value="a1DemoProductKey" spellcheck="false" maxlength="256"></label>
      <label>open_id <input id="open-id" value="demo-open-id-0001" spellcheck="false" maxlength="256"></label>
      <label>API key <small>(only when the server sets API_KEYS)</small>
        <input id="api-key" type="password" autocomplete="off" placeholder="none"></label>
    </div>

    <h2>2. The simulated device's fate</h2>
    <div class="fates" role="radiogroup" aria-label="Simulated outcome">
      <label class="fate"><input type="radio" name="fate" value="bound" checked>
        <span><b>Binds</b> after <input id="bound-after" type="number" min="0" max="1000" value="3"> pending polls</span></label>
      <label class="fate"><input type="radio" name="fate" value="failed">
        <span><b>Fails</b> after <input id="failed-after" type="number" min="0" max="1000" value="2"> polls with
        ret_code <input id="failed-code" type="number" value="1001"> message
        <input id="failed-message" value="device offline" maxlength="256" class="wide"></span></label>
      <label class="fate"><input type="radio" name="fate" value="trouble">
        <span><b>Upstream trouble</b>
        <select id="trouble-kind">
          <option value="http_error">HTTP 503</option>
          <option value="isp_error">isp.remote-service-error</option>
          <option value="garbage">garbage body</option>
          <option value="ban">rate-limit ban (2 s)</option>
        </select>
        for <input id="trouble-count" type="number" min="0" max="1000" value="3"> calls, then binds</span></label>
      <label class="fate"><input type="radio" name="fate" value="slow">
        <span><b>Slow answers</b> of <input id="slow-delay" type="number" min="0" max="120000" step="500" value="3000"> ms
        for <input id="slow-count" type="number" min="0" max="1000" value="3"> calls, then binds</span></label>
      <label class="fate"><input type="radio" name="fate" value="never">
        <span><b>Never binds</b>: the attempt expires at its deadline</span></label>
    </div>

    <div class="actions">
      <button type="button" id="register" class="primary">Register &amp; watch</button>
      <button type="button" id="cancel" disabled>Cancel</button>
      <button type="button" id="watch-again" disabled title="Open a second EventSource on the same trace">Watch again</button>
    </div>
    <p id="notice" class="notice" role="status" aria-live="polite"></p>
  </section>

  <section class="card" id="state-card">
    <h2>Current state</h2>
    <div class="state">
      <span id="status" class="badge idle">not registered</span>
      <dl>
        <div><dt>version</dt><dd id="s-version">–</dd></div>
        <div><dt>attempts</dt><dd id="s-attempts">–</dd></div>
        <div><dt>upstream</dt><dd id="s-upstream">–</dd></div>
        <div><dt>error</dt><dd id="s-error">–</dd></div>
        <div><dt>expires</dt><dd id="s-expires">–</dd></div>
      </dl>
    </div>
    <p id="watch-error" class="access-error" role="alert"></p>
    <h3>Event timeline</h3>
    <div class="scroll">
      <table id="timeline">
        <thead><tr><th>time</th><th>source</th><th>event</th><th>id</th><th>status</th><th>attempts</th><th>error / note</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
  </section>

  <section class="card" id="sim-card">
    <h2>Simulated TOP gateway</h2>
    <p class="muted">What the gateway saw for this trace: one checkbind call per poll interval however many watchers there are.</p>
    <dl class="inline">
      <div><dt>calls</dt><dd id="g-calls">–</dd></div>
      <div><dt>max in flight</dt><dd id="g-max">–</dd></div>
      <div><dt>min gap</dt><dd id="g-gap">–</dd></div>
      <div><dt>script</dt><dd id="g-script">–</dd></div>
    </dl>
    <div class="scroll short">
      <table id="calls">
        <thead><tr><th>#</th><th>started</th><th>took</th><th>answer</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
  </section>

  <section class="card" id="curl-card">
    <h2>The same from a shell or a page</h2>
    <div class="code-grid">
      <div>
        <h3>curl</h3>
        <pre id="curl"></pre>
        <button type="button" id="copy-curl" class="ghost">Copy</button>
      </div>
      <div>
        <h3>In a page, with the client module</h3>
        <pre id="client-code"></pre>
        <button type="button" id="copy-code" class="ghost">Copy</button>
      </div>
    </div>
  </section>
</main>
<script type="module">${SCRIPT}</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const STYLE = `
:root {
  color-scheme: light dark;
  --bg: #f5f6f8; --card: #fff; --fg: #1d2330; --muted: #667085; --line: #e3e6eb;
  --accent: #2f6fed; --ok: #15803d; --bad: #b42318; --warn: #b54708; --idle: #667085;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #111418; --card: #1a1e24; --fg: #e6e9ee; --muted: #98a2b3; --line: #2b313a;
    --accent: #6c9bff; --ok: #4ade80; --bad: #f87171; --warn: #fbbf24; --idle: #98a2b3; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { max-width: 1100px; margin: 0 auto; padding: 24px 20px 4px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.05rem; margin: 0 0 12px; }
h3 { font-size: .95rem; margin: 18px 0 8px; }
.lead, .muted { color: var(--muted); margin: 0 0 8px; }
main { max-width: 1100px; margin: 0 auto; padding: 12px 20px 40px; display: grid; gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 12px 16px; margin-bottom: 18px; }
label { display: flex; flex-direction: column; gap: 4px; font-size: .85rem; color: var(--muted); }
label small { font-size: .75rem; }
.row { display: flex; gap: 6px; }
.row input { flex: 1; min-width: 0; }
input, select, button { font: inherit; color: var(--fg); }
input, select { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; }
input[type=number] { width: 6.5em; }
input.wide { width: 14em; }
input:focus, select:focus, button:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
.fates { display: grid; gap: 8px; }
.fate { flex-direction: row; align-items: center; gap: 10px; color: var(--fg); font-size: .95rem;
  border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
.fate:has(input[type=radio]:checked) { border-color: var(--accent); }
.fate span { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; }
.actions { display: flex; gap: 10px; margin-top: 16px; flex-wrap: wrap; }
button { border: 1px solid var(--line); background: var(--card); border-radius: 6px; padding: 7px 14px; cursor: pointer; }
button:disabled { opacity: .45; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.ghost { padding: 6px 10px; }
.notice { min-height: 1.5em; margin: 10px 0 0; color: var(--muted); }
.notice.error { color: var(--bad); }
.state { display: flex; align-items: center; gap: 24px; flex-wrap: wrap; }
.badge { display: inline-block; padding: 6px 14px; border-radius: 999px; font-weight: 600; color: #fff;
  background: var(--idle); text-transform: uppercase; letter-spacing: .04em; font-size: .85rem; }
.badge.pending { background: var(--accent); }
.badge.bound { background: var(--ok); }
.badge.failed { background: var(--bad); }
.badge.expired, .badge.cancelled { background: var(--warn); }
dl { display: flex; gap: 22px; flex-wrap: wrap; margin: 0; }
dl div { display: flex; flex-direction: column; }
dt { font-size: .75rem; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
dd { margin: 0; font-variant-numeric: tabular-nums; }
dl.inline { margin-bottom: 10px; }
.scroll { max-height: 360px; overflow: auto; border: 1px solid var(--line); border-radius: 8px; }
.scroll.short { max-height: 240px; }
table { width: 100%; border-collapse: collapse; font-size: .85rem; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
td:last-child { white-space: normal; }
th { position: sticky; top: 0; background: var(--card); color: var(--muted); font-weight: 600; }
tr.note td { color: var(--muted); font-style: italic; }
tr.final td { font-weight: 600; }
td.ev-bound { color: var(--ok); } td.ev-failed { color: var(--bad); }
td.ev-expired, td.ev-cancelled { color: var(--warn); } td.ev-pending { color: var(--accent); }
.access-error { margin: 14px 0 0; padding: 8px 12px; border: 1px solid var(--bad); border-radius: 8px; color: var(--bad); }
.access-error:empty { display: none; }
.code-grid { display: grid; gap: 8px; }
.code-grid > div { min-width: 0; }
.code-grid h3 { margin-top: 4px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px; overflow: auto;
  font: 12.5px/1.55 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; margin: 0 0 10px; }
`;

// Plain browser JavaScript (no build step), run as the page's module script.
const SCRIPT = `
  const $ = (id) => document.getElementById(id);
  const STATUSES = ["pending", "bound", "failed", "expired", "cancelled"];

  // The browser client, loaded as any page would load it. Imported dynamically so that the
  // rest of the page still works, and says why, when the server does not serve it.
  const client = import("/v1/client.js");
  client.catch(() => notice("The browser client /v1/client.js did not load: build it with npm run build and restart.", true));

  let watching = null;    // the AbortController of the page's watchBind() call
  let second = null;      // the "Watch again" EventSource
  let simTimer = null;
  let eventsUrl = null;
  let currentTrace = null;
  let usesTokens = null;  // unknown until a POST answers; then whether it returned a watch token

  function randomTraceId() {
    const bytes = crypto.getRandomValues(new Uint8Array(15));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function traceId() { return $("trace-id").value.trim(); }
  function fate() { return document.querySelector("input[name=fate]:checked").value; }
  function int(id) { return Number.parseInt($(id).value, 10); }
  function messageOf(err) { return err && err.message ? err.message : String(err); }

  function buildSpec() {
    switch (fate()) {
      case "bound": return { outcome: "bound", after: int("bound-after") };
      case "failed": return { outcome: "failed", after: int("failed-after"), ret_code: int("failed-code"),
        message: $("failed-message").value };
      case "trouble": return { outcome: "trouble", kind: $("trouble-kind").value, count: int("trouble-count"), then: "bound" };
      case "slow": return { outcome: "slow", delay_ms: int("slow-delay"), count: int("slow-count"), then: "bound" };
      default: return { outcome: "never" };
    }
  }

  function buildBind() {
    return { trace_id: traceId(), open_id: $("open-id").value.trim(), product_key: $("product-key").value.trim(),
      user_type: "ilop" };
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const key = $("api-key").value.trim();
    if (key) headers.authorization = "Bearer " + key;
    return headers;
  }

  function notice(text, isError) {
    const el = $("notice");
    el.textContent = text;
    el.className = isError ? "notice error" : "notice";
  }

  async function readError(res) {
    try {
      const body = await res.json();
      if (body && body.error) {
        return "HTTP " + res.status + " " + body.error.code + ": " + body.error.message +
          (body.error.field ? " (" + body.error.field + ")" : "");
      }
    } catch (_) { /* not JSON */ }
    return "HTTP " + res.status;
  }

  function clock(at) {
    const d = at ? new Date(at) : new Date();
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function addRow(source, name, id, state, note, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    cell(tr, clock());
    cell(tr, source);
    cell(tr, name, STATUSES.includes(name) ? "ev-" + name : "");
    cell(tr, id);
    cell(tr, state ? state.status : "");
    cell(tr, state ? state.attempts : "");
    cell(tr, note);
    const body = $("timeline").tBodies[0];
    body.appendChild(tr);
    body.parentElement.parentElement.scrollTop = body.parentElement.parentElement.scrollHeight;
  }

  function addNote(source, text) { addRow(source, "·", "", null, text, "note"); }

  function describeError(state) {
    if (!state.error) return "";
    return state.error.code + ": " + state.error.message;
  }

  function showState(state) {
    const badge = $("status");
    badge.textContent = state.status;
    badge.className = "badge " + (STATUSES.includes(state.status) ? state.status : "idle");
    $("s-version").textContent = String(state.version);
    $("s-attempts").textContent = String(state.attempts);
    const up = state.upstream;
    $("s-upstream").textContent = up ? "ret_code " + up.ret_code + (up.message ? " · " + up.message : "") : "–";
    $("s-error").textContent = state.error ? describeError(state) : "none";
    $("s-expires").textContent = state.expires_at ? clock(state.expires_at) : "–";
  }

  function parse(data) {
    try { return JSON.parse(data); } catch (_) { return null; }
  }

  function closeStreams() {
    if (watching) { watching.abort(); watching = null; }
    if (second) { second.close(); second = null; }
  }

  /** The page's main watch: watchBind() from the client module, until its promise settles. */
  async function watch(id, token) {
    if (watching) watching.abort();
    const controller = new AbortController();
    watching = controller;
    const current = () => watching === controller;
    let mod;
    try {
      mod = await client;
    } catch (err) {
      if (current()) watching = null;
      addNote("watchBind", "/v1/client.js did not load: " + messageOf(err));
      notice("The browser client /v1/client.js did not load: build it with npm run build and restart.", true);
      stopSimPolling();
      return;
    }
    if (!current()) return;
    addNote("watchBind", "watchBind({ traceId" + (token ? ", token" : "") +
      " }): EventSource (long-poll fallback), resuming from the last event id after a drop");
    try {
      const final = await mod.watchBind({
        baseUrl: "",
        traceId: id,
        token: token || undefined,
        signal: controller.signal,
        onUpdate: (state) => {
          if (!current()) return;
          showState(state);
          addRow("watchBind", state.status, state.version, state, describeError(state), state.final ? "final" : "");
        },
      });
      if (!current()) return;
      watching = null;
      showState(final);
      addNote("watchBind", "promise resolved: final state " + final.status + " (version " + final.version + ")");
      notice("Final state of " + id + ": " + final.status + ". Watch again shows how a late watcher gets it.", false);
      $("cancel").disabled = true;
      refreshSim();
      stopSimPolling();
    } catch (err) {
      if (!current() || controller.signal.aborted) return;
      watching = null;
      stopSimPolling();
      $("cancel").disabled = true;
      if (err instanceof mod.BindwatchError) {
        const what = "BindwatchError " + err.code + " (HTTP " + err.status + ")";
        $("watch-error").textContent = "Access refused: " + what + ": " + err.message;
        $("status").textContent = "not watching";
        $("status").className = "badge idle";
        addNote("watchBind", "promise rejected: " + what);
        notice("Watching " + id + " failed: " + what, true);
      } else {
        addNote("watchBind", "promise rejected: " + messageOf(err));
        notice("Watching " + id + " failed: " + messageOf(err), true);
      }
    }
  }

  function watchAgain() {
    if (!eventsUrl) return;
    if (second) second.close();
    const es = new EventSource(eventsUrl);
    second = es;
    let errors = 0;
    addNote("watch again", "a second, raw EventSource opened");
    const onEvent = (ev) => {
      const state = parse(ev.data);
      if (!state) return;
      showState(state);
      addRow("watch again", ev.type, ev.lastEventId, state, describeError(state) || (state.final ? "final, from stored state" : ""),
        state.final ? "final" : "");
    };
    for (const name of STATUSES) es.addEventListener(name, onEvent);
    es.addEventListener("message", onEvent);
    // Deliberately not closed on the final event: the server ends the stream, the browser
    // reconnects with Last-Event-ID, and the 204 it gets makes EventSource stop for good.
    es.onerror = () => {
      errors += 1;
      if (es.readyState === EventSource.CLOSED) {
        addNote("watch again", "reconnect refused (204 after the final event): EventSource stopped");
        if (second === es) second = null;
      } else if (errors > 3) {
        es.close();
        if (second === es) second = null;
        addNote("watch again", "gave up after " + errors + " reconnects");
      } else {
        addNote("watch again", "stream ended: the browser reconnects with Last-Event-ID " + (es.lastEventId || "(none)"));
      }
    };
  }

  async function refreshSim() {
    const id = currentTrace;
    if (!id) return;
    try {
      const res = await fetch("/sim/traces/" + encodeURIComponent(id), { cache: "no-store" });
      if (!res.ok || id !== currentTrace) return;
      const report = await res.json();
      $("g-calls").textContent = String(report.call_count);
      $("g-max").textContent = String(report.max_in_flight);
      $("g-gap").textContent = report.min_start_gap_ms == null ? "–" : report.min_start_gap_ms + " ms";
      $("g-script").textContent = report.script.label || "default";
      const body = $("calls").tBodies[0];
      body.replaceChildren();
      for (const call of report.calls.slice().reverse()) {
        const tr = document.createElement("tr");
        cell(tr, call.seq);
        cell(tr, clock(call.started_at));
        cell(tr, call.duration_ms == null ? "in flight" : call.duration_ms + " ms");
        cell(tr, call.outcome == null ? call.step + " …" : call.step);
        body.appendChild(tr);
      }
    } catch (_) { /* the next tick tries again */ }
  }

  function startSimPolling() {
    stopSimPolling();
    refreshSim();
    simTimer = setInterval(refreshSim, 1000);
  }

  function stopSimPolling() {
    if (simTimer) { clearInterval(simTimer); simTimer = null; }
  }

  function withToken(url, token) {
    const u = new URL(url, location.href);
    if (token && !u.searchParams.has("token")) u.searchParams.set("token", token);
    return u.toString();
  }

  async function register() {
    const id = traceId();
    if (!id) { notice("trace_id is required", true); return; }
    closeStreams();
    stopSimPolling();
    eventsUrl = null;
    currentTrace = id;
    $("timeline").tBodies[0].replaceChildren();
    $("calls").tBodies[0].replaceChildren();
    $("watch-error").textContent = "";
    $("watch-again").disabled = true;
    $("cancel").disabled = true;
    notice("Scripting the simulated device…", false);
    try {
      const put = await fetch("/sim/traces/" + encodeURIComponent(id) + "/script", {
        method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(buildSpec()),
      });
      if (!put.ok) { notice("Script rejected: " + (await readError(put)), true); return; }
      addNote("page", "simulated fate set: " + ((await put.json()).script.label || "default"));

      const res = await fetch("/v1/binds", {
        method: "POST", headers: authHeaders({ "content-type": "application/json" }), body: JSON.stringify(buildBind()),
      });
      if (!res.ok) { notice("Register failed: " + (await readError(res)), true); return; }
      const body = await res.json();
      addNote("page", "POST /v1/binds → HTTP " + res.status + (res.status === 201 ? " (new)" : " (already registered)") +
        (body.token ? ", with a watch token" : ""));
      if (body.state) showState(body.state);
      usesTokens = Boolean(body.token);
      renderCode();
      eventsUrl = withToken(body.events_url || "/v1/binds/" + encodeURIComponent(id) + "/events", body.token);
      notice("Registered " + id + ". Watching its events…", false);
      $("cancel").disabled = false;
      $("watch-again").disabled = false;
      startSimPolling();
      watch(id, body.token);
    } catch (err) {
      notice("Request failed: " + messageOf(err), true);
    }
  }

  async function cancel() {
    const id = currentTrace;
    if (!id) return;
    try {
      const res = await fetch("/v1/binds/" + encodeURIComponent(id), { method: "DELETE", headers: authHeaders({}) });
      if (!res.ok) { notice("Cancel failed: " + (await readError(res)), true); return; }
      notice("Cancelled " + id + "; watchers receive the final cancelled event.", false);
      addNote("page", "DELETE /v1/binds/" + id + " → HTTP " + res.status);
    } catch (err) {
      notice("Request failed: " + messageOf(err), true);
    }
  }

  function shellQuote(text) { return "'" + String(text).replace(/'/g, "'\\\\''") + "'"; }

  function renderCode() {
    const id = traceId() || "<trace_id>";
    const base = location.origin;
    const path = encodeURIComponent(id);
    const auth = $("api-key").value.trim() ? " -H \\"authorization: Bearer $API_KEY\\"" : "";
    const token = usesTokens ? "token=$WATCH_TOKEN" : "";
    $("curl").textContent = [
      "# 1. script the simulated device",
      "curl -X PUT " + shellQuote(base + "/sim/traces/" + path + "/script") + " -H 'content-type: application/json' \\\\",
      "  -d " + shellQuote(JSON.stringify(buildSpec())),
      "# 2. register the bind attempt" + (usesTokens ? " (its answer has the watch token)" : ""),
      "curl -X POST " + shellQuote(base + "/v1/binds") + " -H 'content-type: application/json'" + auth + " \\\\",
      "  -d " + shellQuote(JSON.stringify(buildBind())),
      "# 3. watch it (Server-Sent Events) …",
      "curl -N " + shellQuote(base + "/v1/binds/" + path + "/events" + (token ? "?" + token : "")),
      "# … or long-poll for the next change",
      "curl " + shellQuote(base + "/v1/binds/" + path + "?wait=30&after=0" + (token ? "&" + token : "")),
      "# cancel it",
      "curl -X DELETE " + shellQuote(base + "/v1/binds/" + path) + auth,
      "# what the simulated gateway saw",
      "curl " + shellQuote(base + "/sim/traces/" + path),
    ].join("\\n");
    const lines = [
      "// In a module script of your page:",
      "import { watchBind } from " + JSON.stringify(base + "/v1/client.js") + ";",
      "const watching = watchBind({",
      "  baseUrl: " + JSON.stringify(base) + ",",
      "  traceId: " + JSON.stringify(id) + ",",
    ];
    if (usesTokens !== false) {
      lines.push("  token, // the token of the POST answer" + (usesTokens ? "" : ", when the server sets WATCH_TOKEN_SECRET"));
    }
    lines.push(
      "  onUpdate: (state) => console.log(state.status, state.version),",
      "});",
      "const final = await watching; // bound, failed, expired or cancelled",
      "// it rejects with a BindwatchError (err.code, err.status) on 400, 401, 403 or 404",
    );
    $("client-code").textContent = lines.join("\\n");
  }

  async function copy(id, what) {
    try { await navigator.clipboard.writeText($(id).textContent); notice(what + " copied", false); }
    catch (_) { notice("Copy failed: select the text instead", true); }
  }

  $("trace-id").value = randomTraceId();
  $("new-trace").addEventListener("click", () => { $("trace-id").value = randomTraceId(); renderCode(); });
  $("register").addEventListener("click", register);
  $("cancel").addEventListener("click", cancel);
  $("watch-again").addEventListener("click", watchAgain);
  $("copy-curl").addEventListener("click", () => copy("curl", "curl commands"));
  $("copy-code").addEventListener("click", () => copy("client-code", "client code"));
  $("setup").addEventListener("input", renderCode);
  $("setup").addEventListener("change", renderCode);
  window.addEventListener("beforeunload", closeStreams);
  renderCode();
`;
