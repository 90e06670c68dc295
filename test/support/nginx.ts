import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { ROOT } from "./build.js";
import { DEATH_SIGNAL_PREFIX, trackChild, trackDir } from "./children.js";
import { findFreePort } from "./ports.js";

/*
 * Debian's nginx (`nginx-light`, which has http_v2 and ssl) in front of bindwatch
 * instances, running the recipe the README recommends — deploy/nginx.conf as shipped —
 * with only its ADAPT lines rewritten for the test's ports and certificate.
 */

const execFileAsync = promisify(execFile);

/** The nginx binary; `NGINX_PATH` overrides Debian's location. */
export const NGINX_PATH = process.env.NGINX_PATH ?? "/usr/sbin/nginx";
/** The recipe of the README. */
export const RECIPE = join(ROOT, "deploy/nginx.conf");

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

export interface Certificate {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A throwaway self-signed certificate for 127.0.0.1 in `dir` (openssl). */
export async function makeSelfSignedCertificate(dir: string): Promise<Certificate> {
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  await execFileAsync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    { timeout: 30_000 },
  );
  return { certFile, keyFile };
}

/**
 * The recipe with its ADAPT lines for this test: the upstream servers, the two listen
 * ports on loopback and the certificate. Every line to rewrite must be there as shipped.
 */
export function renderRecipe(
  recipe: string,
  opts: { upstreams: readonly string[]; httpPort: number; tlsPort: number; certificate: Certificate },
): string {
  const replacements: [string, string][] = [
    ["    server 127.0.0.1:8787;\n", opts.upstreams.map((u) => `    server ${u};\n`).join("")],
    ["    listen 80;\n", `    listen 127.0.0.1:${opts.httpPort};\n`],
    ["    listen 443 ssl http2;\n", `    listen 127.0.0.1:${opts.tlsPort} ssl http2;\n`],
    ["/etc/ssl/certs/bindwatch.crt", opts.certificate.certFile],
    ["/etc/ssl/private/bindwatch.key", opts.certificate.keyFile],
  ];
  let text = recipe;
  for (const [from, to] of replacements) {
    if (!text.includes(from)) throw new Error(`deploy/nginx.conf no longer contains ${JSON.stringify(from)}`);
    text = text.replace(from, to);
  }
  return text;
}

export interface Nginx {
  /** Plain HTTP/1.1. */
  readonly httpUrl: string;
  /** HTTPS with HTTP/2 (self-signed). */
  readonly httpsUrl: string;
  readonly httpPort: number;
  readonly tlsPort: number;
  /** The lines of the error log so far. */
  errorLog(): Promise<string[]>;
  /** The lines of the access log so far (nginx's `combined` format: the request line shows the protocol). */
  accessLog(): Promise<string[]>;
  stop(): Promise<void>;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Starts nginx with the README's recipe in front of `upstreams` (host:port each), in a
 * fresh directory of its own (config, logs, temp files), on two free loopback ports.
 * @example const nginx = await startNginx({ upstreams: ["127.0.0.1:41234"] }); … await nginx.stop();
 */
export async function startNginx(opts: { upstreams: readonly string[] }): Promise<Nginx> {
  if (!existsSync(NGINX_PATH)) {
    throw new Error(`no nginx at ${NGINX_PATH}: apt-get install nginx-light, or set NGINX_PATH`);
  }
  const dir = trackDir(await mkdtemp(join(tmpdir(), "bindwatch-nginx-")));
  const certificate = await makeSelfSignedCertificate(dir);
  const recipe = await readFile(RECIPE, "utf8");
  const errorLogFile = join(dir, "error.log");
  for (let attempt = 0; ; attempt += 1) {
    const [httpPort, tlsPort] = [await findFreePort(), await findFreePort()];
    const site = renderRecipe(recipe, { upstreams: opts.upstreams, httpPort, tlsPort, certificate });
    await writeFile(join(dir, "bindwatch.conf"), site);
    for (const sub of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
      await mkdir(join(dir, sub), { recursive: true });
    // Workers run as www-data when the master is root; the temp directories are root's own.
    const user = process.getuid?.() === 0 ? "user root;\n" : "";
    await writeFile(
      join(dir, "nginx.conf"),
      `${user}daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${errorLogFile} warn;
events { worker_connections 4096; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/bindwatch.conf;
}
`,
    );
    const [command = NGINX_PATH, ...args] = [
      ...DEATH_SIGNAL_PREFIX,
      NGINX_PATH,
      ...["-p", dir, "-c", join(dir, "nginx.conf"), "-e", errorLogFile],
    ];
    const child = trackChild(spawn(command, args, { stdio: ["ignore", "ignore", "pipe"] }));
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    let dead = false;
    void exited.then(() => {
      dead = true;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!dead && Date.now() < deadline && !((await accepts(httpPort)) && (await accepts(tlsPort)))) {
      await delay(20);
    }
    if (dead) {
      const log = await readFile(errorLogFile, "utf8").catch(() => "");
      if (attempt < 4 && /Address already in use/.test(log + stderr)) continue;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start:\n${stderr}\n${log}`);
    }
    if (Date.now() >= deadline) {
      child.kill("SIGKILL");
      throw new Error(`nginx did not listen on ${httpPort} and ${tlsPort} within ${START_TIMEOUT_MS} ms`);
    }
    let stopping: Promise<void> | null = null;
    return {
      httpUrl: `http://127.0.0.1:${httpPort}`,
      httpsUrl: `https://127.0.0.1:${tlsPort}`,
      httpPort,
      tlsPort,
      errorLog: () => readLines(errorLogFile),
      accessLog: () => readLines(join(dir, "access.log")),
      stop() {
        stopping ??= (async () => {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(timer);
          await rm(dir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  }
}

async function readLines(file: string): Promise<string[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.split("\n").filter((line) => line !== "");
}

/** Error-log lines at `error` level or worse: what a cut or failed upstream connection leaves. */
export function errorLines(lines: readonly string[]): string[] {
  return lines.filter((line) => /\[(error|crit|alert|emerg)\]/.test(line));
}
