import { createHash } from 'node:crypto';
import { monotonicMs } from '../domain/clock.ts';
import { digestAlgorithm, type Digest } from '../domain/digest.ts';
import { isVolregError } from '../domain/errors.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/**
 * Scrub: re-hashes every blob in the store, as a scheduled check that the disk still holds what
 * was acknowledged (images pushed by OCI clients included, which no snapshot verify reads).
 *
 * A blob is hashed where it lies, read-only, so scrubbing beside a running server disturbs no
 * client. Only bytes that hash wrong are handed to the store's quarantineIfDamaged, which moves
 * them aside and judges what it moved: bytes a push put in place meanwhile stay. A blob set
 * aside is absent, so the next upload of its content (any client: HEAD now says 404) stores it
 * again, and everything that uses it is whole again.
 */

export interface DamagedBlob {
  digest: Digest;
  size: number;
  /** what the bytes hash to now */
  actual: Digest;
  /** where they were moved (BlobStore.quarantineIfDamaged), null when left in place (dry run) or mended meanwhile */
  setAsideAs: string | null;
}

export interface ScrubReport {
  dryRun: boolean;
  /** blobs read to the end, and their bytes */
  blobs: number;
  bytes: number;
  damaged: DamagedBlob[];
  /** blobs deleted (garbage collection) between the listing and their reading */
  vanished: number;
  /** blobs that could not be read (an I/O error): neither judged nor moved */
  unreadable: Array<{ digest: Digest; error: string }>;
  durationMs: number;
}

export interface ScrubOptions {
  store: BlobStore;
  /** report damage, move nothing */
  dryRun?: boolean;
  /** told of each damaged blob as soon as it is judged (a long scrub reports as it goes) */
  onDamaged?: (blob: DamagedBlob) => void;
}

export async function scrubBlobs(opts: ScrubOptions): Promise<ScrubReport> {
  const started = monotonicMs();
  const report: ScrubReport = { dryRun: opts.dryRun === true, blobs: 0, bytes: 0, damaged: [], vanished: 0, unreadable: [], durationMs: 0 };
  for await (const { digest, size } of opts.store.list()) {
    let actual: Digest;
    try {
      actual = await hashOf(opts.store, digest);
    } catch (err) {
      if (isVolregError(err) && err.code === 'BLOB_UNKNOWN') report.vanished++;
      else report.unreadable.push({ digest, error: (err as Error).message });
      continue;
    }
    report.blobs++;
    report.bytes += size;
    if (actual === digest) continue;
    const damaged: DamagedBlob = { digest, size, actual, setAsideAs: opts.dryRun ? null : await opts.store.quarantineIfDamaged(digest) };
    report.damaged.push(damaged);
    opts.onDamaged?.(damaged);
  }
  report.durationMs = Math.round(monotonicMs() - started);
  return report;
}

async function hashOf(store: BlobStore, digest: Digest): Promise<Digest> {
  const algorithm = digestAlgorithm(digest);
  const hash = createHash(algorithm);
  for await (const chunk of await store.read(digest)) hash.update(chunk as Buffer);
  return `${algorithm}:${hash.digest('hex')}` as Digest;
}
