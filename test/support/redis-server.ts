import { rm } from "node:fs/promises";
import { dataNodeArgs, HOST, launchRedis } from "./redis-process.js";

export { type RedisCluster, type RedisClusterNode, startRedisCluster } from "./redis-cluster.js";
export { rawCommand } from "./redis-process.js";

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its directory; `restart()` may follow. */
  stop(): Promise<void>;
  /** Sends a signal and does not wait (a crash, as seen by clients). */
  kill(signal?: NodeJS.Signals): void;
  /** Starts the server again on the same port, empty. */
  restart(): Promise<void>;
}

export interface StartRedisServerOptions {
  /** Extra `redis-server` arguments, e.g. `["--cluster-enabled", "yes"]`. */
  readonly args?: readonly string[];
  /** Use this port instead of a free one. */
  readonly port?: number;
}

/**
 * Starts a private `redis-server` on a free port with an empty temporary directory and no
 * persistence, and resolves once it answers PING.
 * @example const server = await startRedisServer(); …; await server.stop();
 */
export async function startRedisServer(opts: StartRedisServerOptions = {}): Promise<RedisServer> {
  const args = opts.args ?? [];
  const node = await launchRedis({
    argv: (port, dir) => dataNodeArgs(port, dir, args),
    ...(opts.port === undefined ? {} : { port: opts.port }),
    ...(args.includes("--cluster-enabled") ? { busOffset: 10_000 } : {}),
  });
  return {
    url: `redis://${HOST}:${node.port}`,
    port: node.port,
    stop: () => node.remove(),
    kill(signal: NodeJS.Signals = "SIGKILL") {
      void node.kill(signal);
    },
    async restart() {
      await node.stop();
      await rm(node.dir, { recursive: true, force: true });
      await node.start();
    },
  };
}

/**
 * The Redis the tests use: `REDIS_URL` when set (then `stop` does nothing), otherwise a
 * private server started here.
 */
export async function useRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const external = process.env.REDIS_URL;
  if (external) return { url: external, async stop() {} };
  const server = await startRedisServer();
  return { url: server.url, stop: () => server.stop() };
}
