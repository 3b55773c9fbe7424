import { InvalidArgumentError, type Command } from 'commander';
import { human } from '../byte-size.ts';
import { parseDuration, parseTime } from '../../domain/times.ts';
import { isVolregError } from '../../domain/errors.ts';
import { parseSnapshotPosition, parseVolumePosition } from '../../domain/volumes/listing-position.ts';
import { addAgentOptions, AGENT_EXIT, checkedVolume, clientFrom, runAgent, UsageError, type ConnectionFlags, type ListQuery } from '../client.ts';
import { hostOf } from './push.ts';
import { checkStale } from './ls-stale.ts';

interface LsFlags extends ConnectionFlags, ListQuery {
  stale?: string;
}

function count(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  // commander reports it as bad usage of the flag (exit 2)
  if (!/^[0-9]+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`${flag} wants a whole number from ${min} to ${max}`);
  return n;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/**
 * A table that is one page of a longer list says so (on stderr, so the table stays parseable):
 * read as the whole list, a 100-row page hides the oldest snapshots, the very ones a retention
 * job is looking for.
 */
function moreNote(shown: number, total: number, next: string | null, flags: LsFlags): void {
  if (next === null || flags.quiet) return;
  process.stderr.write(`volreg ls: ${shown} of ${total} shown; the next page: --after ${next}\n`);
}

export function registerLs(program: Command): void {
  addAgentOptions(
    program
      .command('ls')
      .description('list volumes, or the snapshots of one volume (newest first); with --stale, the volumes not backed up recently')
      .argument('[name...]', 'a volume repository (with --stale: the volumes to check, each of which must hold a snapshot)')
      .option('--host <host>', 'only snapshots from this host')
      .option('--since <time>', 'only snapshots created at or after (ISO 8601 or epoch seconds)')
      .option('--until <time>', 'only snapshots created before (ISO 8601 or epoch seconds)')
      .option('--limit <n>', 'at most this many (1 to 1000)', (v) => count('--limit', v, 1, 1000))
      .option('--offset <n>', 'skip this many', (v) => count('--offset', v, 0, 1e9))
      .option('--after <position>', 'start after this position (the "next" a previous page gave): stable while snapshots are deleted, unlike --offset')
      .option('--stale <age>', 'only the volumes whose latest snapshot is older than this (26h, 90m, 2d, 1d12h, or seconds), and those named that hold none; exit 8 if any, 0 and nothing printed if none'),
  ).action((names: string[], flags: LsFlags) =>
    runAgent('ls', async () => {
      if (flags.stale !== undefined) {
        const ageMs = parseDuration(flags.stale);
        if (ageMs === null) throw new UsageError(`--stale wants an age such as 26h, 90m, 2d, 1d12h or seconds, got ${JSON.stringify(flags.stale)}`);
        for (const [flag, value] of [['--host', flags.host], ['--since', flags.since], ['--until', flags.until], ['--limit', flags.limit], ['--offset', flags.offset], ['--after', flags.after]] as const) {
          // --stale judges each volume's latest snapshot, whatever its host or time, on every page
          if (value !== undefined) throw new UsageError(`--stale checks every volume (or those named) by its latest snapshot: ${flag} does not apply to it`);
        }
        for (const n of names) checkedVolume(n, n);
        return checkStale(clientFrom(flags, 'ls'), names, { ageMs, ageText: flags.stale, json: flags.json ?? false, quiet: flags.quiet ?? false });
      }
      if (names.length > 1) throw new UsageError('ls lists one volume at a time (several are checked with --stale)');
      const name = names[0];
      // as the registry checks them: a bad one is bad usage, found before anything is asked
      if (flags.host !== undefined) hostOf(flags.host);
      for (const [flag, value] of [['--since', flags.since], ['--until', flags.until]] as const) {
        if (value !== undefined && parseTime(value) === null) throw new UsageError(`${flag} wants ISO 8601 (2024-05-01, 2024-05-01T10:00:00Z) or epoch seconds, got ${JSON.stringify(value)}`);
      }
      // as the registry answers both: a count and a position can not both say where to start
      if (flags.after !== undefined && flags.offset !== undefined) throw new UsageError('--after and --offset can not be used together');
      if (flags.after !== undefined) {
        try {
          if (name === undefined) parseVolumePosition(flags.after);
          else parseSnapshotPosition(flags.after);
        } catch (err) {
          if (!isVolregError(err)) throw err;
          throw new UsageError(`--after wants the "next" a previous page of this list gave, got ${JSON.stringify(flags.after)}`);
        }
      }
      const client = clientFrom(flags, 'ls');
      if (name === undefined) {
        const page = await client.listVolumes({ limit: flags.limit, offset: flags.offset, after: flags.after });
        if (flags.json) process.stdout.write(`${JSON.stringify(page, null, 2)}\n`);
        else {
          const rows = [['VOLUME', 'SNAPSHOTS', 'TOTAL', 'STORED', 'LATEST', 'CREATED']];
          for (const v of page.volumes) {
            rows.push([v.volume, String(v.snapshots), human(v.totalSize), v.storedSize === undefined ? '-' : human(v.storedSize), v.latest.tag, v.latest.created]);
          }
          process.stdout.write(table(rows));
          moreNote(page.volumes.length, page.total, page.next, flags);
        }
        return AGENT_EXIT.OK;
      }
      checkedVolume(name, name);
      const page = await client.list(name, { host: flags.host, since: flags.since, until: flags.until, limit: flags.limit, offset: flags.offset, after: flags.after });
      // a volume exists while it holds a snapshot (as the volume list says); a filter matching none is only an empty answer
      const filtered = flags.host !== undefined || flags.since !== undefined || flags.until !== undefined || (flags.offset ?? 0) > 0 || flags.after !== undefined;
      if (page.total === 0 && !filtered) {
        process.stderr.write(`volreg ls: volume ${name} holds no snapshots\n`);
        if (flags.json) process.stdout.write(`${JSON.stringify(page, null, 2)}\n`);
        return AGENT_EXIT.NOT_FOUND;
      }
      if (flags.json) process.stdout.write(`${JSON.stringify(page, null, 2)}\n`);
      else {
        const rows = [['TAG', 'DIGEST', 'SIZE', 'COMPRESSION', 'HOST', 'CREATED', 'VERIFIED']];
        for (const s of page.snapshots) {
          const verified = s.lastVerify ? `${s.lastVerify.ok ? 'ok' : 'FAILED'} ${s.lastVerify.at}` : '-';
          rows.push([s.tag, s.manifestDigest.slice(0, 19), human(s.layer.size), s.compression, s.host ?? '-', s.created, verified]);
        }
        process.stdout.write(table(rows));
        moreNote(page.snapshots.length, page.total, page.next, flags);
      }
      return AGENT_EXIT.OK;
    }),
  );
}
