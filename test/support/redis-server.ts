import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { findFreePort } from "./ports.js";

const execFileAsync = promisify(execFile);
const HOST = "127.0.0.1";
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

/** Every server this process started, killed on exit should a test forget to stop one. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

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

/** One RESP command over a raw socket; resolves to the raw reply text or rejects on error/timeout. */
export function rawCommand(port: number, args: readonly string[], timeoutMs = 1_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: HOST, port });
    let reply = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("timeout"));
    }, timeoutMs);
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8");
      if (isCompleteReply(reply)) {
        clearTimeout(timer);
        socket.end();
        resolve(reply);
      }
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  });
}

function isCompleteReply(reply: string): boolean {
  if (!reply.endsWith("\r\n")) return false;
  if (reply.startsWith("$")) {
    const header = reply.indexOf("\r\n");
    const length = Number(reply.slice(1, header));
    return length < 0 || Buffer.byteLength(reply) >= header + 2 + length + 2;
  }
  return true;
}

async function pingOk(port: number): Promise<boolean> {
  try {
    return (await rawCommand(port, ["PING"], 500)).startsWith("+PONG");
  } catch {
    return false;
  }
}

interface Spawned {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

function spawnServer(port: number, dir: string, args: readonly string[]): Spawned {
  const child = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      HOST,
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--logfile",
      "",
      "--loglevel",
      "warning",
      ...args,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  running.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      running.delete(child);
      resolve();
    });
    child.once("error", () => {
      running.delete(child);
      resolve();
    });
  });
  child.stderr?.resume();
  return { child, exited };
}

/** Waits until the server answers PING; false when the process died first (e.g. the port was taken). */
async function waitUntilUp(port: number, spawned: Spawned): Promise<boolean> {
  let dead = false;
  void spawned.exited.then(() => {
    dead = true;
  });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (dead) return false;
    if (await pingOk(port)) return !dead;
    await delay(20);
  }
  spawned.child.kill("SIGKILL");
  await spawned.exited;
  throw new Error(`redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms`);
}

async function stopSpawned(spawned: Spawned | null): Promise<void> {
  if (!spawned || spawned.child.exitCode !== null || spawned.child.signalCode !== null) return;
  spawned.child.kill("SIGTERM");
  const timer = setTimeout(() => spawned.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await spawned.exited;
  clearTimeout(timer);
}

/**
 * Starts a private `redis-server` on a free port with an empty temporary directory and no
 * persistence, and resolves once it answers PING.
 * @example const server = await startRedisServer(); …; await server.stop();
 */
export async function startRedisServer(opts: StartRedisServerOptions = {}): Promise<RedisServer> {
  const args = opts.args ?? [];
  const clusterBus = args.includes("--cluster-enabled");
  for (let attempt = 0; ; attempt += 1) {
    const port = opts.port ?? (await findFreePort(clusterBus ? 10_000 : undefined));
    const dir = await mkdtemp(join(tmpdir(), "bindwatch-redis-"));
    let current: Spawned | null = spawnServer(port, dir, args);
    if (!(await waitUntilUp(port, current))) {
      await rm(dir, { recursive: true, force: true });
      if (opts.port !== undefined || attempt >= 4) throw new Error(`redis-server could not start on port ${port}`);
      continue; // someone took the port in between: try another
    }
    return {
      url: `redis://${HOST}:${port}`,
      port,
      async stop() {
        await stopSpawned(current);
        current = null;
        await rm(dir, { recursive: true, force: true });
      },
      kill(signal: NodeJS.Signals = "SIGKILL") {
        current?.child.kill(signal);
      },
      async restart() {
        await stopSpawned(current);
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        const deadline = Date.now() + START_TIMEOUT_MS;
        // The old process's socket may linger a moment: retry until the new one holds the port.
        for (;;) {
          const next = spawnServer(port, dir, args);
          current = next;
          if (await waitUntilUp(port, next)) return;
          if (Date.now() > deadline) throw new Error(`redis-server could not restart on port ${port}`);
          await delay(100);
        }
      },
    };
  }
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

export interface RedisCluster {
  readonly nodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

/** Three masters, no replicas, all 16384 slots assigned; resolves once every node reports `cluster_state:ok`. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const servers: RedisServer[] = [];
  try {
    for (let i = 0; i < 3; i += 1) {
      servers.push(
        await startRedisServer({
          args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"],
        }),
      );
    }
    await execFileAsync(
      "redis-cli",
      ["--cluster", "create", ...servers.map((s) => `${HOST}:${s.port}`), "--cluster-replicas", "0", "--cluster-yes"],
      { timeout: 30_000 },
    );
    const deadline = Date.now() + 30_000;
    for (const server of servers) {
      for (;;) {
        const info = await rawCommand(server.port, ["CLUSTER", "INFO"]).catch(() => "");
        if (info.includes("cluster_state:ok") && info.includes("cluster_slots_ok:16384")) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${server.port} did not reach cluster_state:ok`);
        await delay(50);
      }
    }
  } catch (err) {
    await Promise.allSettled(servers.map((s) => s.stop()));
    throw err;
  }
  return {
    nodes: servers.map((s) => ({ host: HOST, port: s.port })),
    async stop() {
      await Promise.allSettled(servers.map((s) => s.stop()));
    },
  };
}
