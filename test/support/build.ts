import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root. */
export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The process entry as `npm start` runs it. */
export const ENTRY = join(ROOT, "dist/src/runtime/node-main.js");
/** The built browser client, served at /v1/client.js. */
export const CLIENT = join(ROOT, "dist/src/client/index.js");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * Builds dist/ when the entry or the client is missing or older than src/ (`npm ci`
 * builds it through `prepare`). Call it from a `beforeAll` with a generous timeout.
 */
export function ensureBuilt(): void {
  const built = Math.min(...[ENTRY, CLIENT].map((f) => (existsSync(f) ? statSync(f).mtimeMs : 0)));
  if (built >= newestMtime(join(ROOT, "src"))) return;
  const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
  const run = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: ROOT, encoding: "utf8" });
  if (run.status !== 0 || !existsSync(ENTRY) || !existsSync(CLIENT)) {
    throw new Error(`could not build dist/:\n${run.stdout}${run.stderr}`);
  }
}
