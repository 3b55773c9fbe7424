import { ConfigError, loadConfig } from '../config/load-config.ts';
import type { Config } from '../config/config.ts';
import { EXIT } from './exit-codes.ts';

/**
 * Loads the service configuration for a subcommand. Every problem is printed on its own line
 * to stderr and the process exits 2; warnings (unknown VOLREG_* variables) are printed and
 * ignored.
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    const { config, warnings } = loadConfig(env);
    for (const w of warnings) process.stderr.write(`volreg: warning: ${w}\n`);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) failConfig(err);
    throw err;
  }
}

export function failConfig(err: ConfigError): never {
  for (const p of err.problems) process.stderr.write(`volreg: config: ${p}\n`);
  process.exit(EXIT.USAGE);
}
