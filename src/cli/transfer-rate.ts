import { monotonicMs } from '../domain/clock.ts';
import { human } from './byte-size.ts';

/**
 * How fast a transfer goes now, for its progress bar: the bytes of the last WINDOW_MS, and how
 * long nothing has come when nothing has, so a bar over a slow or stalled link says what the
 * link does rather than what it did a minute ago.
 */
export class TransferRate {
  private readonly samples: Array<{ at: number; bytes: number }> = [];
  private readonly startedAt: number;
  private lastAt: number;

  // the monotonic clock: a wall clock stepped back would keep every sample in the window
  constructor(private readonly now: () => number = monotonicMs) {
    this.startedAt = this.lastAt = now();
  }

  add(bytes: number): void {
    const at = this.now();
    // a fast transfer's many chunks go into buckets of BUCKET_MS: the window stays a few entries
    const last = this.samples[this.samples.length - 1];
    if (last && at - last.at < BUCKET_MS) last.bytes += bytes;
    else this.samples.push({ at, bytes });
    this.lastAt = at;
    this.prune(at);
  }

  /** bytes per second over the window (over the time since the start while it is shorter, at least 1 s) */
  perSecond(): number {
    const at = this.now();
    this.prune(at);
    const sum = this.samples.reduce((n, s) => n + s.bytes, 0);
    return (sum * 1000) / Math.max(1000, Math.min(WINDOW_MS, at - this.startedAt));
  }

  /** e.g. `1.2 MiB/s`, or `0 B/s, nothing for 12 s` once nothing came for STALLED_MS */
  describe(): string {
    const quiet = this.now() - this.lastAt;
    if (quiet >= STALLED_MS) return `0 B/s, nothing for ${Math.floor(quiet / 1000)} s`;
    return `${human(Math.round(this.perSecond()))}/s`;
  }

  private prune(at: number): void {
    while (this.samples.length > 0 && at - this.samples[0]!.at >= WINDOW_MS) this.samples.shift();
  }
}

const WINDOW_MS = 5000;
const STALLED_MS = 3000;
const BUCKET_MS = 100;
