// The process entry of `npm start`: reads the environment, starts the server,
// and turns SIGTERM/SIGINT into a graceful stop within 10 s (SPEC §4.6).
import { parseConfig } from "./config.js";
import { ConfigError } from "./config-env.js";
import { createLogger } from "./logger.js";
import { startNodeServer } from "./node-server.js";

const STOP_DEADLINE_MS = 10_000;

/** A configuration error ends the process with EX_CONFIG (78) and the variable's name; anything else is thrown on. */
function refuseOnConfigError(err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`bindwatch: bad configuration: ${err.message}\n`);
  process.exit(78);
}

async function main(): Promise<void> {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(process.env);
  } catch (err) {
    refuseOnConfigError(err);
  }
  // A person at a terminal (`npm start` by hand) reads lines; a process manager gets JSON.
  const logger = createLogger(config.logLevel, { pretty: process.stdout.isTTY === true });
  // The first line says which mode this is, so nobody mistakes a simulated device for a real one.
  logger.info(
    { mode: config.mode, production: config.production },
    config.simulator
      ? "bindwatch starting in simulator mode: checkbind is answered by the built-in TOP simulator, not by TOP"
      : `bindwatch starting in live mode: checkbind goes to ${config.top.gatewayUrl}`,
  );
  if (config.apiKeys.length === 0) logger.warn({}, "API_KEYS is unset: anyone can register and cancel binds");
  if (!config.watchTokenSecret)
    logger.warn({}, "WATCH_TOKEN_SECRET is unset: anyone who knows a trace_id can watch it");

  process.on("unhandledRejection", (reason) => logger.error({ err: reason }, "unhandled rejection"));

  // A setting found bad only on start-up (a TLS file that cannot be read) is a configuration error too.
  const server = await startNodeServer(config, logger).catch(refuseOnConfigError);
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, "stopping");
    const exit = (code: number) => process.exit(code);
    const force = setTimeout(() => {
      logger.error({}, "graceful stop took too long; exiting");
      exit(1);
    }, STOP_DEADLINE_MS - 500);
    force.unref();
    server.stop().then(
      () => {
        logger.info({}, "stopped");
        exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, "stop failed");
        exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bindwatch: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
