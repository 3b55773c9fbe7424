import { monotonicMs } from '../domain/clock.ts';
import type { VolumeSummary } from '../domain/volumes/snapshot.ts';

/**
 * How recently each volume was backed up, for /metrics: answered from the volume list
 * (VolumeService.heldVolumes), so a volume, its latest snapshot and a deleted tag mean here what
 * they mean in `GET /api/v1/volumes` and `volreg ls`.
 *
 * A scrape comes every 15-60 s, and a store may hold tens of thousands of volumes, so the figures
 * are kept between scrapes:
 *
 * - with the embedded engine's change marks, until anything a listing reads changes (whoever
 *   changes it): a scrape of a store nobody pushed to reads nothing, and one after a push reads
 *   again only the volumes changed (the listing's own kept summaries). Every scrape is current.
 * - without them (VOLREG_MONGODB_URL: a real MongoDB, or a standalone engine other processes
 *   share), for at most `maxAgeMs`, as each reading reads every volume. A snapshot pushed through
 *   this process or another then shows within that long.
 *
 * Scrapes that come while a reading is under way share it (without marks, its figures are then
 * at most `maxAgeMs` plus that reading's time old).
 */

export interface VolumeFreshness {
  /** volumes that hold at least one snapshot */
  volumes: number;
  /** each such volume's latest snapshot's `created`: backed up longest ago first, then by name */
  latest: Array<{ volume: string; created: Date }>;
}

/** Where the figures come from (VolumeService). */
export interface HeldVolumes {
  heldVolumes(): Promise<VolumeSummary[]>;
  /** moves whenever anything heldVolumes reads may have changed; null: no change marks */
  storeMark(): number | null;
}

interface Reading {
  figures: Promise<VolumeFreshness>;
  /** the store's mark when it began (null: none) */
  mark: number | null;
  /** monotonicMs when it began */
  startedAt: number;
  /** not answered yet: the gauges of one scrape, each asking, share it */
  underWay: boolean;
}

export class VolumeFreshnessReader {
  private last: Reading | null = null;

  constructor(
    private readonly source: HeldVolumes,
    private readonly maxAgeMs: number,
  ) {}

  /** The figures: the kept ones while they still hold (see the module comment), else read now. */
  read(): Promise<VolumeFreshness> {
    const mark = this.source.storeMark();
    const last = this.last;
    const current = last !== null && (mark !== null ? last.mark === mark : last.underWay || monotonicMs() - last.startedAt <= this.maxAgeMs);
    if (current) return last.figures;
    const reading: Reading = { figures: this.load(), mark, startedAt: monotonicMs(), underWay: true };
    this.last = reading;
    reading.figures.then(
      () => (reading.underWay = false),
      () => {
        // a failed reading is not kept: the next scrape asks again
        if (this.last === reading) this.last = null;
      },
    );
    return reading.figures;
  }

  private async load(): Promise<VolumeFreshness> {
    const held = await this.source.heldVolumes();
    const latest = held.map((v) => ({ volume: v.volume as string, created: new Date(v.latest.created) }));
    latest.sort((a, b) => a.created.getTime() - b.created.getTime() || (a.volume < b.volume ? -1 : a.volume > b.volume ? 1 : 0));
    return { volumes: held.length, latest };
  }
}
