/**
 * A fixed ring of equal slots in one SharedArrayBuffer, for handing bytes to a worker thread
 * without allocating per chunk: the sender copies a piece into a free slot and posts the slot's
 * number; the worker reads it and acks, which frees the slot. Memory is the ring, whatever
 * the stream sizes, and a sender waiting for a slot is backpressure.
 */
export class SlotRing {
  readonly buffer: SharedArrayBuffer;
  private readonly free: number[];
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(
    readonly slotBytes: number,
    slots: number,
  ) {
    this.buffer = new SharedArrayBuffer(slotBytes * slots);
    this.free = Array.from({ length: slots }, (_, i) => i);
  }

  /** A free slot, waiting for one if needed; null once the ring is closed (its worker is gone). */
  async acquire(): Promise<number | null> {
    for (;;) {
      if (this.closed) return null;
      const slot = this.free.pop();
      if (slot !== undefined) return slot;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  release(slot: number): void {
    if (this.closed) return;
    this.free.push(slot);
    this.waiters.shift()?.();
  }

  /** Copies `src` into `slot` from byte `at` on (it must fit). */
  fill(slot: number, src: Uint8Array, at = 0): void {
    new Uint8Array(this.buffer, slot * this.slotBytes + at, src.length).set(src);
  }

  /** The ring is no longer served: waiters and later acquires get null. */
  close(): void {
    this.closed = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
