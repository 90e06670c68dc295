import { join } from "node:path";
import { fileURLToPath } from "node:url";

/* Where the built bench finds the things it starts: this file runs as dist/bench/lib/paths.js. */

const BENCH = fileURLToPath(new URL("..", import.meta.url));

/** The checkout (the folder holding dist/). */
export const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
/** bindwatch's built Node entry. */
export const ENTRY = join(ROOT, "dist/src/runtime/node-main.js");
export const CLIENT = join(BENCH, "client.js");
export const RAW_SERVER = join(BENCH, "raw-sse-server.js");
export const NAIVE = join(BENCH, "naive-poller.js");
export const POST_LOADER = join(BENCH, "post-loader.js");
/** Where the growth curves' charts and data go unless --charts says otherwise. */
export const DEFAULT_CHARTS_DIR = join(ROOT, "docs/charts");
