import type { Context } from "hono";

/**
 * A request body read whole, as text, up to a limit: `null` once it passes `maxBytes`
 * (the rest is left unread). Rejects when the body breaks off (the client went away).
 */
export type BodyReader = (c: Context, maxBytes: number) => Promise<string | null>;

/** The body's length as declared by Content-Length, `null` when it is chunked or not declared. */
export function declaredLength(contentLength: string | undefined, transferEncoding: string | undefined): number | null {
  if (transferEncoding !== undefined || contentLength === undefined) return null;
  return Number.parseInt(contentLength, 10) || 0;
}

/**
 * The body read from the Web `Request` (any runtime): chunks counted as they come, as
 * hono/body-limit counts them. Decoded as `Request.text()` decodes (UTF-8, a BOM dropped).
 */
export const readWebBody: BodyReader = async (c, maxBytes) => {
  const body = c.req.raw.body;
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return decodeBody(chunks, size);
};

const decoder = new TextDecoder();

/** UTF-8 text of the chunks, as `Request.text()` gives it. */
export function decodeBody(chunks: readonly Uint8Array[], size: number): string {
  if (chunks.length === 1) return decoder.decode(chunks[0]);
  const whole = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return decoder.decode(whole);
}

/** The JSON value of `text`, `undefined` when it is not JSON (JSON.parse never yields undefined). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
