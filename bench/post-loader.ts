import { Agent, request } from "node:http";
import { performance } from "node:perf_hooks";

/*
 * Registration load: CONCURRENCY keep-alive connections, each POSTing a new
 * registration (a fresh trace_id every time) to URL/v1/binds as soon as the previous
 * answer arrived, for DURATION_MS or MAX_REQUESTS, whichever comes first. Prints one
 * JSON line {"ok":…,"statuses":{…},"ms":…,"latency":{p50,p99,max}} and exits.
 *
 * Env: URL, CONCURRENCY (32), DURATION_MS (5000), MAX_REQUESTS (100000), PREFIX.
 */

const base = new URL(process.env.URL ?? "http://127.0.0.1:8787");
const concurrency = Number(process.env.CONCURRENCY ?? 32);
const durationMs = Number(process.env.DURATION_MS ?? 5_000);
const maxRequests = Number(process.env.MAX_REQUESTS ?? 100_000);
const prefix = process.env.PREFIX ?? `reg-${process.pid}`;

const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
const statuses: Record<string, number> = {};
const latencies: number[] = [];
let issued = 0;
let ok = 0;
const started = performance.now();
const stopAt = started + durationMs;

function postOne(n: number): Promise<void> {
  const body = JSON.stringify({
    trace_id: `${prefix}-${n}`,
    open_id: "open-id-0123456789",
    product_key: "a1PrOdUcTkEy",
    user_type: "ilop",
    params: { ssProductKey: "a1SsPrOdUcT", authCode: `code-${n}` },
  });
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = request(
      {
        host: base.hostname,
        port: Number(base.port),
        path: "/v1/binds",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          const key = String(res.statusCode);
          statuses[key] = (statuses[key] ?? 0) + 1;
          if (res.statusCode === 201) ok += 1;
          latencies.push(performance.now() - t0);
          resolve();
        });
        res.on("error", () => resolve());
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) => {
      const key = err.code ?? "error";
      statuses[key] = (statuses[key] ?? 0) + 1;
      resolve();
    });
    req.end(body);
  });
}

async function worker(): Promise<void> {
  while (performance.now() < stopAt && issued < maxRequests) {
    issued += 1;
    await postOne(issued);
  }
}

setTimeout(() => process.exit(4), durationMs + 30_000).unref();
await Promise.all(Array.from({ length: concurrency }, () => worker()));
const ms = performance.now() - started;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil(q * latencies.length) - 1))] ?? 0;
process.stdout.write(
  `${JSON.stringify({ ok, issued, statuses, ms, latency: { p50: at(0.5), p99: at(0.99), max: at(1) } })}\n`,
);
agent.destroy();
process.exit(0);
