import type { Command } from 'commander';
import type { ExtractOptions } from '../archive/safe-extract.ts';
import { progressFor, pullInto } from '../archive/transfer.ts';
import { addAgentOptions, AGENT_EXIT, clientFrom, runAgent, UsageError, type ConnectionFlags } from '../client.ts';
import { isOutOfSpace } from '../../storage/fs-ops.ts';

export interface ExtractFlags {
  force?: boolean;
  allowDevices?: boolean;
  keepOutsideSymlinks?: boolean;
  sparse?: boolean;
}

export function addExtractOptions(cmd: Command): Command {
  return cmd
    .option('--allow-devices', 'create character and block device files (needs root)')
    .option('--keep-outside-symlinks', 'create symlinks that point outside the target (nothing is ever written through them)')
    .option('--sparse', 'leave blocks of zeros in files as holes, as cp --sparse=always does (a sparse file then takes no more room than it did)');
}

/** What the extract flags ask of the extractor (pull and restore alike). */
export function extractOptionsFrom(flags: ExtractFlags): Pick<ExtractOptions, 'allowDevices' | 'keepOutsideSymlinks' | 'sparse'> {
  return { allowDevices: flags.allowDevices, keepOutsideSymlinks: flags.keepOutsideSymlinks, sparse: flags.sparse };
}

/**
 * A full disk may be a sparse file's holes written out in full (a restore does that without
 * --sparse, README "What a snapshot keeps"): the failure then names the flag that keeps them.
 */
export function withSparseHint(err: unknown, flags: ExtractFlags): unknown {
  if (flags.sparse || !(err instanceof Error) || !isOutOfSpace(err)) return err;
  err.message += ' (if the volume held sparse files, --sparse leaves their holes unwritten and may fit)';
  return err;
}

export function registerPull(program: Command): void {
  addExtractOptions(
    addAgentOptions(
      program
        .command('pull')
        .description('download <name>:<tag> or <name>@<digest>, verify its digest, then extract it into <dir>')
        .argument('<ref>', '<name>:<tag> or <name>@<manifest digest>')
        .argument('<dir>', 'target directory (created if missing; must be empty unless --force)')
        .option('-f, --force', 'replace the contents of a non-empty directory'),
    ),
  ).action((ref: string, dir: string, flags: ConnectionFlags & ExtractFlags) =>
    runAgent('pull', async () => {
      if (dir === '') throw new UsageError('the target directory is an empty string');
      const result = await pullInto(clientFrom(flags, 'pull'), ref, dir, {
        force: flags.force ?? false,
        ...extractOptionsFrom(flags),
        progress: progressFor(!flags.quiet && !flags.json),
        onWarning: (m) => process.stderr.write(`volreg pull: warning: ${m}\n`),
      }).catch((err: unknown) => {
        throw withSparseHint(err, flags);
      });
      if (flags.json) process.stdout.write(`${JSON.stringify({ ref, dir, digest: result.digest, size: result.size, entries: result.entries }, null, 2)}\n`);
      else if (!flags.quiet) process.stdout.write(`pulled ${ref} ${result.digest} into ${dir} (${result.entries} entries)\n`);
      return AGENT_EXIT.OK;
    }),
  );
}
