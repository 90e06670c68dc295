/*
 * The demo page's module (SPEC §6). The build inlines it, compiled, into page.html, so the
 * served page is one document; it runs as that document's module script. Its one other
 * resource is the browser client /v1/client.js of the same server: the page watches with
 * watchBind exactly as an app's page would. Every piece of data that goes into the DOM
 * goes through textContent, never innerHTML.
 */
import type { BindState } from "../../domain/bind.js";

/** The script forms of the simulator's control API (src/sim/control.ts). */
type ScriptSpec =
  | { outcome: "bound"; after: number }
  | { outcome: "failed"; after: number; ret_code: number; message: string }
  | { outcome: "trouble"; kind: string; count: number; then: "bound" }
  | { outcome: "slow"; delay_ms: number; count: number; then: "bound" }
  | { outcome: "never" };

/** What the page reads of GET /sim/traces/{trace_id}. */
interface SimTraceReport {
  readonly call_count: number;
  readonly max_in_flight: number;
  readonly min_start_gap_ms: number | null;
  readonly script: { readonly label: string | null };
  readonly calls: readonly {
    readonly seq: number;
    readonly started_at: string;
    readonly duration_ms: number | null;
    readonly step: string;
    readonly outcome: string | null;
  }[];
}

/** What the page reads of a POST /v1/binds answer. */
interface RegisterAnswer {
  readonly state?: BindState;
  readonly events_url?: string;
  readonly token?: string;
}

const $ = (id: string): HTMLElement => document.getElementById(id)!;
const input = (id: string): HTMLInputElement => $(id) as HTMLInputElement;
const button = (id: string): HTMLButtonElement => $(id) as HTMLButtonElement;
const tbody = (id: string): HTMLTableSectionElement => ($(id) as HTMLTableElement).tBodies[0]!;
const STATUSES: readonly string[] = ["pending", "bound", "failed", "expired", "cancelled"];
const CLIENT_MISSING = "The browser client /v1/client.js did not load: build it with npm run build and restart.";

// The browser client, loaded as any page would load it. Imported dynamically so that the
// rest of the page still works, and says why, when the server does not serve it.
const client = import("/v1/client.js");
client.catch(() => notice(CLIENT_MISSING, true));

let watching: AbortController | null = null; // the page's watchBind() call
let second: EventSource | null = null; // the "Watch again" EventSource
let simTimer: ReturnType<typeof setInterval> | null = null;
let eventsUrl: string | null = null;
let currentTrace: string | null = null;
let usesTokens: boolean | null = null; // unknown until a POST answers; then whether it returned a watch token

function randomTraceId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(15));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function traceId(): string {
  return input("trace-id").value.trim();
}

function fate(): string {
  return document.querySelector<HTMLInputElement>("input[name=fate]:checked")?.value ?? "bound";
}

function int(id: string): number {
  return Number.parseInt(input(id).value, 10);
}

/** Duck-typed: what a module import rejects with may come from another realm. */
function messageOf(err: unknown): string {
  const message = typeof err === "object" && err !== null ? (err as { message?: unknown }).message : undefined;
  return typeof message === "string" && message !== "" ? message : String(err);
}

function buildSpec(): ScriptSpec {
  switch (fate()) {
    case "bound":
      return { outcome: "bound", after: int("bound-after") };
    case "failed":
      return {
        outcome: "failed",
        after: int("failed-after"),
        ret_code: int("failed-code"),
        message: input("failed-message").value,
      };
    case "trouble":
      // biome-ignore lint/suspicious/noThenProperty: the control API's JSON name
      return { outcome: "trouble", kind: input("trouble-kind").value, count: int("trouble-count"), then: "bound" };
    case "slow":
      // biome-ignore lint/suspicious/noThenProperty: the control API's JSON name
      return { outcome: "slow", delay_ms: int("slow-delay"), count: int("slow-count"), then: "bound" };
    default:
      return { outcome: "never" };
  }
}

function buildBind(): Record<string, string> {
  return {
    trace_id: traceId(),
    open_id: input("open-id").value.trim(),
    product_key: input("product-key").value.trim(),
    user_type: "ilop",
  };
}

function authHeaders(extra: Record<string, string>): Record<string, string> {
  const headers = { ...extra };
  const key = input("api-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  return headers;
}

function notice(text: string, isError: boolean): void {
  const el = $("notice");
  el.textContent = text;
  el.className = isError ? "notice error" : "notice";
}

async function readError(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as { error?: { code: string; message: string; field?: string } } | null;
    if (body?.error) {
      const { code, message, field } = body.error;
      return `HTTP ${res.status} ${code}: ${message}${field ? ` (${field})` : ""}`;
    }
  } catch {
    // not JSON
  }
  return `HTTP ${res.status}`;
}

function clock(at?: string): string {
  const d = at ? new Date(at) : new Date();
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function cell(row: HTMLElement, text: unknown, cls?: string): HTMLElement {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function addRow(
  source: string,
  name: string,
  id: number | string,
  state: BindState | null,
  note: string,
  cls?: string,
): void {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  cell(tr, clock());
  cell(tr, source);
  cell(tr, name, STATUSES.includes(name) ? `ev-${name}` : "");
  cell(tr, id);
  cell(tr, state ? state.status : "");
  cell(tr, state ? state.attempts : "");
  cell(tr, note);
  const body = tbody("timeline");
  body.appendChild(tr);
  const scroller = body.parentElement?.parentElement;
  if (scroller) scroller.scrollTop = scroller.scrollHeight;
}

function addNote(source: string, text: string): void {
  addRow(source, "·", "", null, text, "note");
}

function describeError(state: BindState): string {
  return state.error ? `${state.error.code}: ${state.error.message}` : "";
}

function showState(state: BindState): void {
  const badge = $("status");
  badge.textContent = state.status;
  badge.className = `badge ${STATUSES.includes(state.status) ? state.status : "idle"}`;
  $("s-version").textContent = String(state.version);
  $("s-attempts").textContent = String(state.attempts);
  const up = state.upstream;
  $("s-upstream").textContent = up ? `ret_code ${up.ret_code}${up.message ? ` · ${up.message}` : ""}` : "–";
  $("s-eagleeye").textContent = up?.eagleeye_id || "–";
  $("s-error").textContent = state.error ? describeError(state) : "none";
  $("s-expires").textContent = state.expires_at ? clock(state.expires_at) : "–";
}

function parse(data: string): BindState | null {
  try {
    return JSON.parse(data) as BindState;
  } catch {
    return null;
  }
}

function closeStreams(): void {
  if (watching) {
    watching.abort();
    watching = null;
  }
  if (second) {
    second.close();
    second = null;
  }
}

/** The page's main watch: watchBind() from the client module, until its promise settles. */
async function watch(id: string, token: string | undefined): Promise<void> {
  if (watching) watching.abort();
  const controller = new AbortController();
  watching = controller;
  const current = () => watching === controller;
  let mod: Awaited<typeof client>;
  try {
    mod = await client;
  } catch (err) {
    if (current()) watching = null;
    addNote("watchBind", `/v1/client.js did not load: ${messageOf(err)}`);
    notice(CLIENT_MISSING, true);
    stopSimPolling();
    return;
  }
  if (!current()) return;
  addNote(
    "watchBind",
    `watchBind({ traceId${token ? ", token" : ""} }): EventSource (long-poll fallback), resuming from the last event id after a drop`,
  );
  try {
    const final = await mod.watchBind({
      baseUrl: "",
      traceId: id,
      ...(token ? { token } : {}),
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
    addNote("watchBind", `promise resolved: final state ${final.status} (version ${final.version})`);
    notice(`Final state of ${id}: ${final.status}. Watch again shows how a late watcher gets it.`, false);
    button("cancel").disabled = true;
    void refreshSim();
    stopSimPolling();
  } catch (err) {
    if (!current() || controller.signal.aborted) return;
    watching = null;
    stopSimPolling();
    button("cancel").disabled = true;
    if (err instanceof mod.BindwatchError) {
      const what = `BindwatchError ${err.code} (HTTP ${err.status})`;
      $("watch-error").textContent = `Access refused: ${what}: ${err.message}`;
      $("status").textContent = "not watching";
      $("status").className = "badge idle";
      addNote("watchBind", `promise rejected: ${what}`);
      notice(`Watching ${id} failed: ${what}`, true);
    } else {
      addNote("watchBind", `promise rejected: ${messageOf(err)}`);
      notice(`Watching ${id} failed: ${messageOf(err)}`, true);
    }
  }
}

function watchAgain(): void {
  if (!eventsUrl) return;
  if (second) second.close();
  const es = new EventSource(eventsUrl);
  second = es;
  let errors = 0;
  // What EventSource sends as Last-Event-ID when it reconnects (it does not expose it itself).
  let lastEventId = "";
  addNote("watch again", "a second, raw EventSource opened");
  const onEvent = (ev: MessageEvent<string>) => {
    lastEventId = ev.lastEventId;
    const state = parse(ev.data);
    if (!state) return;
    showState(state);
    const note = describeError(state) || (state.final ? "final, from stored state" : "");
    addRow("watch again", ev.type, ev.lastEventId, state, note, state.final ? "final" : "");
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
      addNote("watch again", `gave up after ${errors} reconnects`);
    } else {
      addNote("watch again", `stream ended: the browser reconnects with Last-Event-ID ${lastEventId || "(none)"}`);
    }
  };
}

async function refreshSim(): Promise<void> {
  const id = currentTrace;
  if (!id) return;
  try {
    const res = await fetch(`/sim/traces/${encodeURIComponent(id)}`, { cache: "no-store" });
    if (!res.ok || id !== currentTrace) return;
    const report = (await res.json()) as SimTraceReport;
    $("g-calls").textContent = String(report.call_count);
    $("g-max").textContent = String(report.max_in_flight);
    $("g-gap").textContent = report.min_start_gap_ms == null ? "–" : `${report.min_start_gap_ms} ms`;
    $("g-script").textContent = report.script.label || "default";
    const body = tbody("calls");
    body.replaceChildren();
    for (const call of report.calls.slice().reverse()) {
      const tr = document.createElement("tr");
      cell(tr, call.seq);
      cell(tr, clock(call.started_at));
      cell(tr, call.duration_ms == null ? "in flight" : `${call.duration_ms} ms`);
      cell(tr, call.outcome == null ? `${call.step} …` : call.step);
      body.appendChild(tr);
    }
  } catch {
    // the next tick tries again
  }
}

function startSimPolling(): void {
  stopSimPolling();
  void refreshSim();
  simTimer = setInterval(refreshSim, 1000);
}

function stopSimPolling(): void {
  if (simTimer) {
    clearInterval(simTimer);
    simTimer = null;
  }
}

function withToken(url: string, token: string | undefined): string {
  const u = new URL(url, location.href);
  if (token && !u.searchParams.has("token")) u.searchParams.set("token", token);
  return u.toString();
}

async function register(): Promise<void> {
  const id = traceId();
  if (!id) {
    notice("trace_id is required", true);
    return;
  }
  closeStreams();
  stopSimPolling();
  eventsUrl = null;
  currentTrace = id;
  tbody("timeline").replaceChildren();
  tbody("calls").replaceChildren();
  $("watch-error").textContent = "";
  button("watch-again").disabled = true;
  button("cancel").disabled = true;
  notice("Scripting the simulated device…", false);
  try {
    const put = await fetch(`/sim/traces/${encodeURIComponent(id)}/script`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(buildSpec()),
    });
    if (!put.ok) {
      notice(`Script rejected: ${await readError(put)}`, true);
      return;
    }
    const scripted = (await put.json()) as Pick<SimTraceReport, "script">;
    addNote("page", `simulated fate set: ${scripted.script.label || "default"}`);

    const res = await fetch("/v1/binds", {
      method: "POST",
      headers: authHeaders({ "content-type": "application/json" }),
      body: JSON.stringify(buildBind()),
    });
    if (!res.ok) {
      notice(`Register failed: ${await readError(res)}`, true);
      return;
    }
    const body = (await res.json()) as RegisterAnswer;
    addNote(
      "page",
      `POST /v1/binds → HTTP ${res.status}${res.status === 201 ? " (new)" : " (already registered)"}${body.token ? ", with a watch token" : ""}`,
    );
    if (body.state) showState(body.state);
    usesTokens = Boolean(body.token);
    renderCode();
    eventsUrl = withToken(body.events_url || `/v1/binds/${encodeURIComponent(id)}/events`, body.token);
    notice(`Registered ${id}. Watching its events…`, false);
    button("cancel").disabled = false;
    button("watch-again").disabled = false;
    startSimPolling();
    void watch(id, body.token);
  } catch (err) {
    notice(`Request failed: ${messageOf(err)}`, true);
  }
}

async function cancel(): Promise<void> {
  const id = currentTrace;
  if (!id) return;
  try {
    const res = await fetch(`/v1/binds/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders({}) });
    if (!res.ok) {
      notice(`Cancel failed: ${await readError(res)}`, true);
      return;
    }
    notice(`Cancelled ${id}; watchers receive the final cancelled event.`, false);
    addNote("page", `DELETE /v1/binds/${id} → HTTP ${res.status}`);
  } catch (err) {
    notice(`Request failed: ${messageOf(err)}`, true);
  }
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function renderCode(): void {
  const id = traceId() || "<trace_id>";
  const base = location.origin;
  const path = encodeURIComponent(id);
  const auth = input("api-key").value.trim() ? ' -H "authorization: Bearer $API_KEY"' : "";
  const token = usesTokens ? "token=$WATCH_TOKEN" : "";
  $("curl").textContent = [
    "# 1. script the simulated device",
    `curl -X PUT ${shellQuote(`${base}/sim/traces/${path}/script`)} -H 'content-type: application/json' \\`,
    `  -d ${shellQuote(JSON.stringify(buildSpec()))}`,
    `# 2. register the bind attempt${usesTokens ? " (its answer has the watch token)" : ""}`,
    `curl -X POST ${shellQuote(`${base}/v1/binds`)} -H 'content-type: application/json'${auth} \\`,
    `  -d ${shellQuote(JSON.stringify(buildBind()))}`,
    "# 3. watch it (Server-Sent Events) …",
    `curl -N ${shellQuote(`${base}/v1/binds/${path}/events${token ? `?${token}` : ""}`)}`,
    "# … or long-poll for the next change",
    `curl ${shellQuote(`${base}/v1/binds/${path}?wait=30&after=0${token ? `&${token}` : ""}`)}`,
    "# cancel it",
    `curl -X DELETE ${shellQuote(`${base}/v1/binds/${path}`)}${auth}`,
    "# what the simulated gateway saw",
    `curl ${shellQuote(`${base}/sim/traces/${path}`)}`,
  ].join("\n");
  const lines = [
    "// In a module script of your page:",
    `import { watchBind } from ${JSON.stringify(`${base}/v1/client.js`)};`,
    "const watching = watchBind({",
    `  baseUrl: ${JSON.stringify(base)},`,
    `  traceId: ${JSON.stringify(id)},`,
  ];
  if (usesTokens !== false) {
    lines.push(
      `  token, // the token of the POST answer${usesTokens ? "" : ", when the server sets WATCH_TOKEN_SECRET"}`,
    );
  }
  lines.push(
    "  onUpdate: (state) => console.log(state.status, state.version),",
    "});",
    "const final = await watching; // bound, failed, expired or cancelled",
    "// it rejects with a BindwatchError (err.code, err.status) on 400, 401, 403 or 404",
  );
  $("client-code").textContent = lines.join("\n");
  renderSandboxCode();
}

/**
 * A checkbind call to the sandbox gateway signed from TOP's public rules (SPEC §2), in
 * bash: hmac-sha256 over the parameters sorted by name, the timestamp in GMT+8. `CST-8`
 * is the POSIX spelling of GMT+8, which needs no time zone database on the host.
 */
function renderSandboxCode(): void {
  const gateway = `${location.origin}/sim/router/rest`;
  input("sandbox-url").value = gateway;
  const bind = buildBind();
  $("sandbox-curl").textContent = [
    `app_key=${shellQuote(input("sandbox-app-key").value)} app_secret=${shellQuote(input("sandbox-app-secret").value)}`,
    `trace_id=${shellQuote(bind.trace_id ?? "")} open_id=${shellQuote(bind.open_id ?? "")} product_key=${shellQuote(bind.product_key ?? "")}`,
    "method=alibaba.ailabs.iot.device.inside.checkbind.invoke",
    "timestamp=$(TZ=CST-8 date '+%Y-%m-%d %H:%M:%S')",
    "# every parameter but sign, sorted by name, as name1value1name2value2…",
    'text=$(printf \'%s%s\' app_key "$app_key" format json method "$method" open_id "$open_id" \\',
    '  product_key "$product_key" sign_method hmac-sha256 timestamp "$timestamp" trace_id "$trace_id" user_type ilop v 2.0)',
    "sign=$(printf '%s' \"$text\" | openssl dgst -sha256 -hmac \"$app_secret\" | sed 's/^.*= //' | tr a-f A-F)",
    `curl -sS ${shellQuote(gateway)} --data-urlencode "method=$method" --data-urlencode "app_key=$app_key" \\`,
    '  --data-urlencode "timestamp=$timestamp" -d v=2.0 -d format=json -d sign_method=hmac-sha256 -d "sign=$sign" \\',
    '  --data-urlencode "trace_id=$trace_id" --data-urlencode "open_id=$open_id" \\',
    '  --data-urlencode "product_key=$product_key" -d user_type=ilop',
  ].join("\n");
}

async function copy(id: string, what: string): Promise<void> {
  try {
    await navigator.clipboard.writeText($(id).textContent ?? "");
    notice(`${what} copied`, false);
  } catch {
    notice("Copy failed: select the text instead", true);
  }
}

input("trace-id").value = randomTraceId();
$("new-trace").addEventListener("click", () => {
  input("trace-id").value = randomTraceId();
  renderCode();
});
$("register").addEventListener("click", register);
$("cancel").addEventListener("click", cancel);
$("watch-again").addEventListener("click", watchAgain);
$("copy-curl").addEventListener("click", () => copy("curl", "curl commands"));
$("copy-code").addEventListener("click", () => copy("client-code", "client code"));
$("copy-sandbox").addEventListener("click", () => copy("sandbox-curl", "sandbox command"));
$("setup").addEventListener("input", renderCode);
$("setup").addEventListener("change", renderCode);
window.addEventListener("beforeunload", closeStreams);
renderCode();
