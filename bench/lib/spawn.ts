import { type ChildProcess, fork, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Every child the bench started, so an interrupted run leaves nothing behind. */
const children = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** SIGKILLs every child still running (by its own pid; only processes this run started). */
export function killAllChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

export async function waitFor<T>(
  condition: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs: number,
  what: string,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once `exited` does. A child already gone is left alone. */
export async function terminate(child: ChildProcess, exited: Promise<void>, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly url: string;
  /** stderr and stdout lines that were not JSON log lines, for diagnosis. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves on exit. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Spawns a Node server script and resolves once it logs a JSON line whose `msg`
 * matches and that carries `url` (bindwatch: "bindwatch listening").
 */
export async function startNodeProcess(opts: {
  readonly script: string;
  readonly env: Record<string, string>;
  readonly listeningMsg: string;
  readonly nodeArgs?: readonly string[];
  readonly timeoutMs?: number;
}): Promise<ServerProcess> {
  const child = track(
    spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.script], {
      env: { PATH: process.env.PATH ?? "", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let url: string | null = null;
  let partial = "";
  let text = "";
  const keep = (line: string) => {
    if (text.length < 20_000) text += `${line}\n`;
  };
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    partial += chunk;
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (url === null && line.includes(opts.listeningMsg)) {
        try {
          const parsed = JSON.parse(line) as { msg?: string; url?: string };
          if (parsed.msg === opts.listeningMsg && typeof parsed.url === "string") url = parsed.url;
        } catch {
          // not JSON
        }
      }
      if (line.includes('"level":40') || line.includes('"level":50') || !line.startsWith("{")) keep(line);
    }
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => keep(chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const resolved = await waitFor(
    () => {
      if (child.exitCode !== null)
        throw new Error(`${opts.script} exited (${child.exitCode}) before listening:\n${text}`);
      return url;
    },
    opts.timeoutMs ?? 20_000,
    `${opts.script} to listen`,
  );
  return {
    child,
    pid: child.pid ?? 0,
    url: resolved,
    output: () => text,
    async stop(graceMs = 10_000) {
      await terminate(child, exited, graceMs);
    },
  };
}

/** Forks a bench helper with IPC (the SSE clients). */
export function forkHelper(script: string, env: Record<string, string> = {}): ChildProcess {
  return track(
    fork(script, [], {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    }),
  );
}

/** Runs a helper script to completion and returns the last JSON line of its stdout. */
export function runHelper<T>(script: string, env: Record<string, string>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = track(
      spawn(process.execPath, [script], {
        env: { PATH: process.env.PATH ?? "", ...env },
        stdio: ["ignore", "pipe", "inherit"],
      }),
    );
    let out = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      out += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").at(-1) ?? "";
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`${script} exited ${code} without a result: ${out.slice(-500)}`));
      }
    });
  });
}

export interface RedisProcess {
  readonly url: string;
  readonly pid: number;
  stop(): Promise<void>;
}

function pingRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.once("data", (chunk) => done(chunk.toString().startsWith("+PONG")));
    socket.write("*1\r\n$4\r\nPING\r\n");
  });
}

/** A throwaway redis-server: free port, empty temporary dir, no persistence. */
export async function startRedis(): Promise<RedisProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "bindwatch-bench-redis-"));
  const child = track(
    spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"],
      { stdio: ["ignore", "ignore", "inherit"] },
    ),
  );
  child.once("error", () => {});
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error("redis-server exited at start");
      return pingRedis(port);
    },
    10_000,
    "redis-server to answer PING",
  );
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid ?? 0,
    async stop() {
      await terminate(child, exited);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
