import type { Readable } from 'node:stream';
import type { Digest, DigestAlgorithm } from '../domain/digest.ts';
import type { ByteRange } from '../domain/byte-range.ts';
import { VolregError, explained, isVolregError } from '../domain/errors.ts';
import type { BlobInfo, BlobStore, UploadWriter } from '../storage/blob-store.ts';
import type { BlobService } from './blob-service.ts';

/**
 * Blob upload sessions of the OCI distribution spec: start (POST: a session, a single-request
 * upload, or a cross-repository mount), append chunks (PATCH), status (GET), finish (PUT) and
 * cancel (DELETE), plus purging sessions nobody finished.
 *
 * A session is a document in `uploads` (which repository it belongs to, last activity) plus
 * the blob store's upload of the same id (the bytes and the authoritative offset). Both are
 * shared, so any volreg process on the same data and database can carry a session on.
 */

/** The `uploads` collection (metadata/upload-repository.ts implements it). */
export interface UploadSessions {
  create(s: { id: string; repo: string; driverState?: Record<string, unknown> }): Promise<unknown>;
  find(id: string): Promise<{ id: string; repo: string; lastActivity: Date } | null>;
  /** Marks a session of `repo` active now; false when there is no such session. */
  claim(id: string, repo: string): Promise<boolean>;
  touch(id: string, offset: number): Promise<boolean>;
  delete(id: string): Promise<void>;
  idleSince(olderThan: Date, limit?: number): Promise<Array<{ id: string }>>;
  deleteIfIdle(id: string, olderThan: Date): Promise<boolean>;
}

export interface UploadServiceDeps {
  store: BlobStore;
  blobs: BlobService;
  sessions: UploadSessions;
}

export type StartResult = { kind: 'created'; blob: BlobInfo } | { kind: 'session'; id: string; offset: number };

export interface StartOptions {
  /** single-request upload: the body is the whole blob and must have this digest */
  digest?: Digest;
  /** the body of a single-request upload (required with `digest`) */
  body?: Readable;
  /** its declared length, when known */
  contentLength?: number;
  /** cross-repository mount: the blob to mount... */
  mount?: Digest;
  /** ...and the repository to mount it from (without it volreg opens a session instead) */
  from?: string;
  /** the algorithm of the digest the client will send (digest-algorithm=) */
  algorithm?: DigestAlgorithm;
}

export interface ChunkOptions {
  /** the chunk's Content-Range, when sent */
  range?: ByteRange;
  /** the chunk's Content-Length, when sent */
  contentLength?: number;
  /** see AppendOptions.busy */
  busy?: (busy: boolean) => void;
}

export class UploadService {
  constructor(private readonly deps: UploadServiceDeps) {}

  async start(repo: string, opts: StartOptions = {}): Promise<StartResult> {
    if (opts.mount !== undefined && opts.from !== undefined) {
      const blob = await this.deps.blobs.mount(opts.from, repo, opts.mount);
      if (blob) return { kind: 'created', blob };
      // The spec's fallback when the blob cannot be mounted: an ordinary session.
    }
    if (opts.digest !== undefined && opts.body !== undefined) {
      const blob = await this.deps.blobs.ingest(repo, opts.body, {
        expectedDigest: opts.digest,
        ...(opts.contentLength !== undefined ? { expectedSize: opts.contentLength } : {}),
      });
      return { kind: 'created', blob };
    }
    const writer = await this.deps.store.createUpload({ algorithm: opts.algorithm ?? 'sha256' });
    try {
      await this.deps.sessions.create({ id: writer.id, repo, driverState: { algorithm: opts.algorithm ?? 'sha256' } });
    } catch (err) {
      await writer.cancel().catch(() => undefined);
      throw err;
    }
    return { kind: 'session', id: writer.id, offset: 0 };
  }

  /** The offset of a session of `repo`. */
  async status(repo: string, id: string): Promise<{ id: string; offset: number }> {
    await this.session(repo, id);
    const writer = await this.deps.store.resumeUpload(id);
    return { id, offset: writer.offset };
  }

  /**
   * Appends a chunk. With a Content-Range it must start at the current offset (RANGE_INVALID,
   * detail `{ offset }`, otherwise) and the body must be exactly that long (SIZE_INVALID).
   */
  async append(repo: string, id: string, body: Readable, opts: ChunkOptions = {}): Promise<{ id: string; offset: number }> {
    await this.claim(repo, id);
    const writer = await this.deps.store.resumeUpload(id);
    const offset = await this.appendChunk(writer, body, opts);
    if (!(await this.deps.sessions.touch(id, offset))) throw purgedMeanwhile();
    return { id, offset };
  }

  /**
   * The session, which must belong to `repo`, marked active before its chunk streams (one
   * round trip for both): a purge deciding meanwhile that it is abandoned (its last activity
   * older than its cutoff) then finds it active and keeps it. A session purged just before is
   * gone (404), rather than taking a chunk nobody can finish.
   */
  private async claim(repo: string, id: string): Promise<void> {
    if (!(await this.deps.sessions.claim(id, repo))) throw unknownSession(id);
  }

  /**
   * Appends the final chunk if there is one, verifies the whole upload against `digest` and
   * records the blob. On DIGEST_INVALID or SIZE_INVALID the session is gone (nothing kept);
   * once committed it is gone too, even if recording fails.
   */
  async finish(repo: string, id: string, digest: Digest, body: Readable | null, opts: ChunkOptions = {}): Promise<BlobInfo> {
    await this.claim(repo, id);
    const writer = await this.deps.store.resumeUpload(id);
    // A final chunk without a Content-Range still belongs where this request found the session:
    // a retry of the same PUT racing the first gets 416 instead of doubling the bytes (which
    // failed both and lost the session).
    if (body) await this.appendChunk(writer, body, opts, writer.offset);
    let blob: BlobInfo;
    try {
      blob = await writer.commit(digest);
    } catch (err) {
      // A failed verification discards the driver's session; drop the document with it.
      if (isVolregError(err) && (err.code === 'DIGEST_INVALID' || err.code === 'SIZE_INVALID')) await this.deps.sessions.delete(id);
      throw err;
    }
    // Committed: the driver's session is gone whatever recording says (it may refuse bytes
    // garbage collection took meanwhile, BLOB_UPLOAD_INVALID).
    try {
      await this.deps.blobs.record(repo, blob);
    } catch (err) {
      await this.deps.sessions.delete(id).catch(() => undefined);
      throw err;
    }
    await this.deps.sessions.delete(id);
    return blob;
  }

  async cancel(repo: string, id: string): Promise<void> {
    await this.session(repo, id);
    try {
      await (await this.deps.store.resumeUpload(id)).cancel();
    } catch (err) {
      if (!(isVolregError(err) && err.code === 'BLOB_UPLOAD_UNKNOWN')) throw err;
    }
    await this.deps.sessions.delete(id);
  }

  /**
   * Removes sessions with no activity since `olderThan`: session documents (unless the store
   * saw bytes arrive more recently, e.g. a long chunk still streaming) and store uploads with
   * no live document (single-request uploads cut off by a crash). Returns how many went.
   */
  async purgeAbandoned(olderThan: Date): Promise<number> {
    const activity = new Map<string, Date>();
    const inUse = new Set<string>();
    for await (const u of this.deps.store.listUploads()) {
      if (u.inUse) inUse.add(u.id);
      else activity.set(u.id, u.lastActivity);
    }

    let purged = 0;
    const seen = new Set<string>();
    for (const s of await this.deps.sessions.idleSince(olderThan)) {
      seen.add(s.id);
      if (inUse.has(s.id)) continue;
      const storeActivity = activity.get(s.id);
      if (storeActivity && storeActivity >= olderThan) continue;
      if (!(await this.deps.sessions.deleteIfIdle(s.id, olderThan))) continue;
      activity.delete(s.id);
      purged++;
      // If its bytes cannot go now (busy elsewhere), a later round finds them without a document.
      await this.cancelStoreUpload(s.id).catch(() => undefined);
    }
    for (const [id, last] of activity) {
      if (last >= olderThan || seen.has(id)) continue;
      const doc = await this.deps.sessions.find(id);
      if (doc && doc.lastActivity >= olderThan) continue;
      if (doc && !(await this.deps.sessions.deleteIfIdle(id, olderThan))) continue;
      if (await this.cancelStoreUpload(id).then(() => true, () => false)) purged++;
    }
    return purged;
  }

  private async cancelStoreUpload(id: string): Promise<void> {
    // whatever a crash left of it, too (not only a session that can be resumed)
    await this.deps.store.removeUpload(id);
  }

  /** `pinnedAt`: where a chunk without a Content-Range must start (anywhere when not given). */
  private async appendChunk(writer: UploadWriter, body: Readable, opts: ChunkOptions, pinnedAt?: number): Promise<number> {
    const before = writer.offset;
    try {
      return await this.appendAt(writer, body, opts, pinnedAt);
    } catch (err) {
      throw explained(err, 'STORAGE_FULL', `this chunk was not kept; the upload stays at offset ${before}`, { offset: before });
    }
  }

  private async appendAt(writer: UploadWriter, body: Readable, opts: ChunkOptions, pinnedAt?: number): Promise<number> {
    // a declared length is checked against free space before any byte is read
    if (!opts.range) return writer.append(body, { atOffset: pinnedAt, exactBytes: opts.contentLength, busy: opts.busy });
    // Checked here for a quick answer, and again by the store under the session's lock.
    if (opts.range.start !== writer.offset) {
      throw new VolregError('RANGE_INVALID', 'chunk does not start at the current offset', { offset: writer.offset });
    }
    const length = opts.range.end - opts.range.start + 1;
    if (opts.contentLength !== undefined && opts.contentLength !== length) {
      throw new VolregError('SIZE_INVALID', 'Content-Length does not match Content-Range', { contentLength: opts.contentLength, range: opts.range });
    }
    return writer.append(body, { atOffset: opts.range.start, exactBytes: length, busy: opts.busy });
  }

  /** The session document, which must belong to `repo`: BLOB_UPLOAD_UNKNOWN otherwise. */
  private async session(repo: string, id: string): Promise<void> {
    const s = await this.deps.sessions.find(id);
    if (!s || s.repo !== repo) throw unknownSession(id);
  }
}

function unknownSession(id: string): VolregError {
  return new VolregError('BLOB_UPLOAD_UNKNOWN', undefined, { uuid: id.slice(0, 64) });
}

function purgedMeanwhile(): VolregError {
  return new VolregError('BLOB_UPLOAD_UNKNOWN', 'the upload session was purged as abandoned');
}
