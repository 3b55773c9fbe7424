import { formatDuration } from '../../domain/times.ts';
import { AGENT_EXIT, isMissing, type VolregClient, type SnapshotJson } from '../client.ts';

/**
 * `volreg ls --stale AGE [VOLUME...]`: the check a cron job or a monitoring script runs to ask
 * "has every volume been backed up recently?". It lists the volumes whose latest snapshot (the
 * newest `created` among those its tags hold, as `volreg ls` shows it) is older than AGE, and
 * the volumes named that hold none, and exits STALE if there is any; silent and 0 when there is
 * none, as cron wants it. Named volumes are the ones checked; without names, every volume.
 *
 * Ages are judged by the registry's clock (the `Date` of the reply that listed the volume), the
 * one that stamped the snapshots, so a host whose own clock is off judges them the same.
 */

const PAGE = 1000;

/** A volume checked, with its latest snapshot (null: it holds none) and the registry's time when it was listed. */
interface Checked {
  volume: string;
  latest: Pick<SnapshotJson, 'tag' | 'created'> | null;
  at: Date;
}

export interface StaleOptions {
  ageMs: number;
  /** as written on the command line, for messages */
  ageText: string;
  json: boolean;
  quiet: boolean;
}

export async function checkStale(client: VolregClient, names: readonly string[], opts: StaleOptions): Promise<number> {
  const checked = names.length > 0 ? await namedVolumes(client, names) : await everyVolume(client);
  const overdue = checked
    .map((c) => ({ ...c, ageMs: c.latest === null ? null : c.at.getTime() - Date.parse(c.latest.created) }))
    .filter((c) => c.ageMs === null || c.ageMs > opts.ageMs)
    // none at all first, then backed up longest ago first
    .sort((a, b) => (b.ageMs ?? Infinity) - (a.ageMs ?? Infinity) || (a.volume < b.volume ? -1 : 1));
  if (opts.json) {
    const report = {
      olderThanSeconds: opts.ageMs / 1000,
      checked: checked.length,
      stale: overdue.map((c) => ({ volume: c.volume, latest: c.latest && { tag: c.latest.tag, created: c.latest.created }, ageSeconds: c.ageMs === null ? null : Math.floor(c.ageMs / 1000) })),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else if (overdue.length > 0) {
    const rows = [['VOLUME', 'LATEST', 'CREATED', 'AGE']];
    for (const c of overdue) rows.push(c.latest === null ? [c.volume, '-', '-', 'NONE'] : [c.volume, c.latest.tag, c.latest.created, formatDuration(c.ageMs!)]);
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    process.stdout.write(rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n') + '\n');
  }
  if (overdue.length > 0 && !opts.quiet) {
    process.stderr.write(`volreg ls: ${overdue.length} of ${checked.length} volumes have no snapshot newer than ${opts.ageText}\n`);
  }
  return overdue.length > 0 ? AGENT_EXIT.STALE : AGENT_EXIT.OK;
}

/** Each named volume's latest snapshot: the first of its snapshot list (newest first). */
async function namedVolumes(client: VolregClient, names: readonly string[]): Promise<Checked[]> {
  const out: Checked[] = [];
  for (const volume of new Set(names)) {
    const page = await client.list(volume, { limit: 1 }).catch((err: unknown) => {
      if (isMissing(err)) return null; // holds nothing
      throw err;
    });
    out.push({ volume, latest: page?.snapshots[0] ?? null, at: client.registryTime ?? new Date() });
  }
  return out;
}

/** Every volume of the volume list, page after page (each starting after the last listed). */
async function everyVolume(client: VolregClient): Promise<Checked[]> {
  const out: Checked[] = [];
  for (let after: string | undefined; ; ) {
    const page = await client.listVolumes({ limit: PAGE, after });
    const at = client.registryTime ?? new Date();
    for (const v of page.volumes) out.push({ volume: v.volume, latest: v.latest, at });
    if (!page.next) return out;
    after = page.next;
  }
}
