import { type PageServer, startPageServer } from "../support/page-server.js";

/*
 * An app's page, as the README tells one to write it: it imports `watchBind` from the
 * bindwatch server's /v1/client.js and renders what it gets. Served from origins other
 * than bindwatch's, so every request it makes to bindwatch is cross-origin.
 *
 * Query: base (bindwatch origin), trace, token (optional), max_stream_failures (optional).
 * DOM: #status, #updates (one <li> per onUpdate: "<status> <version>"), #final
 * ("<status> <version>" when the promise resolves), #error ("BindwatchError <code> <status>"
 * or the rejection), #log (every EventSource opened and every error it fired).
 * `window.rawEvents`: every event any EventSource of the page received, before the client
 * drops versions it has already seen.
 */
export const WATCH_PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>bindwatch e2e watcher</title></head>
<body>
<h1>An app's page on another origin</h1>
<p>state: <b id="status">loading</b></p>
<p>final: <b id="final"></b></p>
<p>error: <b id="error"></b></p>
<ol id="updates"></ol>
<pre id="log"></pre>
<script type="module">
const params = new URLSearchParams(location.search);
const base = params.get("base") ?? "";
const traceId = params.get("trace") ?? "";
const token = params.get("token") ?? undefined;
const maxStreamFailures = Number(params.get("max_stream_failures") ?? "3");
const $ = (id) => document.getElementById(id);
const log = (text) => { $("log").textContent += text + "\\n"; };

const rawEvents = [];
window.rawEvents = rawEvents;
const NativeEventSource = window.EventSource;
window.EventSource = class RecordingEventSource extends NativeEventSource {
  constructor(url, init) {
    super(url, init);
    log("EventSource opened " + url);
    for (const type of ["pending", "bound", "failed", "expired", "cancelled"]) {
      this.addEventListener(type, (event) => rawEvents.push({ type, id: event.lastEventId }));
    }
    this.addEventListener("error", () => log("EventSource error, readyState " + this.readyState));
  }
};

try {
  const { watchBind } = await import(base + "/v1/client.js");
  $("status").textContent = "watching";
  const final = await watchBind({
    baseUrl: base,
    traceId,
    token,
    maxStreamFailures,
    onUpdate: (state) => {
      const li = document.createElement("li");
      li.textContent = state.status + " " + state.version;
      $("updates").append(li);
      $("status").textContent = state.status;
    },
  });
  $("final").textContent = final.status + " " + final.version;
} catch (err) {
  $("error").textContent = err && err.name === "BindwatchError" ? "BindwatchError " + err.code + " " + err.status : String(err);
}
</script>
</body>
</html>
`;

/** Serves WATCH_PAGE at /watch.html on `count` loopback ports, one origin each. */
export function startWatchPageServer(count = 2): Promise<PageServer> {
  return startPageServer(count, { "/watch.html": WATCH_PAGE });
}
