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
  // JSON lines go out in writes of up to 4 KiB, at the latest 100 ms after they are logged:
  // one write(2) per line, synchronous, was a tenth of a registration's CPU under load
  // (`npm run bench -- --only register --profile`). pino flushes the buffer synchronously
  // on process exit (lib/tools.js, buildSafeSonicBoom), so the lines before process.exit
  // are kept; a kill -9 may lose the last 100 ms.
  if (opts.destination) return pino(options, opts.destination);
  if (opts.pretty) {
    return pino(
      options,
      pretty({ sync: true, colorize: true, ignore: "pid,hostname,service", translateTime: "SYS:HH:MM:ss.l" }),
    );
  }
  return pino(options, pinoDestination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 100 }));
}
