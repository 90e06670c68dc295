/*
 * The demo page of simulator mode (SPEC §6), served at `GET /`. Its sources are files of
 * their own kind in ./demo/: page.html, page.css and page.ts (compiled by tsc like the
 * rest). The build inlines the stylesheet and the compiled module into the HTML
 * (`assembleDemoPage`, run by scripts/build-assets.ts) and writes one document to
 * dist/assets/demo.html, which Node reads from disk and the Worker from its ASSETS
 * binding; each fills in the page's placeholders (`renderDemoPage`) when serving it.
 */

import type { SandboxCredentials } from "./sandbox.js";

export interface DemoPageSources {
  /** page.html: links page.css and page.js, which are inlined in their place. */
  readonly html: string;
  readonly css: string;
  /** page.js, as tsc emitted it. */
  readonly script: string;
}

/** The tags of page.html that the build replaces with the files' contents. */
const STYLESHEET_TAG = '<link rel="stylesheet" href="page.css">';
const SCRIPT_TAG = '<script type="module" src="page.js"></script>';

/**
 * Makes one self-contained document of the page's sources. tsc ends the module with
 * `export {}` (its imports are type-only) and a source map comment: neither belongs in
 * an inline script, which exports nothing and has no map beside it.
 * @example assembleDemoPage({ html, css, script }) // "<!doctype html>…<style>…</style>…<script type=\"module\">…"
 */
export function assembleDemoPage(sources: DemoPageSources): string {
  const script = sources.script
    .replace(/^\/\/# sourceMappingURL=.*$/m, "")
    .replace(/^export \{\};$/m, "")
    .trimEnd();
  if (/^\s*(import|export)\s/m.test(script)) throw new Error("page.js must have no static imports or exports");
  if (/<\/script/i.test(script)) throw new Error("page.js must not contain </script");
  if (/<\/style/i.test(sources.css)) throw new Error("page.css must not contain </style");
  return replaceOnce(
    replaceOnce(sources.html, STYLESHEET_TAG, `<style>\n${sources.css.trimEnd()}\n</style>`),
    SCRIPT_TAG,
    `<script type="module">\n${script}\n</script>`,
  );
}

function replaceOnce(text: string, tag: string, replacement: string): string {
  const parts = text.split(tag);
  if (parts.length !== 2) throw new Error(`page.html must contain ${tag} once`);
  // split and join rather than replace: a `$&` in the replacement stays as written.
  return parts.join(replacement);
}

export interface DemoPageOptions {
  readonly title?: string;
  /** Shown on the page with a ready command, for trying the sandbox from a shell. */
  readonly sandbox: SandboxCredentials;
}

const DEFAULT_TITLE = "bindwatch — simulator demo";

/**
 * Fills in the placeholders of the assembled page (dist/assets/demo.html), escaping
 * every value.
 * @example app.get("/", (c) => c.html(renderDemoPage(page, { title: "bindwatch demo", sandbox })));
 */
export function renderDemoPage(page: string, opts: DemoPageOptions): string {
  const values: Record<string, string> = {
    title: opts.title ?? DEFAULT_TITLE,
    sandbox_app_key: opts.sandbox.appKey,
    sandbox_app_secret: opts.sandbox.appSecret,
  };
  return page.replace(/\{\{(\w+)\}\}/g, (placeholder, name: string) => {
    const value = values[name];
    return value === undefined ? placeholder : escapeHtml(value);
  });
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}
