import { Writable } from "node:stream";

/**
 * A destination for `createLogger` that keeps what is written, one chunk (a JSON line) each.
 * @example const log = createLogSink(); const logger = createLogger("info", log.stream); … log.lines
 */
export function createLogSink(): { readonly stream: Writable; readonly lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { stream, lines };
}
