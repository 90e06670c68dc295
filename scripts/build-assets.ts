// The second step of `npm run build`, after tsc: writes dist/assets/, the files the
// servers serve besides their own code. Node reads them from disk; the Worker through its
// ASSETS binding (wrangler.toml `[assets]`), so both serve the same bytes:
//   client.js   the browser client (tsc's dist/src/client/index.js), served at /v1/client.js
//   demo.html   the demo page of simulator mode, one document (src/sim/demo-page.ts)
//   scalar.js   the API reference page's script (@scalar/api-reference's standalone build,
//               a devDependency), served at /docs/scalar.js so /docs needs no network
// and copies the Redis coordinator's Lua scripts beside its compiled module
// (dist/src/watch/lua/), where it reads them at start-up.
import { copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { assembleDemoPage } from "../src/sim/demo-page.js";

/** This file runs as dist/scripts/build-assets.js. */
const ROOT = new URL("../../", import.meta.url);
const at = (path: string): URL => new URL(path, ROOT);
const read = (path: string): Promise<string> => readFile(at(path), "utf8");

/** No map is served beside the assets. */
function withoutSourceMap(script: string): string {
  return script.replace(/\n\/\/# sourceMappingURL=.*\s*$/, "\n");
}

async function main(): Promise<void> {
  const [client, html, css, script, reference] = await Promise.all([
    read("dist/src/client/index.js"),
    read("src/sim/demo/page.html"),
    read("src/sim/demo/page.css"),
    read("dist/src/sim/demo/page.js"),
    read("node_modules/@scalar/api-reference/dist/browser/standalone.js"),
  ]);
  await Promise.all([
    mkdir(at("dist/assets/"), { recursive: true }),
    mkdir(at("dist/src/watch/lua/"), { recursive: true }),
  ]);
  const scripts = (await readdir(at("src/watch/lua/"))).filter((name) => name.endsWith(".lua"));
  await Promise.all(scripts.map((name) => copyFile(at(`src/watch/lua/${name}`), at(`dist/src/watch/lua/${name}`))));
  await Promise.all([
    writeFile(at("dist/assets/client.js"), withoutSourceMap(client)),
    writeFile(at("dist/assets/demo.html"), assembleDemoPage({ html, css, script })),
    writeFile(at("dist/assets/scalar.js"), withoutSourceMap(reference)),
  ]);
}

main().catch((err: unknown) => {
  process.stderr.write(`build-assets: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
