import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { childPids } from "./lib/proc.js";
import { freePort, terminate, waitFor } from "./lib/spawn.js";

/*
 * The Nchan baseline: Debian's nginx-light with libnginx-mod-nchan, one worker, a
 * publisher location and an `eventsource` subscriber location on one channel, with
 * the same heartbeat framing as bindwatch (`: ping` every HEARTBEAT seconds).
 * nginx runs in the foreground as a child of the bench (`daemon off`) on a free
 * loopback port, with every path under a temporary prefix, and is stopped at the end.
 */

const PACKAGES = ["nginx-light", "libnginx-mod-nchan"];
const MODULE_CANDIDATES = [
  "/usr/lib/nginx/modules/ngx_nchan_module.so",
  "/usr/share/nginx/modules/ngx_nchan_module.so",
];
const NGINX_CANDIDATES = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"];

export type NchanAvailability =
  | {
      readonly ok: true;
      readonly nginx: string;
      readonly module: string;
      readonly version: string;
      readonly installed: boolean;
    }
  | { readonly ok: false; readonly reason: string };

function locate(): { nginx: string; module: string } | null {
  const nginx = NGINX_CANDIDATES.find((p) => existsSync(p));
  const module = MODULE_CANDIDATES.find((p) => existsSync(p));
  return nginx && module ? { nginx, module } : null;
}

function packageVersion(name: string): string {
  // `dpkg-query -W <name>` prints "<name>\t<version>".
  const out = spawnSync("dpkg-query", ["-W", name], { encoding: "utf8" });
  return out.status === 0 ? (out.stdout.trim().split("\t")[1] ?? "?") : "?";
}

/**
 * Finds nginx and the Nchan module; when missing and allowed, installs them the way
 * the README says (`apt-get install -y nginx-light libnginx-mod-nchan`, after one
 * `apt-get update` if the first try fails). Never throws: says why it is unavailable.
 */
export function ensureNchan(opts: { install: boolean; log: (line: string) => void }): NchanAvailability {
  let found = locate();
  let installed = false;
  if (!found && opts.install) {
    const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
    const hasApt = spawnSync("sh", ["-c", "command -v apt-get"], { encoding: "utf8" }).status === 0;
    if (!hasApt) return { ok: false, reason: "nginx/Nchan missing and apt-get is not available" };
    if (!isRoot)
      return { ok: false, reason: `nginx/Nchan missing; install with: sudo apt-get install -y ${PACKAGES.join(" ")}` };
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const install = () =>
      spawnSync("apt-get", ["install", "-y", "--no-install-recommends", ...PACKAGES], {
        env,
        encoding: "utf8",
        timeout: 300_000,
      });
    opts.log(`nginx/Nchan missing: apt-get install -y ${PACKAGES.join(" ")}`);
    let result = install();
    if (result.status !== 0) {
      opts.log("apt-get install failed; running apt-get update once and retrying");
      spawnSync("apt-get", ["update"], { env, encoding: "utf8", timeout: 300_000 });
      result = install();
    }
    if (result.status !== 0) {
      return {
        ok: false,
        reason: `apt-get install ${PACKAGES.join(" ")} failed: ${(result.stderr ?? "").trim().split("\n").at(-1) ?? ""}`,
      };
    }
    installed = true;
    found = locate();
  }
  if (!found) {
    return {
      ok: false,
      reason: `nginx/Nchan not found (looked for ${NGINX_CANDIDATES[0]} and ${MODULE_CANDIDATES[0]}); install: apt-get install -y ${PACKAGES.join(" ")}`,
    };
  }
  const version = `nginx ${packageVersion("nginx-light")}, nchan ${packageVersion("libnginx-mod-nchan")}`;
  return { ok: true, ...found, version, installed };
}

export interface RunningNchan {
  readonly url: string;
  readonly subscribeUrl: string;
  readonly masterPid: number;
  /** The one worker process: it holds every subscriber. */
  readonly workerPid: number;
  /** Subscribers on the channel, as Nchan counts them. */
  subscribers(): Promise<number>;
  /** Publishes `body` to the channel; resolves once Nchan answered. */
  publish(body: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startNchan(opts: {
  readonly nginx: string;
  readonly module: string;
  readonly heartbeatSeconds: number;
}): Promise<RunningNchan> {
  const dir = mkdtempSync(join(tmpdir(), "bindwatch-bench-nchan-"));
  // The worker runs as an unprivileged user when nginx starts as root: it must reach the prefix.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `load_module ${opts.module};
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  nchan_shared_memory_size 64M;
  server {
    listen 127.0.0.1:${port};
    location = /pub {
      nchan_publisher;
      nchan_channel_id bench;
      nchan_message_buffer_length 10;
    }
    location = /sub {
      nchan_subscriber eventsource;
      nchan_channel_id bench;
      nchan_eventsource_ping_interval ${Math.max(1, Math.round(opts.heartbeatSeconds))};
      nchan_eventsource_ping_comment " ping";
      nchan_eventsource_ping_event "";
    }
  }
}
`,
  );
  const child: ChildProcess = spawn(opts.nginx, ["-p", dir, "-c", conf, "-e", join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const info = async (): Promise<{ subscribers: number } | null> => {
    const res = await fetch(`${url}/pub`, { headers: { accept: "text/json" } });
    if (res.status === 404) {
      await res.body?.cancel();
      return { subscribers: 0 };
    }
    return (await res.json()) as { subscribers: number };
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
        return (await info().catch(() => null)) !== null;
      },
      10_000,
      "nginx to answer",
    );
  } catch (err) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const pid = child.pid ?? 0;
  const workerPid = await waitFor(() => childPids(pid)[0] ?? null, 5_000, "the nginx worker");
  return {
    url,
    subscribeUrl: `${url}/sub`,
    masterPid: pid,
    workerPid,
    async subscribers() {
      return (await info())?.subscribers ?? 0;
    },
    async publish(body) {
      const res = await fetch(`${url}/pub`, { method: "POST", headers: { accept: "text/json" }, body });
      await res.text();
      if (!res.ok) throw new Error(`nchan publish answered ${res.status}`);
    },
    async stop() {
      // TERM: nginx's fast shutdown; subscribers are already gone by now.
      await terminate(child, exited);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
