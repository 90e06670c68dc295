import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";

/*
 * A headless Chromium for the browser suites: Debian's /usr/bin/chromium (CI installs it
 * with apt-get), driven by playwright-core, each launch with a profile of its own in a
 * fresh temporary directory that is removed when the browser closes.
 */

/** The Chromium binary; `CHROMIUM_PATH` overrides the Debian location. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

// No background traffic of its own (updates, sync, QUIC probes) on a shared CI machine.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

export interface ChromiumSession {
  /** The one browser context of this launch (its profile is the temporary directory). */
  readonly context: BrowserContext;
  /** Opens a new tab. */
  newPage(): Promise<Page>;
  /** Closes the browser and removes its profile directory; safe to call twice. */
  close(): Promise<void>;
}

/**
 * Launches headless Chromium with a fresh `--user-data-dir` (and `extraArgs`, e.g.
 * `--ignore-certificate-errors` for a self-signed test certificate).
 * @example const browser = await launchChromium(); const page = await browser.newPage(); … await browser.close();
 */
export async function launchChromium(opts: { readonly extraArgs?: readonly string[] } = {}): Promise<ChromiumSession> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`no Chromium at ${CHROMIUM_PATH}: apt-get install chromium, or set CHROMIUM_PATH`);
  }
  const userDataDir = await mkdtemp(join(tmpdir(), "bindwatch-chromium-"));
  let context: BrowserContext;
  try {
    // Playwright refuses a --user-data-dir argument: a persistent context is how it takes one.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_ARGS, ...(opts.extraArgs ?? [])],
      timeout: 30_000,
    });
  } catch (err) {
    await rm(userDataDir, { recursive: true, force: true });
    throw err;
  }
  // The tab a persistent context starts with is not needed.
  await Promise.all(context.pages().map((page) => page.close()));
  let closing: Promise<void> | null = null;
  return {
    context,
    newPage: () => context.newPage(),
    close() {
      closing ??= (async () => {
        try {
          await context.close();
        } finally {
          await rm(userDataDir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
        }
      })();
      return closing;
    },
  };
}
