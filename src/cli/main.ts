import { readFileSync } from 'node:fs';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { registerDb } from './commands/db.ts';
import { registerGc } from './commands/gc.ts';
import { registerScrub } from './commands/scrub.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerServe } from './commands/serve.ts';
import { registerBackup } from './commands/backup.ts';
import { registerLs } from './commands/ls.ts';
import { registerPull } from './commands/pull.ts';
import { registerPush } from './commands/push.ts';
import { registerRestore } from './commands/restore.ts';
import { registerRm } from './commands/rm.ts';
import { registerVerify } from './commands/verify.ts';
import { dropOutputOnClosedPipe } from './closed-output.ts';
import { EXIT } from './exit-codes.ts';
import { PACKAGE_ROOT } from '../package-root.ts';

/**
 * The `volreg` command. Each subcommand lives in its own module under commands/ and exports a
 * `registerX(program)`; add yours to REGISTRARS.
 */
const REGISTRARS: Array<(program: Command) => void> = [
  // service
  registerServe,
  registerMigrate,
  registerDb,
  registerGc,
  registerScrub,
  // host agent (push, pull, backup, restore, ls, verify, rm)
  registerPush,
  registerPull,
  registerBackup,
  registerRestore,
  registerLs,
  registerVerify,
  registerRm,
];

export function version(): string {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('volreg')
    .description('volreg: a registry-backed content store for Docker volume snapshots')
    .version(version(), '-V, --version')
    .showHelpAfterError()
    .exitOverride((err) => {
      // commander exits 1 on usage errors; volreg uses 2 for them (0 for --help and --version)
      process.exit(err.exitCode === 0 ? EXIT.OK : EXIT.USAGE);
    });
  for (const register of REGISTRARS) register(program);
  return program;
}

export async function run(argv: string[] = process.argv): Promise<void> {
  dropEmptyVariables(process.env);
  dropOutputOnClosedPipe();
  await buildProgram().parseAsync(argv);
}

/**
 * An empty VOLREG_* variable counts as unset (README, Configuration), for the options read from
 * the environment too: commander would take `VOLREG_VOLUMES_ROOT=` as the value '', the current
 * directory.
 */
export function dropEmptyVariables(env: NodeJS.ProcessEnv): void {
  for (const name of Object.keys(env)) {
    if (name.startsWith('VOLREG_') && env[name] === '') delete env[name];
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) await run();
