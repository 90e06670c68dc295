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
/** What Node and the Worker serve besides their code (scripts/build-assets.ts): the client and the demo page. */
export const CLIENT_ASSET = join(ROOT, "dist/assets/client.js");
export const DEMO_PAGE_ASSET = join(ROOT, "dist/assets/demo.html");
/** The API reference page's script, served at /docs/scalar.js. */
export const REFERENCE_ASSET = join(ROOT, "dist/assets/scalar.js");

const BUILT = [ENTRY, CLIENT, CLIENT_ASSET, DEMO_PAGE_ASSET, REFERENCE_ASSET];

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** `npm run build`'s two steps, without npm; throws with their output when one fails. */
function build(): void {
  for (const args of [
    [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
    [join(ROOT, "dist/scripts/build-assets.js")],
  ]) {
    const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`could not build dist/:\n${run.stdout}${run.stderr}`);
  }
}

/**
 * Builds dist/ when the entry, the client or an asset is missing or older than src/ or
 * scripts/ (`npm ci` builds it through `prepare`). Call it from a `beforeAll` with a
 * generous timeout.
 */
export function ensureBuilt(): void {
  const built = Math.min(...BUILT.map((f) => (existsSync(f) ? statSync(f).mtimeMs : 0)));
  if (built >= Math.max(newestMtime(join(ROOT, "src")), newestMtime(join(ROOT, "scripts")))) return;
  build();
  if (!BUILT.every((f) => existsSync(f))) throw new Error(`the build did not write ${BUILT.join(", ")}`);
}
