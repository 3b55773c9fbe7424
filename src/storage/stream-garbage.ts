import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Prompt collection of the chunks that streaming a blob leaves behind.
 *
 * Why: every socket read of an upload (and every chunk of a `read` stream) is a new Buffer
 * whose bytes live outside V8's heap. They are freed only when a collection finds the Buffer
 * dead, and the JavaScript objects of a stream are so small that V8 collects late: 40-60 MB
 * of finished chunks sat resident during a 1 GiB upload. A minor collection (a scavenge: it
 * visits only live young objects, well under a millisecond here) after every RELIEF_BYTES
 * streamed keeps that near RELIEF_BYTES whatever the blob size: a 1 GiB upload peaked at
 * 141-148 MB instead of 163-176, at the same rate (README.md, "Benchmark"). Downloads make no
 * such garbage: they reuse two buffers (src/http/send-blob.ts).
 *
 * A smaller young generation for the whole thread would free them as soon, but slowed manifest
 * and HEAD requests by 5-20%; this costs only the streams that make the garbage.
 */
export const RELIEF_BYTES = 8 * 1024 * 1024;

export type Collect = () => void;

/** Counts streamed bytes and collects once per `everyBytes`. */
export class GarbageRelief {
  private since = 0;

  constructor(
    private readonly everyBytes: number,
    private readonly collect: Collect | null,
  ) {}

  /** `n` more bytes were streamed (their chunks are garbage once written). */
  streamed(n: number): void {
    if (this.collect === null) return;
    this.since += n;
    if (this.since < this.everyBytes) return;
    this.since = 0;
    this.collect();
  }
}

/**
 * V8's minor collection, when it can be had: `--expose-gc` set at run time takes effect for
 * contexts created afterwards, so a fresh context hands out `gc` without a command-line flag.
 * Null if this runtime refuses (the relief then does nothing).
 */
export function minorCollector(): Collect | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    if (typeof gc !== 'function') return null;
    return () => (gc as (options: { type: 'minor' }) => void)({ type: 'minor' });
  } catch {
    return null;
  }
}

/** The process-wide relief for blob streams (all of them run on the main thread). */
export const streamGarbage = new GarbageRelief(RELIEF_BYTES, minorCollector());

/** `source` as is, its chunks counted towards the relief as they pass. */
export function withGarbageRelief(source: Readable, relief: GarbageRelief = streamGarbage): Readable {
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      relief.streamed(chunk.length);
      done(null, chunk);
    },
  });
  // pipeline passes a source failure on (the reader sees the error) and destroying the
  // returned stream (a client gone) closes the source
  pipeline(source, counted).catch(() => undefined);
  return counted;
}
