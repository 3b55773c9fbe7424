/**
 * The wall clock, as records are stamped with it, and the ages judged from those stamps.
 *
 * The wall clock steps: NTP correcting a host that booted hours off, an operator setting the
 * date, a resume from suspend. A stamp taken before a forward step then looks older than it is
 * by the whole step, and the purge of abandoned uploads or a garbage collection would take
 * what a client is still working with. The monotonic clock (`performance.now`) does not step,
 * so the difference between the two moves exactly when the wall clock is stepped: this clock
 * notes each such move, and `cutoff` takes a forward one seen within the age asked about off
 * the ages it judges. Deadlines and durations use the monotonic clock alone (`monotonicMs`).
 *
 * What it can not see: a step while the process was not running (nothing then tells a step
 * from time that passed), and a stamp written by another process or host (their clocks must
 * agree with this one to well within the ages judged).
 */
export class WallClock {
  /** each offset (wall minus monotonic) seen, from when it was first seen (monotonic ms) */
  private readonly offsets: Array<{ since: number; offset: number }> = [];

  constructor(
    private readonly wallMs: () => number = Date.now,
    private readonly monoMs: () => number = () => performance.now(),
  ) {
    this.read();
  }

  /** The wall time now (noting a step since the last reading). */
  now(): Date {
    return new Date(this.read().wall);
  }

  /**
   * The wall time before which a stamp this process took is at least `ageMs` old, however the
   * wall clock was stepped since: `ageMs` before now, and further back by as much as the clock
   * was stepped forward within that time (a step back makes stamps look younger: they are kept
   * longer, until the clock passes them again).
   */
  cutoff(ageMs: number): Date {
    const { wall, mono, offset } = this.read();
    const from = mono - ageMs;
    let lowest = offset;
    for (let i = this.offsets.length - 1; i >= 0; i--) {
      const seen = this.offsets[i]!;
      lowest = Math.min(lowest, seen.offset);
      if (seen.since <= from) break; // the offset in force when the age began
    }
    return new Date(wall - ageMs - (offset - lowest));
  }

  private read(): { wall: number; mono: number; offset: number } {
    const mono = this.monoMs();
    const wall = this.wallMs();
    const offset = wall - mono;
    const last = this.offsets[this.offsets.length - 1];
    if (!last || Math.abs(offset - last.offset) > STEP_MS) {
      this.offsets.push({ since: mono, offset });
      if (this.offsets.length > KEPT_OFFSETS) this.offsets.shift();
    }
    return { wall, mono, offset };
  }
}

/** Milliseconds of a monotonic clock, for deadlines and durations: never stepped. */
export function monotonicMs(): number {
  return performance.now();
}

/** a move of the offset this large is a step (the two clocks are read a moment apart) */
const STEP_MS = 1000;
/** steps remembered (a clock stepped back and forth more often than this is not followed) */
const KEPT_OFFSETS = 1000;

/** The process's clock: records are stamped with it, and ages judged by it. */
export const processClock = new WallClock();
