import type { Command } from 'commander';
import { humanPath } from '../archive/dir-fd.ts';
import { progressFor, pullInto } from '../archive/transfer.ts';
import { addAgentOptions, AGENT_EXIT, checkedVolume, clientFrom, describeError, isMissing, runAgent, UsageError, type ConnectionFlags, type VolregClient } from '../client.ts';
import { decideRestore, LockFileError, parseLockFile, readLockFile, repositoryClash, volumeRepository, type RestoreDecision } from '../lockfile.ts';
import { readTagsFile, updateTagsFile, volumesRootProblem, VolumeDirError, withVolumeDir } from '../volumes-root.ts';
import { TagsLockTimeoutError } from '../tags-lock.ts';
import { addVolumeRootOptions, tagsLockWait, type VolumeRootFlags } from './backup.ts';
import { addExtractOptions, extractOptionsFrom, withSparseHint, type ExtractFlags } from './pull.ts';

interface RestoreFlags extends ConnectionFlags, ExtractFlags, VolumeRootFlags {
  lock: string;
}

interface Outcome {
  volume: string;
  tag: string | null;
  status: 'restored' | 'up-to-date' | 'skipped' | 'failed';
  message: string;
  digest?: string;
}

export function registerRestore(program: Command): void {
  addExtractOptions(
    addVolumeRootOptions(
      addAgentOptions(
        program
          .command('restore')
          .description('restore every downstream volume of a lock file to the snapshot tag it is locked to')
          .requiredOption('--lock <file>', 'the lock file (volumes.dvm.lock)')
          .option('-f, --force', 'replace non-empty volumes'),
      ),
    ),
  ).action((flags: RestoreFlags) =>
    runAgent('restore', async () => {
      const lockWaitSeconds = tagsLockWait(flags);
      const text = await readLockFile(flags.lock).catch((err: unknown) => {
        throw err instanceof LockFileError ? new UsageError(err.message) : err;
      });
      let entries;
      try {
        entries = parseLockFile(text);
      } catch (err) {
        if (err instanceof LockFileError) throw new UsageError(`${flags.lock}: ${err.message}`);
        throw err;
      }
      // Before anything is restored: a lock file with a bad entry is malformed as a whole (a
      // typo must not restore the other volumes and leave this one behind unnoticed), and
      // `Data` and `data` would both receive one repository's content.
      const problems = entries.filter((e) => e.problem !== null).map((e) => `${e.volume}: ${e.problem}`);
      for (const e of entries) {
        if (e.problem !== null || e.tag === null) continue;
        try {
          checkedVolume(volumeRepository(flags.prefix, e.volume), `${flags.prefix}${e.volume}`);
        } catch (err) {
          problems.push(`${e.volume}: ${(err as Error).message}`);
        }
      }
      if (problems.length > 0) throw new UsageError(`${flags.lock}: ${problems.join('; ')}`);
      const clash = repositoryClash(flags.prefix, entries.map((e) => e.volume));
      if (clash !== null) throw new UsageError(`${flags.lock}: ${clash}`);
      const blocked = await volumesRootProblem(flags.volumesRoot);
      if (blocked !== null) throw new UsageError(blocked);
      const client = clientFrom(flags, 'restore');
      const current = await readTagsFile(flags.volumesRoot);
      const outcomes: Outcome[] = [];
      let stopped = false;
      for (const entry of entries) {
        let decision: RestoreDecision;
        try {
          // a volume not locked to a tag is skipped without a look at its directory
          decision =
            entry.tag === null
              ? await decideRestore(entry, null, undefined, false)
              : await withVolumeDir(flags.volumesRoot, entry.volume, { create: false }, (dir) => decideRestore(entry, dir, current.get(entry.volume), flags.force ?? false));
        } catch (err) {
          // a link or a file in the volume's place: an error for it, after a missing snapshot (below)
          if (err instanceof VolumeDirError) decision = { action: 'error', reason: err.message };
          else {
            // a volume that can not even be looked at fails alone; the others are still restored
            outcomes.push({ volume: entry.volume, tag: entry.tag, status: 'failed', message: describeError(err) });
            continue;
          }
        }
        if (decision.action === 'skip') {
          outcomes.push({ volume: entry.volume, tag: null, status: 'skipped', message: decision.reason });
          process.stderr.write(`volreg restore: warning: ${entry.volume}: skipped (${decision.reason})\n`);
          continue;
        }
        if (decision.action === 'up-to-date') {
          outcomes.push({ volume: entry.volume, tag: entry.tag, status: 'up-to-date', message: decision.reason });
          continue;
        }
        const repository = volumeRepository(flags.prefix, entry.volume);
        // a missing snapshot is said first: it is what the operator must fix, whatever the volume holds
        let missing: string | null;
        try {
          missing = await snapshotMissing(client, repository, entry.tag!);
        } catch (err) {
          outcomes.push({ volume: entry.volume, tag: entry.tag, status: 'failed', message: describeError(err) });
          continue;
        }
        if (missing !== null) {
          outcomes.push({ volume: entry.volume, tag: entry.tag, status: 'failed', message: missing });
          continue;
        }
        if (decision.action === 'error') {
          outcomes.push({ volume: entry.volume, tag: entry.tag, status: 'failed', message: decision.reason });
          continue;
        }
        const ref = `${repository}:${decision.tag}`;
        const tag = decision.tag;
        try {
          // into the volume's directory as it was opened (made if missing), never through a link
          const r = await withVolumeDir(flags.volumesRoot, entry.volume, { create: true }, (dir) =>
            pullInto(client, ref, dir!, {
              force: true,
              ...extractOptionsFrom(flags),
              progress: progressFor(!flags.quiet && !flags.json),
              onWarning: (m) => process.stderr.write(`volreg restore: ${entry.volume}: warning: ${humanPath(m)}\n`),
              // A restore killed during the switch-over leaves old and new contents mixed: the old
              // tag must not stay beside them, or a later restore to it would call the volume up to date.
              beforeSwitchOver: () => updateTagsFile(flags.volumesRoot, new Map([[entry.volume, null]]), { lockWaitSeconds }),
              // Recorded at once, and before a signal that came meanwhile ends the restore: the
              // volume then holds this tag whole, and a later restore to it need not fetch it again.
              afterSwitchOver: () => updateTagsFile(flags.volumesRoot, new Map([[entry.volume, tag]]), { lockWaitSeconds }),
            }),
          );
          outcomes.push({ volume: entry.volume, tag: decision.tag, status: 'restored', message: `from ${ref}`, digest: r.digest });
        } catch (err) {
          outcomes.push({ volume: entry.volume, tag: decision.tag, status: 'failed', message: describeError(withSparseHint(err, flags)) });
          // the next volume's line would wait as long again: the run stops, saying what it did
          stopped = err instanceof TagsLockTimeoutError;
          if (stopped) break;
        }
      }
      for (const o of outcomes) {
        if (o.status === 'failed') process.stderr.write(`volreg restore: ${o.volume}: ${o.message}\n`);
        else if (!flags.quiet && !flags.json && o.status !== 'skipped') process.stdout.write(`${o.volume}: ${o.status} ${o.tag ?? ''} ${o.message}\n`);
      }
      const ok = outcomes.every((o) => o.status !== 'failed');
      if (flags.json) process.stdout.write(`${JSON.stringify({ ok, stopped, volumes: outcomes }, null, 2)}\n`);
      if (stopped) return AGENT_EXIT.FAILURE;
      return ok ? AGENT_EXIT.OK : AGENT_EXIT.PARTIAL;
    }),
  );
}

/** Why the snapshot cannot be restored when the registry does not have it; null when it does. */
async function snapshotMissing(client: VolregClient, repository: string, tag: string): Promise<string | null> {
  try {
    await client.get(repository, tag);
    return null;
  } catch (err) {
    if (isMissing(err)) return `snapshot ${repository}:${tag} does not exist (${describeError(err)})`;
    throw err;
  }
}
