import type { BindRegistration } from "../src/domain/bind.js";
import { createTopClient } from "../src/top/client.js";

/*
 * The single-flight baseline: the naive design, in which every watcher causes its own
 * checkbind poll every interval (a browser polling through a thin proxy, or a server
 * that starts one poll loop per stream). W loops over T traces, each calling the same
 * TOP gateway double with bindwatch's own signed client, once per interval from a
 * random phase, for DURATION_MS; then it prints {"calls":…,"outcomes":{…}} and exits.
 *
 * Env: GATEWAY_URL, APP_KEY, APP_SECRET, WATCHERS, TRACES, TRACE_PREFIX,
 * POLL_INTERVAL_MS (2000), DURATION_MS.
 */

function need(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`naive-poller: ${name} is required`);
  return value;
}

const gatewayUrl = need("GATEWAY_URL");
const watchers = Number(need("WATCHERS"));
const traces = Number(need("TRACES"));
const prefix = need("TRACE_PREFIX");
const intervalMs = Number(process.env.POLL_INTERVAL_MS ?? 2_000);
const durationMs = Number(need("DURATION_MS"));

const client = createTopClient({
  gatewayUrl,
  appKey: need("APP_KEY"),
  appSecret: need("APP_SECRET"),
  signMethod: "hmac-sha256",
  timeoutMs: 5_000,
  terminalRetCodes: new Set(),
});

const registrations: BindRegistration[] = Array.from({ length: traces }, (_, i) => ({
  trace_id: `${prefix}-${i}`,
  open_id: "open-id-0123456789",
  product_key: "a1PrOdUcTkEy",
  user_type: "ilop",
}));

const stopAt = Date.now() + durationMs;
const outcomes: Record<string, number> = {};
let calls = 0;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

async function watcherLoop(index: number): Promise<void> {
  const reg = registrations[index % traces];
  if (!reg) return;
  await sleep(Math.random() * intervalMs);
  while (Date.now() < stopAt) {
    const started = Date.now();
    const outcome = await client.checkbind(reg);
    calls += 1;
    outcomes[outcome.kind] = (outcomes[outcome.kind] ?? 0) + 1;
    await sleep(intervalMs - (Date.now() - started));
  }
}

// A hard stop in case the gateway hangs: the loops are bounded by stopAt, the process by this.
setTimeout(() => process.exit(4), durationMs + 15_000).unref();

await Promise.all(Array.from({ length: watchers }, (_, i) => watcherLoop(i)));
process.stdout.write(`${JSON.stringify({ calls, outcomes })}\n`);
process.exit(0);
