import { type DestinationStream, type Logger as PinoLogger, pino, destination as pinoDestination } from "pino";
import pretty from "pino-pretty";
import { censorSecrets } from "../domain/log-censor.js";

export { maskOpenId } from "../domain/log-censor.js";

export interface LoggerOptions {
  /** Where the lines go; stdout by default. */
  readonly destination?: DestinationStream;
  /** Lines for a person (pino-pretty) instead of JSON: for a terminal, as `npm start` by hand. */
  readonly pretty?: boolean;
}

/**
 * Structured JSON logs (or pino-pretty's lines for a terminal). Secrets never reach a
 * line: known secret-bearing keys are censored wherever they appear (src/domain/log-censor.ts), and
 * open_id is masked.
 * @example const logger = createLogger("info", { pretty: process.stdout.isTTY === true });
 */
export function createLogger(level: string, opts: LoggerOptions = {}): PinoLogger {
  const options = {
    level,
    base: { service: "bindwatch" },
    formatters: {
      log: (obj: Record<string, unknown>) => censorSecrets(obj) as Record<string, unknown>,
    },
  };
  if (opts.destination) return pino(options, opts.destination);
  if (opts.pretty) {
    return pino(
      options,
      pretty({ sync: true, colorize: true, ignore: "pid,hostname,service", translateTime: "SYS:HH:MM:ss.l" }),
    );
  }
  return pino(options, bufferedDestination(1));
}

/** How long a logged line may wait in the buffer before it is written. */
export const LOG_FLUSH_MS = 100;

/**
 * JSON lines go out in writes of up to 4 KiB, at the latest `flushMs` after they are
 * logged: one write(2) per line, synchronous, was a tenth of a registration's CPU under
 * load (`npm run bench -- --only register --profile`). pino flushes the buffer
 * synchronously on process exit (lib/tools.js, buildSafeSonicBoom), so the lines before
 * process.exit are kept; a kill -9 may lose the last `flushMs`.
 *
 * The flush is armed by the line that finds none due, rather than by sonic-boom's
 * `periodicFlush`: that one's flush (index.js) writes even an empty buffer, a zero-length
 * fs.write through libuv's thread pool every period, which was 2.3 ms of CPU a second
 * of an idle instance at 100 ms. A flush does nothing while a write is out, and a write
 * leaves up to `minLength` buffered when it ends, so each flush flushes once more on
 * the next `drain` (the end of the write it started or found).
 */
export function bufferedDestination(fd: number, flushMs = LOG_FLUSH_MS): ReturnType<typeof pinoDestination> {
  const stream = pinoDestination({ dest: fd, sync: false, minLength: 4096 });
  let due: ReturnType<typeof setTimeout> | undefined;
  // One follow-up at a time: while a write is stuck (a full pipe), flushes come due every
  // `flushMs` and each would otherwise leave a listener behind until the drain.
  let followUp = false;
  const flush = (): void => {
    try {
      stream.flush();
    } catch {
      return; // The stream has ended (the process is exiting): pino flushed it synchronously.
    }
  };
  const onDue = (): void => {
    due = undefined;
    flush();
    if (followUp) return;
    followUp = true;
    stream.once("drain", () => {
      followUp = false;
      if (due === undefined) flush();
    });
  };
  const write = stream.write.bind(stream);
  stream.write = (line: string): boolean => {
    const queued = write(line);
    due ??= setTimeout(onDue, flushMs).unref();
    return queued;
  };
  return stream;
}
