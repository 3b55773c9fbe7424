import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { isTag } from '../../domain/names.ts';
import { progressFor, pushSource } from '../archive/transfer.ts';
import { addAgentOptions, AGENT_EXIT, checkedVolume, clientFrom, describeError, runAgent, UsageError } from '../client.ts';
import { repositoryClash, volumeRepository } from '../lockfile.ts';
import { humanPath } from '../archive/dir-fd.ts';
import { DEFAULT_TAGS_LOCK_WAIT_SECONDS, TagsLockTimeoutError } from '../tags-lock.ts';
import { dockerVolumeProblem, updateTagsFile, volumesRootProblem, withVolumeDir } from '../volumes-root.ts';
import { addPushOptions, checkLevel, hostOf, labelsOf, type PushFlags } from './push.ts';

export interface VolumeRootFlags {
  volumesRoot: string;
  prefix: string;
  tagsLockTimeout: string;
}

interface BackupFlags extends PushFlags, VolumeRootFlags {
  tag: string;
}

export function addVolumeRootOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--volumes-root <dir>', 'directory holding one directory per volume').env('VOLREG_VOLUMES_ROOT').default('/volumes'))
    .addOption(new Option('--prefix <repo/>', 'repository prefix of the volumes\' snapshots').env('VOLREG_PREFIX').default(''))
    .addOption(
      new Option('--tags-lock-timeout <seconds>', 'how long to wait while another backup or restore updates the tags file of the volumes root (0: not at all)')
        .env('VOLREG_TAGS_LOCK_TIMEOUT')
        .default(String(DEFAULT_TAGS_LOCK_WAIT_SECONDS)),
    );
}

/** --tags-lock-timeout as seconds; bad usage when it is not a whole number of them. */
export function tagsLockWait(flags: VolumeRootFlags): number {
  if (!/^\d{1,5}$/.test(flags.tagsLockTimeout)) {
    throw new UsageError(`--tags-lock-timeout (VOLREG_TAGS_LOCK_TIMEOUT) wants a whole number of seconds, got ${JSON.stringify(flags.tagsLockTimeout)}`);
  }
  return Number(flags.tagsLockTimeout);
}

export function registerBackup(program: Command): void {
  addPushOptions(
    addVolumeRootOptions(
      addAgentOptions(
        program
          .command('backup')
          .description('push several volumes under one tag (<prefix><volume>:<tag>) and record it in the tags file')
          .requiredOption('--tag <tag>', 'the tag every snapshot gets')
          .argument('<volumes...>', 'volume names (separated by spaces or commas)'),
      ),
    ),
  ).action((volumeArgs: string[], flags: BackupFlags) =>
    runAgent('backup', async () => {
      if (!isTag(flags.tag)) throw new UsageError(`invalid tag ${JSON.stringify(flags.tag)}`);
      checkLevel(flags.compression, flags.level);
      const volumes = volumeArgs.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
      if (volumes.length === 0) throw new UsageError('no volumes named');
      const lockWaitSeconds = tagsLockWait(flags);
      // Before anything is pushed, every name restore would refuse in a lock file (the same
      // rule, so what is backed up can be restored), named all at once as restore does
      const problems = volumes.flatMap((v) => {
        const problem = dockerVolumeProblem(v);
        return problem === null ? [] : [`${JSON.stringify(v)}: ${problem}`];
      });
      if (problems.length > 0) throw new UsageError(problems.join('; '));
      // `Data` and `data` would overwrite each other's snapshot
      const clash = repositoryClash(flags.prefix, volumes);
      if (clash !== null) throw new UsageError(clash);
      // and a name the registry could never take (a bad --prefix) is bad usage too
      for (const volume of volumes) checkedVolume(volumeRepository(flags.prefix, volume), `${flags.prefix}${volume}`);
      const blocked = await volumesRootProblem(flags.volumesRoot);
      if (blocked !== null) throw new UsageError(blocked);
      const client = clientFrom(flags, 'backup');
      const labels = labelsOf(flags.label);
      const host = hostOf(flags.host);
      const results: Array<{ volume: string; repository: string; ok: boolean; digest?: string; error?: string }> = [];
      let stopped = false;
      for (const volume of volumes) {
        const repository = volumeRepository(flags.prefix, volume);
        try {
          // the volume's directory as it was opened, never through a link (volumes-root.ts)
          const r = await withVolumeDir(flags.volumesRoot, volume, { create: false }, (dir) => {
            if (dir === null) throw new Error(`${join(flags.volumesRoot, volume)} does not exist`);
            return pushSource(client, dir, repository, flags.tag, {
              compression: flags.compression,
              level: flags.level,
              host,
              labels,
              progress: progressFor(!flags.quiet && !flags.json),
              onWarning: (m) => process.stderr.write(`volreg backup: ${volume}: warning: ${humanPath(m)}\n`),
              noOverwrite: !flags.overwrite,
            });
          });
          // recorded at once, so a backup stopped later still lists what it pushed
          await updateTagsFile(flags.volumesRoot, new Map([[volume, flags.tag]]), { lockWaitSeconds });
          results.push({ volume, repository, ok: true, digest: r.manifestDigest });
          if (!flags.quiet && !flags.json) process.stdout.write(`${volume}: pushed ${repository}:${flags.tag} ${r.manifestDigest}\n`);
        } catch (err) {
          results.push({ volume, repository, ok: false, error: describeError(err) });
          process.stderr.write(`volreg backup: ${volume}: ${describeError(err)}\n`);
          // the next volume's line would wait as long again: the run stops, saying what it did
          stopped = err instanceof TagsLockTimeoutError;
          if (stopped) break;
        }
      }
      const ok = results.every((r) => r.ok);
      if (flags.json) process.stdout.write(`${JSON.stringify({ tag: flags.tag, ok, stopped, volumes: results }, null, 2)}\n`);
      if (stopped) return AGENT_EXIT.FAILURE;
      return ok ? AGENT_EXIT.OK : AGENT_EXIT.PARTIAL;
    }),
  );
}
