import { hostname } from 'node:os';
import { Option, type Command } from 'commander';
import { pushSource, progressFor } from '../archive/transfer.ts';
import { human } from '../byte-size.ts';
import { parseHost, parseLabels } from '../../domain/volumes/snapshot-config.ts';
import { addAgentOptions, AGENT_EXIT, checkedPart, checkedVolume, clientFrom, parseSnapshotRef, runAgent, UsageError, type ConnectionFlags } from '../client.ts';
import type { Compression } from '../../domain/volumes/media-types.ts';

export interface PushFlags extends ConnectionFlags {
  compression: Compression;
  level?: number;
  host: string;
  label: string[];
  overwrite: boolean;
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** The labels of `--label key=value` flags, checked as the registry checks them. */
export function labelsOf(pairs: string[]): Record<string, string> {
  for (const p of pairs) if (p.indexOf('=') <= 0) throw new UsageError(`--label wants key=value, got ${JSON.stringify(p)}`);
  return checkedPart('--label', () => parseLabels(pairs));
}

/** The `--host` flag, checked as the registry checks it. */
export function hostOf(host: string): string {
  return checkedPart('--host', () => parseHost(host));
}

const LEVELS: Partial<Record<Compression, [number, number]>> = { gzip: [0, 9], zstd: [1, 19] };

/** A `--level` the compressor cannot take is bad usage, found before anything is packed. */
export function checkLevel(compression: Compression, level: number | undefined): void {
  if (level === undefined) return;
  const range = LEVELS[compression];
  if (!range) throw new UsageError(`--level applies to gzip and zstd, not to --compression ${compression}`);
  if (!Number.isInteger(level) || level < range[0] || level > range[1]) {
    throw new UsageError(`--level for ${compression} is ${range[0]}-${range[1]}, got ${Number.isNaN(level) ? 'not a number' : level}`);
  }
}

export function addPushOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--compression <kind>', 'compression of the uploaded tar').choices(['gzip', 'zstd', 'none']).default('gzip'))
    .option('--level <n>', 'compression level', (v) => Number.parseInt(v, 10))
    .option('--host <name>', 'source host recorded with the snapshot', hostname())
    .option('--label <key=value>', 'label recorded with the snapshot (repeatable)', collect, [])
    .option('--no-overwrite', 'refuse a tag that already holds a snapshot (exit 7), also when another host pushes it at the same moment');
}

export function registerPush(program: Command): void {
  addPushOptions(
    addAgentOptions(
      program
        .command('push')
        .description('pack a directory (or send a tar/tar.gz/tar.zst from stdin with "-") and push it as <name>:<tag>')
        .argument('<source>', 'directory to pack, or - to read an archive from stdin')
        .argument('<ref>', '<name>:<tag>'),
    ),
  ).action((source: string, ref: string, flags: PushFlags) =>
    runAgent('push', async () => {
      const parsed = parseSnapshotRef(ref);
      if (!('tag' in parsed)) throw new UsageError('push needs <name>:<tag>');
      checkedVolume(parsed.name, ref);
      if (source !== '-') checkLevel(flags.compression, flags.level);
      const host = hostOf(flags.host);
      const labels = labelsOf(flags.label);
      const client = clientFrom(flags, 'push');
      const result = await pushSource(client, source === '-' ? process.stdin : source, parsed.name, parsed.tag, {
        compression: flags.compression,
        level: flags.level,
        host,
        labels,
        progress: progressFor(!flags.quiet && !flags.json),
        onWarning: (m) => process.stderr.write(`volreg push: warning: ${m}\n`),
        noOverwrite: !flags.overwrite,
      });
      if (flags.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else if (!flags.quiet) {
        process.stdout.write(
          `pushed ${result.volume}:${result.tag} ${result.manifestDigest}\n` +
            `  layer ${result.layer.digest} ${human(result.layer.size)} (${result.compression}), ${result.entries ?? '?'} entries\n`,
        );
      }
      return AGENT_EXIT.OK;
    }),
  );
}
