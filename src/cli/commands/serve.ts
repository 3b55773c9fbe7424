import type { Command } from 'commander';
import { ConfigError } from '../../config/load-config.ts';
import type { RunningServer } from '../../main.ts';
import { configFromEnv, failConfig } from '../config-from-env.ts';
import { EXIT } from '../exit-codes.ts';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the volreg service (configured by VOLREG_* variables, see the README)')
    .action(serve);
}

/**
 * Starts the service, prints `volreg listening on http://HOST:PORT` once it accepts requests,
 * and on SIGTERM or SIGINT drains in-flight requests and exits 0. A second signal exits at once.
 * SIGHUP reads VOLREG_AUTH_FILE again.
 */
async function serve(): Promise<void> {
  const config = configFromEnv();
  // the service's module graph is loaded only by the subcommands that need it
  const { createLogger, startServer } = await import('../../main.ts');
  const logger = createLogger(config);
  let running: RunningServer;
  try {
    running = await startServer(config, { logger, processMetrics: true });
  } catch (err) {
    if (err instanceof ConfigError) failConfig(err);
    logger.fatal({ err }, 'cannot start');
    process.stderr.write(`volreg: cannot start: ${(err as Error).message}\n`);
    process.exit(EXIT.FAILURE);
  }
  process.stdout.write(`volreg listening on ${running.url}\n`);

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal during shutdown; exiting now');
      process.exit(EXIT.FAILURE);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    running.close().then(
      () => process.exit(EXIT.OK),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(EXIT.FAILURE);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // the users and access rules of VOLREG_AUTH_FILE are read again: adding a host needs no restart
  process.on('SIGHUP', () => void running.reloadAuth());
}
