import { randomUUID } from 'node:crypto';
import { constants as fsConstants, lstatSync } from 'node:fs';
import { access, lstat, mkdir, open, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { digestAlgorithm, digestHex, isSupportedAlgorithm, type Digest, type DigestAlgorithm } from '../domain/digest.ts';
import { VolregError, isVolregError } from '../domain/errors.ts';
import type { AppendOptions, BlobInfo, BlobReader, BlobStore, ByteRange, DeleteOptions, StoredBlob, UploadSummary, UploadWriter } from './blob-store.ts';
import { SessionLocks } from './fs-lock.ts';
import { FreeSpace } from './free-space.ts';
import { entries, fsyncCreatedDirs, fsyncDir, isMissing, isOutOfSpace, putBack } from './fs-ops.ts';
import { HashWorker, HashWorkerError } from './hash-worker.ts';
import { ByteBudget } from './byte-budget.ts';
import { copyInto } from './pipelined-copy.ts';
import { FileRangeReader } from './file-range-reader.ts';
import { withGarbageRelief } from './stream-garbage.ts';
import { readSessionState, writeSessionState, type SessionState } from './upload-state.ts';
import { claimStoreMark, readStoreMark } from './store-mark.ts';
import { WriteBack } from './write-back.ts';
import {
  ASIDE_MARK,
  UPLOAD_ID,
  algorithmDir,
  blobAsidePath,
  blobDir,
  blobPath,
  blobsRoot,
  quarantinePath,
  uploadDataPath,
  uploadDir,
  uploadLockPath,
  uploadStatePath,
  uploadsRoot,
  storeMarkPath,
} from './paths.ts';

/**
 * The filesystem blob store (layout in paths.ts).
 *
 * Uploads: bytes go to `uploads/<id>/data` at explicit positions (pipelined-copy.ts); after
 * each append `state.json` records the new offset in one write that cannot be half done
 * (upload-state.ts), so a crashed process leaves a session at its last completed append.
 * Appends do not wait for the disk (write-back.ts flushes in the background): the durability
 * that matters is the blob's, and a session that lost bytes in a machine crash resumes at what
 * reached the disk (the offset is clamped to the data file's size). Uploads keep a reserve of
 * free space (free-space.ts); running out of space is STORAGE_FULL, never a half-kept chunk. Committing verifies digest and size, fsyncs, renames the data file onto
 * `blobs/<alg>/<2>/<hex>` and fsyncs that directory: a blob path only ever holds verified,
 * durable bytes. A failed sync ends the upload (lose): it is never retried and trusted. A commit onto an existing blob replaces it with the bytes just verified: the file
 * there may have been damaged at rest, and a client sending the content again is the chance to
 * mend it.
 *
 * Hash state across requests: Node's Hash cannot be serialized, so none is persisted. Each
 * store keeps the live hash of recently used sessions (at most HASH_CACHE_SIZE) on its hash
 * worker thread (hash-worker.ts), which hashes while this thread does the I/O. Bytes below the
 * durable offset never change, so a cached hash that is behind (another process appended) is
 * caught up by reading just the missing bytes, and a session this process has not seen (after
 * a restart, or started elsewhere, or whose hash was lost with a worker) is re-hashed from its
 * data file once, on its first append or commit. Memory per session is one hash state.
 */

const HASH_CACHE_SIZE = 256;

/**
 * Bytes all uploads together may hold between the client and the disk (byte-budget.ts): about
 * 25 uploads at full speed each, more at less; one upload uses about 2.5 MB of it.
 */
const UPLOAD_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

/**
 * Chunks of a `read` stream (re-hashing on verify, reading a config). Blobs sent to clients go
 * through `openReader` into the sender's own buffers (src/http/send-blob.ts).
 */
const READ_CHUNK_BYTES = 1024 * 1024;

/** What the hash worker holds for a session: its algorithm, how far it got, from which worker. */
interface CachedHash {
  algorithm: DigestAlgorithm;
  offset: number;
  generation: number;
}

export interface FsBlobStoreOptions {
  /** the data directory; blobs/ and uploads/ are created under it */
  root: string;
  /** how long a request waits for a session another process is working on (default 10 s) */
  lockWaitMs?: number;
  /** a session lock from another host unrefreshed for this long is stale (default 60 s) */
  lockStaleMs?: number;
  /** a blob a guarded delete moved aside longer ago than this was left by a crash (default 60 s) */
  asideStaleMs?: number;
  /** uploads are refused before they would leave less free space than this (default 0: no reserve) */
  minFreeBytes?: number;
  /**
   * How free space is measured (default: statfs of the root). Tests that share a disk with
   * others measure a disk of their own making.
   */
  freeBytes?: (root: string) => Promise<number>;
}

export class FsBlobStore implements BlobStore {
  readonly root: string;
  private readonly locks: SessionLocks;
  private readonly hashes = new Map<string, CachedHash>();
  private readonly hasher = new HashWorker();
  private readonly writeBack = new WriteBack();
  private readonly uploadBytes = new ByteBudget(UPLOAD_BYTES_IN_FLIGHT);
  private readonly asideStaleMs: number;
  private readonly space: FreeSpace;
  /** why the last commit could not put its blob in place (or make it durable), until one can (see ping) */
  private placeRefused: string | undefined;
  /** sessions a failed sync ended (lose) whose files the disk may have refused to remove */
  private readonly lost = new Set<string>();

  private constructor(opts: FsBlobStoreOptions) {
    this.root = opts.root;
    this.asideStaleMs = opts.asideStaleMs ?? 60_000;
    this.space = new FreeSpace(opts.root, opts.minFreeBytes ?? 0, opts.freeBytes);
    this.locks = new SessionLocks({ waitMs: opts.lockWaitMs ?? 10_000, staleMs: opts.lockStaleMs ?? 60_000 });
  }

  /** Opens (creating when needed) a store rooted at `opts.root`. */
  static async open(opts: FsBlobStoreOptions): Promise<FsBlobStore> {
    await mkdir(blobsRoot(opts.root), { recursive: true });
    await mkdir(uploadsRoot(opts.root), { recursive: true });
    return new FsBlobStore(opts);
  }

  /** Where the mark naming the metadata database of these blobs is (store-mark.ts, metadata/store-binding.ts). */
  get markPath(): string {
    return storeMarkPath(this.root);
  }

  readMark(): Promise<string | null> {
    return readStoreMark(this.root);
  }

  claimMark(id: string): Promise<string> {
    return claimStoreMark(this.root, id);
  }

  /** Forgets in-memory state; locks this instance held are treated as stale afterwards. */
  close(): void {
    this.locks.close();
    this.hashes.clear();
    this.hasher.close();
  }

  // Only a regular file in a real directory of blobs/ is a blob (lstat, O_NOFOLLOW): commits
  // only ever put one there, and a symlink someone put in blobs/ (for a blob or for its
  // two-hex directory) must not serve or take bytes elsewhere. blobs/ itself may be a symlink
  // (to another disk).
  //
  // Asked on this thread, not through the file thread pool: every blob HEAD stats, and a manifest
  // push stats each blob it references. A hand-over to the pool and the wake-ups back cost about
  // ten times the two lstat calls on names the kernel holds (the blobs in use), and those calls
  // no longer wait behind reads and writes of large blobs in the pool. Measured: about 15% less
  // CPU per manifest PUT and 20% per blob HEAD.
  async stat(digest: Digest): Promise<BlobInfo | null> {
    try {
      const s = lstatSync(blobPath(this.root, digest));
      const dir = lstatSync(blobDir(this.root, digest));
      return s.isFile() && dir.isDirectory() ? { digest, size: s.size } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw this.refusedRead(err, digest);
    }
  }

  async read(digest: Digest, range?: ByteRange): Promise<Readable> {
    const { fh, start, length } = await this.openRange(digest, range);
    const file = fh.createReadStream({
      start,
      ...(length > 0 ? { end: start + length - 1 } : {}),
      // no bigger than the bytes to send: reading a small blob allocates no whole chunk
      highWaterMark: Math.max(1, Math.min(READ_CHUNK_BYTES, length)),
      autoClose: true,
    });
    // every chunk read is a new buffer: a read of more than one has its garbage collected promptly
    return length > READ_CHUNK_BYTES ? withGarbageRelief(file) : file;
  }

  async openReader(digest: Digest, range?: ByteRange): Promise<BlobReader> {
    const { fh, start, length } = await this.openRange(digest, range);
    return new FileRangeReader(fh, start, length);
  }

  /**
   * Opens a committed blob and checks the range against its size. The open descriptor keeps
   * the bytes readable even if the blob is deleted meanwhile.
   */
  private async openRange(digest: Digest, range?: ByteRange): Promise<{ fh: FileHandle; start: number; length: number }> {
    let fh: FileHandle;
    try {
      if (!(await lstat(blobDir(this.root, digest))).isDirectory()) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
      fh = await open(blobPath(this.root, digest), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    } catch (err) {
      if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'ELOOP') throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
      throw this.refusedRead(err, digest);
    }
    try {
      const found = await fh.stat();
      if (!found.isFile()) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
      const { size } = found;
      if (range && (range.start < 0 || range.start > range.end || range.end >= size)) {
        throw new VolregError('RANGE_INVALID', 'range outside the blob', { size }, { 'Content-Range': `bytes */${size}` });
      }
      return { fh, start: range?.start ?? 0, length: range ? range.end - range.start + 1 : size };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async delete(digest: Digest, opts: DeleteOptions = {}): Promise<boolean> {
    const target = blobPath(this.root, digest);
    if (opts.unmodifiedSince === undefined && opts.confirm === undefined) {
      try {
        await unlink(target);
        return true;
      } catch (err) {
        if (isMissing(err)) return false;
        throw err;
      }
    }
    // Guarded: moved aside first, so a commit of the same digest meanwhile writes a fresh blob
    // (or refreshed this one before the move, which the time check below then sees).
    const aside = blobAsidePath(this.root, digest, randomUUID());
    try {
      await rename(target, aside);
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
    let remove = false;
    try {
      const { mtime } = await stat(aside);
      remove = (opts.unmodifiedSince === undefined || mtime < opts.unmodifiedSince) && (opts.confirm ? await opts.confirm() : true);
    } finally {
      if (!remove) await putBack(aside, target);
    }
    try {
      await unlink(aside);
      return true;
    } catch (err) {
      if (isMissing(err)) return false; // list() put it back meanwhile
      throw err;
    }
  }

  async modified(digest: Digest): Promise<Date | null> {
    try {
      const s = await lstat(blobPath(this.root, digest));
      return s.isFile() ? s.mtime : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const alg of ['sha256', 'sha512'] as const) {
      const hexLength = alg === 'sha256' ? 64 : 128;
      for await (const prefix of entries(algorithmDir(this.root, alg))) {
        if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
        const dir = `${algorithmDir(this.root, alg)}/${prefix}`;
        if (!(await lstat(dir).catch(() => null))?.isDirectory()) continue; // not ours (see stat): never listed, so never collected
        for await (const name of entries(dir)) {
          const hex = name.slice(0, hexLength);
          if (!hex.startsWith(prefix) || !/^[0-9a-f]+$/.test(hex) || hex.length !== hexLength) continue;
          const digest = `${alg}:${hex}` as Digest;
          if (name.length > hexLength) {
            if (name.slice(hexLength).startsWith(ASIDE_MARK)) await this.restoreAside(`${dir}/${name}`, blobPath(this.root, digest));
            continue;
          }
          const s = await lstat(`${dir}/${name}`).catch(() => null);
          if (s?.isFile()) yield { digest, size: s.size, modified: s.mtime };
        }
      }
    }
  }

  async quarantineIfDamaged(digest: Digest): Promise<string | null> {
    const target = blobPath(this.root, digest);
    const place = quarantinePath(this.root, digest, new Date());
    const dir = dirname(place);
    const created = await mkdir(dir, { recursive: true });
    if (created !== undefined) await fsyncCreatedDirs(dir, created);
    // Moved first, hashed after: a commit may put right bytes in place at any moment, and what
    // was moved is then exactly what gets judged (hashing in place could move the new bytes).
    try {
      await rename(target, place);
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
    let intact: boolean;
    try {
      intact = (await this.hashFile(place, digestAlgorithm(digest))) === digestHex(digest);
    } catch (err) {
      await putBack(place, target);
      throw err;
    }
    if (intact) {
      await putBack(place, target);
      return null;
    }
    await fsyncDir(blobDir(this.root, digest));
    await fsyncDir(dir);
    return relative(this.root, place);
  }

  /** The hex digest of a file's first `end` bytes (all of them by default), hashed on the hash worker. */
  private async hashFile(path: string, algorithm: DigestAlgorithm, end?: number): Promise<string> {
    const key = `file:${randomUUID()}`;
    this.hasher.create(key, algorithm);
    try {
      await this.hasher.feedFile(key, path, 0, end ?? (await stat(path)).size).catch(fromHashWorker);
      return await this.hasher.digest(key).catch(fromHashWorker);
    } finally {
      this.hasher.drop(key);
    }
  }

  // A guarded delete decides within milliseconds; an aside file older than that was left by a
  // crash mid-decision, so it goes back (the next garbage collection decides again).
  private async restoreAside(aside: string, target: string): Promise<void> {
    const s = await stat(aside).catch(() => null);
    if (s && Date.now() - s.ctimeMs > this.asideStaleMs) await putBack(aside, target);
  }

  async createUpload(opts: { algorithm?: DigestAlgorithm } = {}): Promise<UploadWriter> {
    const algorithm = opts.algorithm ?? 'sha256';
    if (!isSupportedAlgorithm(algorithm)) throw new VolregError('UNSUPPORTED', 'unsupported digest algorithm');
    await this.space.ensure(0);
    const id = randomUUID();
    const now = new Date().toISOString();
    const state: SessionState = { version: 1, algorithm, offset: 0, started: now, updated: now };
    try {
      await mkdir(uploadDir(this.root, id));
      const data = await open(uploadDataPath(this.root, id), 'wx');
      await data.close();
      await writeSessionState(this.root, id, state, { durable: true });
      await fsyncDir(uploadsRoot(this.root));
    } catch (err) {
      await rm(uploadDir(this.root, id), { recursive: true, force: true }).catch(() => undefined);
      throw asStorageFull(err, 'no space left to start an upload');
    }
    this.hasher.create(id, algorithm);
    this.remember(id, { algorithm, offset: 0, generation: this.hasher.generation });
    return new FsUploadWriter(this, id, state);
  }

  async resumeUpload(id: string): Promise<UploadWriter> {
    if (!UPLOAD_ID.test(id)) throw new VolregError('BLOB_UPLOAD_UNKNOWN');
    return new FsUploadWriter(this, id, await this.loadSession(id));
  }

  async *listUploads(): AsyncIterable<UploadSummary> {
    for await (const id of entries(uploadsRoot(this.root))) {
      if (!UPLOAD_ID.test(id)) continue;
      // A session a request is working on (its lock held) is active whatever its files say:
      // writes are buffered, so a chunk trickling in can leave the data file's mtime behind.
      if (await this.locks.isHeld(uploadLockPath(this.root, id))) {
        yield { id, lastActivity: new Date(), inUse: true };
        continue;
      }
      // Otherwise the data file's mtime moves with every write.
      const times = await Promise.all(
        [uploadDir(this.root, id), uploadDataPath(this.root, id), uploadStatePath(this.root, id)].map((p) =>
          stat(p).then(
            (s) => s.mtimeMs,
            () => 0,
          ),
        ),
      );
      const last = Math.max(...times);
      if (last > 0) yield { id, lastActivity: new Date(last), inUse: false };
    }
  }

  async ping(): Promise<void> {
    const dirs = [blobsRoot(this.root), uploadsRoot(this.root)];
    // both at once: each waits its turn in the file thread pool, which downloads may keep busy
    const outcomes = await Promise.allSettled(dirs.map((dir) => access(dir, fsConstants.W_OK)));
    for (const [i, outcome] of outcomes.entries()) {
      if (outcome.status === 'rejected') {
        const err = outcome.reason as NodeJS.ErrnoException;
        throw new Error(`${relative(this.root, dirs[i]!)}/ cannot be written (${err.code ?? String(err)})`);
      }
    }
    // a directory below blobs/ the filesystem refuses (permissions, read-only): not ready until a commit succeeds again
    if (this.placeRefused) throw new Error(this.placeRefused);
  }

  /** The commit's failure to put a blob in place: a refusal of the filesystem is said as such (503) and remembered for ping. */
  private refusedPlace(err: unknown, dir: string): unknown {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') return err;
    return this.placeRefusal(`the blob storage refuses writes in ${relative(this.root, dir)} (${code}); fix the data directory's permissions or mount`);
  }

  /**
   * A blob the filesystem will not let this process read (a file left by another user, root
   * among them, with a mode that shuts this one out): a 503 saying so, not a 500 that says nothing.
   */
  private refusedRead(err: unknown, digest: Digest): unknown {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') return err;
    return new VolregError('UNAVAILABLE', `the blob storage refuses to read ${relative(this.root, blobPath(this.root, digest))} (${code}); fix the data directory's permissions`);
  }

  private placeRefusal(reason: string): VolregError {
    this.placeRefused = reason;
    return new VolregError('UNAVAILABLE', `${reason}; the upload is kept, finish it again once that is done`);
  }

  // ---- upload internals, used by FsUploadWriter ------------------------------------------

  /** @internal */
  async appendTo(writer: FsUploadWriter, source: Readable, opts: AppendOptions): Promise<SessionState> {
    const id = writer.id;
    const appended = this.locks.run(id, uploadLockPath(this.root, id), async () => {
      const state = await this.loadSession(id);
      if (opts.atOffset !== undefined && opts.atOffset !== state.offset) {
        throw new VolregError('RANGE_INVALID', 'chunk does not start at the current offset', { offset: state.offset });
      }
      // A declared length is checked before any byte is read; a stream of unknown length as it goes.
      await this.space.ensure(opts.exactBytes ?? 0);
      opts.busy?.(true);
      try {
        await this.hashAt(id, state);
      } finally {
        opts.busy?.(false);
      }
      const generation = this.hasher.generation;
      let hashed = 0;
      const path = uploadDataPath(this.root, id);
      const fh = await openData(this.root, id, 'r+');
      let written: number;
      try {
        // Bytes past the offset are the remains of an interrupted append.
        if ((await fh.stat()).size > state.offset) await fh.truncate(state.offset);
        try {
          const superseded = (): void => void source.destroy(new VolregError('BLOB_UPLOAD_INVALID', 'a newer request on this upload session took over from this chunk'));
          written = await this.locks.interruptible(id, superseded, (awaitingClient) =>
            copyInto(source, fh, state.offset, {
              hash: (bufs, n) => {
                hashed += n;
                return this.hasher.update(id, bufs, n);
              },
              written: (n) => this.writeBack.wrote(id, path, n),
              awaitingSource: awaitingClient,
              budget: this.uploadBytes,
              room: this.space.meter(),
              limits: opts,
            }),
          );
        } catch (err) {
          // Back to the last durable offset. A hash that saw bytes now gone is dropped; one that
          // saw none is kept, so a retry does not read the whole session again (which may take
          // longer than its client waits, and so for ever).
          if (hashed === 0) this.remember(id, { algorithm: state.algorithm, offset: state.offset, generation });
          else this.hasher.drop(id);
          await fh.truncate(state.offset).catch(() => undefined);
          throw err;
        }
      } finally {
        await fh.close();
        this.writeBack.appendEnded(id, path);
      }
      const next: SessionState = { ...state, offset: state.offset + written, updated: new Date().toISOString() };
      await writeSessionState(this.root, id, next, { durable: false });
      this.remember(id, { algorithm: state.algorithm, offset: next.offset, generation });
      return next;
    });
    // The chunk is gone (truncated back); the session stays at its last offset.
    return appended.catch((err: unknown) => {
      throw asStorageFull(err, 'no space left on the storage');
    });
  }

  /** @internal */
  async commitUpload(writer: FsUploadWriter, expected: Digest | undefined, expectedSize: number | undefined): Promise<BlobInfo> {
    const id = writer.id;
    const committed = this.locks.run(id, uploadLockPath(this.root, id), async () => {
      const state = await this.loadSession(id);
      if (expectedSize !== undefined && expectedSize !== state.offset) {
        await this.discard(id);
        throw new VolregError('SIZE_INVALID', 'blob size does not match the expected size', { expected: expectedSize, size: state.offset });
      }
      const algorithm = expected ? digestAlgorithm(expected) : state.algorithm;
      let hex: string;
      if (algorithm === state.algorithm) {
        await this.hashAt(id, state);
        hex = await this.hasher.digest(id).catch(fromHashWorker);
      } else {
        // Asked for another algorithm than the one computed on the way in: read once more.
        hex = await this.hashFile(uploadDataPath(this.root, id), algorithm, state.offset);
      }
      const digest = `${algorithm}:${hex}` as Digest;
      if (expected !== undefined && digest !== expected) {
        await this.discard(id);
        throw new VolregError('DIGEST_INVALID', 'provided digest did not match uploaded content', { expected, actual: digest });
      }

      await this.writeBack.settle(id).catch((err: unknown) => this.lose(id, err));
      const data = await openData(this.root, id, 'r+');
      try {
        if ((await data.stat()).size > state.offset) await data.truncate(state.offset);
        // A blob's time is when it was committed (a rename keeps the data file's time, which
        // for a resumed upload may be hours old): garbage collection's grace period counts from it.
        const now = new Date();
        await data.utimes(now, now);
        await data.sync().catch((err: unknown) => this.lose(id, err));
      } finally {
        await data.close();
      }
      // Renamed over any blob already there (see the header): same digest, verified bytes.
      const dir = blobDir(this.root, digest);
      try {
        const created = await mkdir(dir, { recursive: true });
        if (created !== undefined) await fsyncCreatedDirs(dir, created);
        if (!(await lstat(dir)).isDirectory()) throw this.placeRefusal(`${relative(this.root, dir)} is not a directory volreg made (a symbolic link?); move it away`);
        await rename(uploadDataPath(this.root, id), blobPath(this.root, digest));
        // The blob's entry may not be on the disk. Its bytes are (synced above) and no metadata
        // names it yet: the client starts again, and that commit puts the same bytes there anew.
        await fsyncDir(dir).catch((err: unknown) => this.lose(id, err));
        this.placeRefused = undefined;
      } catch (err) {
        throw this.refusedPlace(err, dir);
      }
      await this.discard(id);
      return { digest, size: state.offset };
    });
    return committed.catch((err: unknown) => {
      throw asStorageFull(err, 'no space left to store the blob; the upload is kept, finish it again once space is freed');
    });
  }

  /** @internal */
  async cancelUpload(writer: FsUploadWriter): Promise<void> {
    await this.removeUpload(writer.id);
  }

  async removeUpload(id: string): Promise<void> {
    if (!UPLOAD_ID.test(id)) return;
    try {
      await this.locks.run(id, uploadLockPath(this.root, id), () => this.discard(id));
    } catch (err) {
      if (isVolregError(err) && err.code === 'BLOB_UPLOAD_UNKNOWN') return;
      throw asStorageFull(err, 'no space left on the storage even to cancel (its lock file could not be written)');
    }
  }

  /**
   * A sync of the upload failed: the disk may not hold bytes the digest was computed over, and
   * Linux may have dropped them from the cache as if written, so a later fsync would succeed
   * over the hole. The upload is over: nothing of it may become a blob, whatever a retry hears.
   * Remembered in memory too, in case the disk refuses even the removal.
   */
  private async lose(id: string, err: unknown): Promise<never> {
    this.lost.add(id);
    await this.discard(id).catch(() => undefined);
    if (isOutOfSpace(err)) throw new VolregError('STORAGE_FULL', 'the disk refused bytes of this upload (no space left); the upload is gone, start it again');
    const code = (err as NodeJS.ErrnoException).code ?? 'an I/O error';
    this.placeRefused = `the blob storage failed to make an upload durable (${code}); check the disk and the kernel log`;
    throw new VolregError('UNAVAILABLE', `the disk failed to make this upload durable (${code}); the upload is gone, start it again`);
  }

  private async discard(id: string): Promise<void> {
    this.hashes.delete(id);
    this.hasher.drop(id);
    this.writeBack.forget(id);
    // A request of another process waiting for the session may create its lock (or `.wanted`)
    // file in the directory while it is being removed: the removal is then tried again.
    await rm(uploadDir(this.root, id), { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
  }

  /**
   * A session's state with its offset checked against the data file. A data file shorter than
   * the recorded offset lost bytes in a machine crash (appends do not wait for the disk): the
   * session goes on from what the disk kept, and its hash is recomputed from those bytes.
   */
  private async loadSession(id: string): Promise<SessionState> {
    if (this.lost.has(id)) throw new VolregError('BLOB_UPLOAD_UNKNOWN', 'this upload was lost to a disk failure; start it again');
    const [state, size] = await Promise.all([
      readSessionState(this.root, id),
      stat(uploadDataPath(this.root, id)).then(
        (s) => s.size,
        (err: unknown) => {
          // A session whose data is gone (a crash between commit's rename and its cleanup) is over.
          if (isMissing(err)) throw new VolregError('BLOB_UPLOAD_UNKNOWN');
          throw err;
        },
      ),
    ]);
    if (size >= state.offset) return state;
    this.hashes.delete(id);
    this.hasher.drop(id);
    const clamped: SessionState = { ...state, offset: size, updated: new Date().toISOString() };
    await writeSessionState(this.root, id, clamped, { durable: true });
    return clamped;
  }

  /**
   * Brings the worker's hash of `id` to bytes [0, state.offset): the cached one caught up, or
   * a new one computed from the data file. Until `remember` is called again the session has no
   * cached hash, so a failure on the way leaves nothing stale behind.
   */
  private async hashAt(id: string, state: SessionState): Promise<void> {
    const cached = this.hashes.get(id);
    this.hashes.delete(id);
    const path = uploadDataPath(this.root, id);
    try {
      if (cached && cached.algorithm === state.algorithm && cached.offset <= state.offset && cached.generation === this.hasher.generation) {
        await this.hasher.feedFile(id, path, cached.offset, state.offset);
        return;
      }
      this.hasher.create(id, state.algorithm);
      await this.hasher.feedFile(id, path, 0, state.offset);
    } catch (err) {
      this.hasher.drop(id);
      fromHashWorker(err);
    }
  }

  private remember(id: string, entry: CachedHash): void {
    this.hashes.delete(id);
    this.hashes.set(id, entry);
    while (this.hashes.size > HASH_CACHE_SIZE) {
      const oldest = this.hashes.keys().next().value as string;
      this.hashes.delete(oldest);
      this.hasher.drop(oldest);
    }
  }
}

class FsUploadWriter implements UploadWriter {
  constructor(
    private readonly store: FsBlobStore,
    readonly id: string,
    private state: SessionState,
  ) {}

  get offset(): number {
    return this.state.offset;
  }

  async append(source: Readable, opts: AppendOptions = {}): Promise<number> {
    this.state = await this.store.appendTo(this, source, opts);
    return this.state.offset;
  }

  commit(expected?: Digest, expectedSize?: number): Promise<BlobInfo> {
    return this.store.commitUpload(this, expected, expectedSize);
  }

  cancel(): Promise<void> {
    return this.store.cancelUpload(this);
  }
}

// ---- helpers -------------------------------------------------------------------------------

/** A full filesystem (or quota) reaches the client as STORAGE_FULL; other failures stay as they are. */
function asStorageFull(err: unknown, message: string): unknown {
  return isOutOfSpace(err) ? new VolregError('STORAGE_FULL', message) : err;
}

/** Maps the hash worker's failures: a vanished data file means the session is gone. */
function fromHashWorker(err: unknown): never {
  if (err instanceof HashWorkerError && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) throw new VolregError('BLOB_UPLOAD_UNKNOWN');
  throw err;
}

async function openData(root: string, id: string, flags: string): Promise<FileHandle> {
  try {
    return await open(uploadDataPath(root, id), flags);
  } catch (err) {
    if (isMissing(err)) throw new VolregError('BLOB_UPLOAD_UNKNOWN');
    throw err;
  }
}
