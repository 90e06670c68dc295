import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type NchanAvailability, type RunningNchan, startNchan } from "../nchan.js";
import type { Cleanup } from "./cleanup.js";
import { ClientPool, type PoolReady } from "./clients.js";
import type { Gateway } from "./gateway.js";
import type { BenchOptions } from "./options.js";
import { CLIENT, ENTRY, RAW_SERVER } from "./paths.js";
import { type RedisProcess, type ServerProcess, startNodeProcess, startRedis } from "./spawn.js";

/*
 * What every scenario is given: the options, the gateway double, whether Nchan is there,
 * and ways to start the servers and client pools it loads, each stopped at the end of
 * the run even when the scenario fails before stopping it itself.
 */

export const POLL_INTERVAL_MS = 2_000;
/** bindwatch's default (SPEC §5); the raw server and Nchan get the same. */
export const HEARTBEAT_MS = 15_000;
/** Connects in flight per client process: 4 × 100 stays under node's listen backlog of 511. */
const CONNECT_CONCURRENCY = 100;
const CLIENT_LIFETIME_MS = 240_000;

export interface Bench {
  readonly options: BenchOptions;
  readonly gateway: Gateway;
  /** null when the Nchan baseline was not asked for (--no-nchan) or no scenario needs it. */
  readonly nchan: NchanAvailability | null;
  /** Where --profile writes CPU profiles and heap snapshots. */
  readonly profileDir: string;
  /** A line for the report's notes (a skipped baseline, say); a repeated line is kept once. */
  note(text: string): void;
  readonly notes: readonly string[];
  /** A name no other measurement of this bench process uses (trace ids, channels): `prefix-<pid>-<n>`. */
  uniqueName(prefix: string): string;
  /** One bindwatch instance (the built entry) polling the gateway double; `env` adds or overrides variables. */
  startBindwatch(env: Record<string, string>): Promise<ServerProcess>;
  /** The raw node:http SSE server (bench/raw-sse-server.ts). */
  startRaw(): Promise<ServerProcess>;
  startRedis(): Promise<RedisProcess>;
  /** nginx with Nchan; only when `nchan.ok`. */
  startNchan(nchan: Extract<NchanAvailability, { ok: true }>): Promise<RunningNchan>;
  /** Client processes holding one stream per target, resolved once every stream shows `readyMarker` or failed. */
  openPool(
    targets: readonly string[],
    marker: string,
    readyMarker: string | undefined,
  ): Promise<{ pool: ClientPool; ready: PoolReady }>;
}

export function createBench(deps: {
  readonly options: BenchOptions;
  readonly gateway: Gateway;
  readonly nchan: NchanAvailability | null;
  readonly cleanup: Cleanup;
}): Bench {
  const { options, gateway, cleanup } = deps;
  const profileDir = join(tmpdir(), `bindwatch-bench-profile-${process.pid}`);
  const notes: string[] = [];
  let names = 0;
  return {
    options,
    gateway,
    nchan: deps.nchan,
    profileDir,
    notes,
    uniqueName(prefix) {
      names += 1;
      return `${prefix}-${process.pid}-${names}`;
    },
    note(text) {
      if (!notes.includes(text)) notes.push(text);
    },

    async startBindwatch(env) {
      if (options.profile) mkdirSync(profileDir, { recursive: true });
      const server = await startNodeProcess({
        script: ENTRY,
        env: {
          PORT: "0",
          HOST: "127.0.0.1",
          TOP_APP_KEY: gateway.appKey,
          TOP_APP_SECRET: gateway.appSecret,
          TOP_GATEWAY_URL: gateway.url,
          POLL_INTERVAL_MS: String(POLL_INTERVAL_MS),
          LOG_LEVEL: "info", // the default: a registration writes one JSON line, a stream none
          ...env,
        },
        listeningMsg: "bindwatch listening",
        nodeArgs: options.profile
          ? [
              "--cpu-prof",
              `--cpu-prof-dir=${profileDir}`,
              "--heapsnapshot-signal=SIGUSR2",
              `--diagnostic-dir=${profileDir}`,
            ]
          : [],
      });
      cleanup.defer(() => server.stop(3_000));
      return server;
    },

    async startRaw() {
      const server = await startNodeProcess({
        script: RAW_SERVER,
        env: { PORT: "0", HOST: "127.0.0.1", HEARTBEAT_MS: String(HEARTBEAT_MS), RETRY_MS: String(POLL_INTERVAL_MS) },
        listeningMsg: "raw sse listening",
      });
      cleanup.defer(() => server.stop(3_000));
      return server;
    },

    async startRedis() {
      const redis = await startRedis();
      cleanup.defer(() => redis.stop());
      return redis;
    },

    async startNchan(nchan) {
      const server = await startNchan({
        nginx: nchan.nginx,
        module: nchan.module,
        heartbeatSeconds: HEARTBEAT_MS / 1000,
      });
      cleanup.defer(() => server.stop());
      return server;
    },

    async openPool(targets, marker, readyMarker) {
      const opened = await ClientPool.open({
        script: CLIENT,
        targets,
        processes: options.sizes.clients,
        marker,
        ...(readyMarker === undefined ? {} : { readyMarker }),
        concurrency: CONNECT_CONCURRENCY,
        timeoutMs: 120_000,
        lifetimeMs: CLIENT_LIFETIME_MS,
      });
      cleanup.defer(() => opened.pool.close());
      return opened;
    },
  };
}

/** Registers `traceIds` with bindwatch at `baseUrl`, 20 at a time; each registration starts its poll. */
export async function registerBinds(baseUrl: string, traceIds: readonly string[]): Promise<void> {
  for (let i = 0; i < traceIds.length; i += 20) {
    await Promise.all(
      traceIds.slice(i, i + 20).map(async (id) => {
        const res = await fetch(`${baseUrl}/v1/binds`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            trace_id: id,
            open_id: "open-id-0123456789",
            product_key: "a1PrOdUcTkEy",
            user_type: "ilop",
            params: { ssProductKey: "a1SsPrOdUcT", authCode: "c0de" },
          }),
        });
        await res.text();
        if (res.status !== 201 && res.status !== 200) throw new Error(`POST /v1/binds ${id}: ${res.status}`);
      }),
    );
  }
}
