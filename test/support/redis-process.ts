import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Redis } from "ioredis";
import { DEATH_SIGNAL_PREFIX, trackChild, trackDir, untrackDir } from "./children.js";
import { findFreePort } from "./ports.js";

/*
 * One `redis-server` process — a data node, a cluster node or a sentinel — on a loopback
 * port, in a temporary directory of its own. The topologies (standalone, Cluster,
 * Sentinel) are built from these.
 */

export const HOST = "127.0.0.1";
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

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

/**
 * Runs `commands` in order on one short-lived connection to the node on `port` and
 * resolves to their replies; null when the node cannot be reached or a command fails.
 * For the harness's own checks (`CLUSTER NODES`, `SENTINEL MASTER`, `ROLE`), which must
 * never wait on a node that is down.
 */
export async function queryNode(
  port: number,
  commands: readonly (readonly string[])[],
  opts: { readonly password?: string | undefined; readonly timeoutMs?: number } = {},
): Promise<unknown[] | null> {
  const timeoutMs = opts.timeoutMs ?? 1_000;
  const client = new Redis({
    host: HOST,
    port,
    ...(opts.password === undefined ? {} : { password: opts.password }),
    lazyConnect: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    const replies: unknown[] = [];
    for (const [name, ...args] of commands) replies.push(await client.call(name ?? "PING", ...args));
    return replies;
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

/** The `key:value` lines of an `INFO` or `CLUSTER INFO` reply. */
export function parseInfo(text: unknown): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of String(text).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return fields;
}

/**
 * The standard arguments of a data node: this port and directory, loopback only, no
 * persistence, logs to stdout, and a replica's first sync at once (Redis 7 waits 5 s by
 * default for more replicas to share a diskless transfer).
 */
export function dataNodeArgs(port: number, dir: string, extra: readonly string[] = []): string[] {
  return [
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
    "--repl-diskless-sync-delay",
    "0",
    // Fault tests stall a replica with DEBUG SLEEP (from loopback only), so it misses the last writes.
    "--enable-debug-command",
    "local",
    ...extra,
  ];
}

interface Spawned {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

function spawnServer(argv: readonly string[]): Spawned {
  const [command = "redis-server", ...args] = [...DEATH_SIGNAL_PREFIX, "redis-server", ...argv];
  const child = trackChild(spawn(command, args, { stdio: ["ignore", "ignore", "pipe"] }));
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", () => resolve());
  });
  child.stderr?.resume();
  return { child, exited };
}

function hasExited(spawned: Spawned): boolean {
  return spawned.child.exitCode !== null || spawned.child.signalCode !== null;
}

/** Answers PING — with PONG, or asking for a password (then it is up too). */
async function answers(port: number): Promise<boolean> {
  try {
    const reply = await rawCommand(port, ["PING"], 500);
    return reply.startsWith("+PONG") || reply.startsWith("-NOAUTH");
  } catch {
    return false;
  }
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
    if (await answers(port)) return !dead;
    await delay(20);
  }
  spawned.child.kill("SIGKILL");
  await spawned.exited;
  throw new Error(`redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms`);
}

async function stopSpawned(spawned: Spawned | null): Promise<void> {
  if (!spawned || hasExited(spawned)) return;
  spawned.child.kill("SIGTERM");
  const timer = setTimeout(() => spawned.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await spawned.exited;
  clearTimeout(timer);
}

/** One `redis-server` process on a fixed port and directory, which can die and start again. */
export interface RedisProcess {
  readonly port: number;
  /** Its directory: kept across `kill`/`stop` and `start` (a cluster node's nodes.conf lives there). */
  readonly dir: string;
  /** Whether the process runs now. */
  readonly isRunning: boolean;
  /** Sends a signal that ends the process (SIGKILL: a crash) and resolves once it exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts it again with the same arguments and directory (made again if removed),
   * `extraArgs` appended; resolves once it answers PING.
   */
  start(extraArgs?: readonly string[]): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s; keeps the directory. */
  stop(): Promise<void>;
  /** Stops it and removes its directory. */
  remove(): Promise<void>;
}

export interface LaunchRedisOptions {
  /**
   * The `redis-server` argv for this port and directory (a config file may be written
   * there first); asked again for each port tried.
   */
  readonly argv: (port: number, dir: string) => readonly string[] | Promise<readonly string[]>;
  /** Use this port instead of a free one. */
  readonly port?: number;
  /** Also keep `port + busOffset` free (a cluster node's bus port is port + 10000). */
  readonly busOffset?: number;
}

/**
 * Starts `redis-server` on a free loopback port in a fresh temporary directory and
 * resolves once it answers PING. A free port may be taken before redis-server binds it:
 * then it tries another.
 * @example const node = await launchRedis({ argv: (port, dir) => dataNodeArgs(port, dir) });
 */
export async function launchRedis(opts: LaunchRedisOptions): Promise<RedisProcess> {
  for (let attempt = 0; ; attempt += 1) {
    const port = opts.port ?? (await findFreePort(opts.busOffset));
    const dir = await mkdtemp(join(tmpdir(), "bindwatch-redis-"));
    trackDir(dir);
    const argv = await opts.argv(port, dir);
    const first = spawnServer(argv);
    if (await waitUntilUp(port, first)) return trackProcess(port, dir, argv, first);
    await rm(dir, { recursive: true, force: true });
    untrackDir(dir);
    if (opts.port !== undefined || attempt >= 4) throw new Error(`redis-server could not start on port ${port}`);
  }
}

function trackProcess(port: number, dir: string, argv: readonly string[], first: Spawned): RedisProcess {
  let current: Spawned | null = first;
  const stop = async () => {
    await stopSpawned(current);
    current = null;
  };
  return {
    port,
    dir,
    get isRunning() {
      return current !== null && !hasExited(current);
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const target = current;
      if (!target || hasExited(target)) return;
      target.child.kill(signal);
      const timer = setTimeout(() => target.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await target.exited;
      clearTimeout(timer);
    },
    async start(extraArgs: readonly string[] = []) {
      await stop();
      await mkdir(dir, { recursive: true });
      trackDir(dir);
      const deadline = Date.now() + START_TIMEOUT_MS;
      // The old process's socket may linger a moment: retry until the new one holds the port.
      for (;;) {
        const next = spawnServer([...argv, ...extraArgs]);
        current = next;
        if (await waitUntilUp(port, next)) return;
        if (Date.now() > deadline) throw new Error(`redis-server could not start again on port ${port}`);
        await delay(100);
      }
    },
    stop,
    async remove() {
      await stop();
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    },
  };
}
