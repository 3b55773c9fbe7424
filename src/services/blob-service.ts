import { PassThrough, Readable } from 'node:stream';
import { digestAlgorithm, type Digest } from '../domain/digest.ts';
import { resolveRange, resolveRanges, type ByteRange } from '../domain/byte-range.ts';
import { VolregError, explained, isVolregError } from '../domain/errors.ts';
import type { BlobInfo, BlobReader, BlobStore, UploadWriter } from '../storage/blob-store.ts';
import { writeOrWait } from '../domain/stream-write.ts';

/**
 * Blobs as repositories see them. A blob is visible in a repository only while a blob unit for
 * its digest is associated with that repository; the bytes are shared by all repositories
 * and stay until garbage collection.
 *
 * Write order (no multi-document transactions needed): bytes committed and durable in the blob
 * store, then the unit upserted, then the repository created and the unit associated. A crash
 * in between leaves only unreferenced data for garbage collection.
 */

export interface BlobUnit {
  id: string;
  digest: Digest;
  size: number;
}

/** The blob units of the metadata layer (metadata/blob-repository.ts implements it). */
export interface BlobUnits {
  upsert(digest: Digest, size: number): Promise<BlobUnit>;
  findByDigest(digest: Digest): Promise<BlobUnit | null>;
  /** the unit of `digest` if `repoId` holds it, and when that association was last refreshed (ISO 8601) */
  findInRepo(repoId: string, digest: Digest): Promise<(BlobUnit & { associationUpdated: string }) | null>;
  /** is this very unit (by id) still recorded? (the database's answer, not a remembered one) */
  stillExists(unit: BlobUnit): Promise<boolean>;
}

/** Repository membership (metadata/repo-content-repository.ts implements it). */
export interface BlobMembership {
  ensureRepo(repoId: string): Promise<void>;
  /** true when this call created the association */
  associate(repoId: string, unitType: 'docker_blob', unitId: string): Promise<boolean>;
  disassociate(repoId: string, unitType: 'docker_blob', unitIds: string[]): Promise<void>;
  /** refreshes the association's `updated` if it is still the one `seen`; false if it is gone or changed */
  refresh(repoId: string, unitType: 'docker_blob', unitId: string, seen: string): Promise<boolean>;
}

export interface BlobServiceDeps {
  store: BlobStore;
  units: BlobUnits;
  membership: BlobMembership;
  /**
   * A blob a HEAD finds is held again (its association refreshed) when the association is older
   * than this (see stat); undefined: never. Below garbage collection's grace period, so a client
   * that skips an upload because HEAD found the blob gets a whole grace period for its push.
   */
  refreshHeldAfterMs?: number;
}

export interface IngestOptions {
  /** the digest the bytes must have (its algorithm is the one computed); DIGEST_INVALID otherwise */
  expectedDigest?: Digest;
  /** the exact size the bytes must have; SIZE_INVALID otherwise */
  expectedSize?: number;
  /** refuse (TOO_LARGE) past this many bytes */
  maxBytes?: number;
  /**
   * Reads the same bytes concurrently (e.g. to prove they are a tar). The upload waits for
   * both consumers, so neither is outrun. The blob is committed only if this resolves; if it
   * rejects, its error is thrown and nothing is kept. If it resolves before reading all the
   * bytes, the rest is not fed to it.
   */
  validate?: (tee: Readable) => Promise<void>;
}

/** Which bytes of a blob a read gets: the blob, and the range asked for or null for all of it. */
export interface BlobSpan {
  blob: BlobInfo;
  /** the range served, or null for the whole blob */
  range: ByteRange | null;
}

export interface OpenedBlob extends BlobSpan {
  stream: Readable;
}

/** A blob opened to be sent: read into the sender's own buffers (BlobStore.openReader). */
export interface BlobToSend extends BlobSpan {
  reader: BlobReader;
}

/** Several ranges of a blob to send, each read by a reader opened when its turn comes. */
export interface BlobPartsToSend {
  blob: BlobInfo;
  parts: ByteRange[];
  open(range: ByteRange): Promise<BlobReader>;
}

const BLOB = 'docker_blob' as const;

export class BlobService {
  constructor(private readonly deps: BlobServiceDeps) {}

  /**
   * The blob if `repo` holds it and its bytes are there; null otherwise (a HEAD). A client that
   * finds a blob this way skips its upload and references it in a manifest moments later, so an
   * association older than `refreshHeldAfterMs` is refreshed first: garbage collection then sees
   * a young association (and its conditional delete misses), as after an upload. A refresh that
   * finds the association gone (collected meanwhile) answers null: the client uploads.
   */
  async stat(repo: string, digest: Digest): Promise<BlobInfo | null> {
    // The bytes' stat does not depend on the metadata: it runs meanwhile and counts only if the repository holds the blob.
    const bytes = this.deps.store.stat(digest);
    bytes.catch(() => undefined); // awaited below, unless the metadata says no
    let held = await this.deps.units.findInRepo(repo, digest);
    const refreshAfter = this.deps.refreshHeldAfterMs;
    if (held && refreshAfter !== undefined && Date.parse(held.associationUpdated) < Date.now() - refreshAfter) {
      if (!(await this.deps.membership.refresh(repo, BLOB, held.id, held.associationUpdated))) {
        held = await this.deps.units.findInRepo(repo, digest); // refreshed by another request, or collected
      }
    }
    if (!held) return null;
    return bytes;
  }

  /**
   * Opens a blob of `repo` for reading, honouring an HTTP `Range` header value (see
   * domain/byte-range.ts). BLOB_UNKNOWN when the repository does not hold it.
   */
  async open(repo: string, digest: Digest, opts: { range?: string } = {}): Promise<OpenedBlob> {
    const span = await this.span(repo, digest, opts.range);
    return { ...span, stream: await this.deps.store.read(digest, span.range ?? undefined) };
  }

  /** As `open`, for sending the bytes (an HTTP response body) with buffers of the sender's own. */
  async openToSend(repo: string, digest: Digest, opts: { range?: string } = {}): Promise<BlobToSend> {
    const span = await this.span(repo, digest, opts.range);
    return { ...span, reader: await this.deps.store.openReader(digest, span.range ?? undefined) };
  }

  /**
   * As openToSend, for a request that may ask for several ranges (domain/byte-range.ts,
   * resolveRanges): those give the ranges and a way to open each, one after the other.
   */
  async openRangesToSend(repo: string, digest: Digest, opts: { range?: string } = {}): Promise<BlobToSend | BlobPartsToSend> {
    const blob = await this.heldBlob(repo, digest);
    const wanted = resolveRanges(opts.range, blob.size);
    if (wanted.kind === 'multipart') return { blob, parts: wanted.ranges, open: (r) => this.deps.store.openReader(digest, r) };
    const range = wanted.kind === 'partial' ? wanted.range : null;
    return { blob, range, reader: await this.deps.store.openReader(digest, range ?? undefined) };
  }

  private async span(repo: string, digest: Digest, rangeHeader: string | undefined): Promise<BlobSpan> {
    const blob = await this.heldBlob(repo, digest);
    const wanted = resolveRange(rangeHeader, blob.size);
    return { blob, range: wanted.kind === 'partial' ? wanted.range : null };
  }

  /** The blob, if `repo` holds it; BLOB_UNKNOWN otherwise. */
  private async heldBlob(repo: string, digest: Digest): Promise<BlobInfo> {
    const blob = await this.stat(repo, digest);
    if (!blob) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
    return blob;
  }

  /**
   * Called when bytes read back did not match their digest: the store re-hashes them and, if
   * damaged, moves them where the operator finds them (BlobStore.quarantineIfDamaged). The blob
   * then reads as absent in every repository, so clients upload it again instead of skipping
   * it, and that upload mends it. The place, or null when the bytes in place are right.
   */
  async quarantineIfDamaged(digest: Digest): Promise<string | null> {
    return this.deps.store.quarantineIfDamaged(digest);
  }

  /** Removes the blob from `repo` (other repositories keep it; bytes stay until GC). */
  async delete(repo: string, digest: Digest): Promise<void> {
    const unit = await this.deps.units.findInRepo(repo, digest);
    if (!unit) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
    await this.deps.membership.disassociate(repo, BLOB, [unit.id]);
  }

  /** Makes a blob `fromRepo` holds visible in `toRepo` too; null when `fromRepo` lacks it. */
  async mount(fromRepo: string, toRepo: string, digest: Digest): Promise<BlobInfo | null> {
    const blob = await this.stat(fromRepo, digest);
    if (!blob) return null;
    try {
      await this.record(toRepo, blob);
    } catch (err) {
      // collected meanwhile: as if `fromRepo` lacked it (the client then uploads the bytes)
      if (isVolregError(err) && err.code === 'BLOB_UPLOAD_INVALID') return null;
      throw err;
    }
    return blob;
  }

  /**
   * Records committed, durable bytes as a blob of `repo`: upserts the unit, creates the
   * repository if needed and associates the unit with it.
   */
  async record(repo: string, blob: BlobInfo): Promise<void> {
    await this.deps.membership.ensureRepo(repo);
    const { unit, added } = await this.holdUnit(repo, blob);
    // Garbage collection removes bytes only while no unit names their digest, and decides that
    // while it holds them aside. With a grace period shorter than the time since the bytes were
    // committed, it may have decided before the unit's upsert: then they are gone and the blob
    // must not become visible. Checked after the unit exists, so one of the two sees the other.
    if (!(await this.bytesStayed(blob.digest))) {
      if (added) await this.deps.membership.disassociate(repo, BLOB, [unit.id]);
      throw new VolregError('BLOB_UPLOAD_INVALID', 'garbage collection removed these bytes while the blob was being recorded; upload it again', {
        digest: blob.digest,
      });
    }
  }

  /**
   * Upserts the digest's unit and associates it with `repo`. Garbage collection may delete a unit
   * it found unheld between the upsert (which reused it) and the association: checked after the
   * association, so either the collection sees it (and keeps or restores the unit) or this sees
   * the unit gone, drops the association to it and records a new one.
   */
  private async holdUnit(repo: string, blob: BlobInfo): Promise<{ unit: BlobUnit; added: boolean }> {
    for (let attempt = 1; ; attempt++) {
      const unit = await this.deps.units.upsert(blob.digest, blob.size);
      const added = await this.deps.membership.associate(repo, BLOB, unit.id);
      if (await this.deps.units.stillExists(unit)) return { unit, added };
      await this.deps.membership.disassociate(repo, BLOB, [unit.id]);
      if (attempt === 3) throw new VolregError('BLOB_UPLOAD_INVALID', 'garbage collection kept removing this blob while it was being recorded; upload it again', { digest: blob.digest });
    }
  }

  /**
   * Are the bytes in the store? A guarded delete that decided to keep them puts them back
   * within moments, so a miss is looked at twice more before it counts.
   */
  private async bytesStayed(digest: Digest): Promise<boolean> {
    for (const wait of [0, 20, 200]) {
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (await this.deps.store.stat(digest)) return true;
    }
    return false;
  }

  /**
   * Streams `source` into a new upload, verifies it (digest, size, `validate`) and records it
   * as a blob of `repo`. Anything failing cancels the upload: nothing becomes visible and no
   * session is left behind.
   */
  async ingest(repo: string, source: Readable, opts: IngestOptions = {}): Promise<BlobInfo> {
    if (opts.expectedSize !== undefined && opts.maxBytes !== undefined && opts.expectedSize > opts.maxBytes) {
      throw new VolregError('TOO_LARGE', 'upload exceeds the size limit', { limit: opts.maxBytes });
    }
    const algorithm = opts.expectedDigest ? digestAlgorithm(opts.expectedDigest) : 'sha256';
    let started: UploadWriter | undefined;
    try {
      const writer = (started = await this.deps.store.createUpload({ algorithm }));
      const limits = opts.expectedSize !== undefined ? { exactBytes: opts.expectedSize } : opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {};
      if (opts.validate) {
        await appendValidated(source, opts.validate, (input) => writer.append(input, limits));
      } else {
        await writer.append(source, limits);
      }
      const blob = await writer.commit(opts.expectedDigest, opts.expectedSize);
      await this.record(repo, blob);
      return blob;
    } catch (err) {
      await started?.cancel().catch(() => undefined);
      throw explained(err, 'STORAGE_FULL', 'nothing of this upload was kept');
    }
  }
}

/**
 * Feeds `source` to `append` and to `validate` at once. Each chunk goes to the validator's
 * stream first (waiting for it to drain), then to the writer, so memory stays bounded by
 * the two consumers' buffers. Resolves when both are done; rejects with the validator's error
 * if it refused the bytes, else with the writer's.
 */
async function appendValidated(
  source: Readable,
  validate: (tee: Readable) => Promise<void>,
  append: (input: Readable) => Promise<number>,
): Promise<void> {
  const tee = new PassThrough({ highWaterMark: 1 << 18 });
  // The validator learns of failures by reading; a tee it stopped reading must not crash us.
  tee.on('error', () => undefined);
  let verdict: { ok: true } | { ok: false; err: unknown } | null = null;
  let wake: (() => void) | null = null;
  const validation = Promise.resolve()
    .then(() => validate(tee))
    .then(
      () => {
        verdict = { ok: true };
        wake?.();
      },
      (err: unknown) => {
        verdict = { ok: false, err };
        wake?.();
        throw err;
      },
    );
  validation.catch(() => undefined); // observed below

  let refusedByValidator = false;
  async function* feed(): AsyncGenerator<Buffer> {
    const chunks: AsyncIterable<unknown> = { [Symbol.asyncIterator]: () => source.iterator({ destroyOnReturn: false }) };
    for await (const chunk of chunks) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      if (verdict === null) {
        await writeOrWait(tee, buf, (done) => (wake = done));
        wake = null;
      }
      const v = verdict as { ok: boolean; err?: unknown } | null;
      if (v && !v.ok) {
        refusedByValidator = true;
        throw v.err;
      }
      yield buf;
    }
    tee.end();
  }

  const input = Readable.from(feed(), { objectMode: false, highWaterMark: 1 << 16 });
  const appended = append(input).catch((err: unknown) => {
    // Stop the validator too, or it would wait forever for bytes that will not come.
    input.destroy();
    tee.destroy(err instanceof Error ? err : new Error('upload failed'));
    throw err;
  });
  const [a, v] = await Promise.allSettled([appended, validation]);
  if (refusedByValidator && v.status === 'rejected') throw v.reason;
  if (a.status === 'rejected') throw a.reason;
  if (v.status === 'rejected') throw v.reason;
}
