/**
 * How long a helper thread (hashing, archive inspection) is kept with nothing to do before it
 * ends: what it holds after a burst (its isolate, its ring, its malloc arena) is given back, and
 * the next start costs tens of milliseconds, once per burst.
 */
export const HELPER_IDLE_END_MS = 1000;

/**
 * The timer that ends an idle helper thread: armed when the thread falls idle, cancelled when
 * work comes. It never keeps the process alive.
 */
export class IdleEnd {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ms: number,
    private readonly end: () => void,
  ) {}

  /** (Re)starts the wait; `end` runs after it only if `stillIdle()` holds then. */
  arm(stillIdle: () => boolean): void {
    this.cancel();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (stillIdle()) this.end();
    }, this.ms);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
