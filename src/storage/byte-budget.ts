/**
 * Bytes shared by every upload of a store: those read from clients and not yet written and
 * hashed. Each upload keeps a few writes in flight for speed (pipelined-copy.ts), about 2.5 MB;
 * without a shared cap that memory grew with the number of uploads at once (60 hosts pushing
 * together took the process past 850 MB). With it, uploads beyond what the budget holds wait
 * for the disk, and their clients for TCP: the disk was the limit anyway.
 *
 * Bytes are handed out in the order they were asked for, so no upload starves.
 */
export class ByteBudget {
  private available: number;
  private readonly waiting: Array<{ n: number; granted: () => void }> = [];

  constructor(readonly capacity: number) {
    this.available = capacity;
  }

  /** Takes `n` bytes (at most the capacity) if they are free and nobody waits before: the amount taken, or 0. */
  tryTake(n: number): number {
    const want = Math.min(n, this.capacity);
    if (this.waiting.length > 0 || this.available < want) return 0;
    this.available -= want;
    return want;
  }

  /** Waits in turn until `n` bytes (at most the capacity) are free and takes them: resolves with the amount taken. */
  take(n: number): Promise<number> {
    const got = this.tryTake(n);
    if (got > 0 || n === 0) return Promise.resolve(got);
    const want = Math.min(n, this.capacity);
    return new Promise((resolve) => this.waiting.push({ n: want, granted: () => resolve(want) }));
  }

  give(n: number): void {
    this.available += n;
    while (this.waiting.length > 0 && this.available >= this.waiting[0]!.n) {
      const next = this.waiting.shift()!;
      this.available -= next.n;
      next.granted();
    }
  }

  /** bytes taken and not given back */
  get inUse(): number {
    return this.capacity - this.available;
  }
}
