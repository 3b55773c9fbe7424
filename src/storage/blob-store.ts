import type { Readable } from 'node:stream';
import type { Digest, DigestAlgorithm } from '../domain/digest.ts';
import type { ByteRange } from '../domain/byte-range.ts';

export type { ByteRange } from '../domain/byte-range.ts';

/**
 * The only way to blob bytes. Drivers (filesystem, GridFS) implement this interface and all
 * of them pass the one contract suite in test/contract/blob-store-contract.ts.
 *
 * Commit rule: bytes become visible under a digest only after they were verified against it
 * and made durable; a reader never sees a partial or wrong blob.
 */
export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** A committed blob as listed, with when it was last committed (a re-commit refreshes it). */
export interface StoredBlob extends BlobInfo {
  modified: Date;
}

/** Conditions of a guarded delete (garbage collection racing with pushes). */
export interface DeleteOptions {
  /** keep the blob if it was committed (or re-committed) at or after this time */
  unmodifiedSince?: Date;
  /**
   * Asked after the blob was made invisible and before it is removed; false (or a rejection)
   * puts it back. Lets the caller re-check references while no commit can reuse the old bytes.
   */
  confirm?: () => Promise<boolean>;
}

/** A committed blob, or a range of it, open for reading into the caller's buffers. */
export interface BlobReader {
  /** bytes to read in all */
  readonly length: number;
  /** Reads the next bytes into the start of `buf`; how many (0 once all were read). */
  readInto(buf: Buffer): Promise<number>;
  /** Releases the blob. Idempotent. */
  close(): Promise<void>;
}

export interface UploadSummary {
  id: string;
  /** last time bytes or state of the session changed (purging abandoned sessions uses it) */
  lastActivity: Date;
  /** a request is working on the session right now (a chunk may be streaming): never abandoned */
  inUse: boolean;
}

export interface BlobStore {
  /** Size of a committed blob, or null when absent. */
  stat(digest: Digest): Promise<BlobInfo | null>;
  /**
   * Streams a committed blob, or an inclusive range of it (the range must lie inside the
   * blob: RANGE_INVALID otherwise). Throws BLOB_UNKNOWN when absent. A blob deleted while it
   * is being read is still read to its end.
   */
  read(digest: Digest, range?: ByteRange): Promise<Readable>;
  /**
   * The same bytes as `read`, read into buffers the caller owns and reuses: sending a blob
   * then makes no garbage per chunk (a stream hands out a new buffer for each). Same errors as
   * `read`; the caller closes the reader.
   */
  openReader(digest: Digest, range?: ByteRange): Promise<BlobReader>;
  /**
   * Removes a committed blob; false when it was not there or a condition in `opts` kept it.
   * Idempotent.
   */
  delete(digest: Digest, opts?: DeleteOptions): Promise<boolean>;
  /** When a committed blob was last committed (commit of an existing digest refreshes it); null when absent. */
  modified(digest: Digest): Promise<Date | null>;
  /** Every committed blob, with when it was last committed (garbage collection ages them). */
  list(): AsyncIterable<StoredBlob>;
  /**
   * Re-hashes a committed blob and, when its bytes no longer match its digest (damaged at
   * rest), moves them out of the store to a place kept for the operator and returns that place
   * (driver-specific, e.g. a path under the data directory). The blob is then absent, so the
   * next upload of the same content stores it again. Null when the bytes match (or are absent):
   * nothing moves. Never takes bytes a concurrent commit put in place.
   */
  quarantineIfDamaged(digest: Digest): Promise<string | null>;

  /**
   * Starts a new upload session with a fresh id. `algorithm` (default sha256) is the digest
   * computed while bytes arrive; committing under another algorithm re-reads the bytes once.
   */
  createUpload(opts?: { algorithm?: DigestAlgorithm }): Promise<UploadWriter>;
  /**
   * Reopens an upload session (after a restart or from another process sharing the store).
   * Throws BLOB_UPLOAD_UNKNOWN when there is none (or the id is malformed). The hash state of
   * the bytes received so far is restored (persisted or recomputed), so the session can go on
   * at `offset`.
   */
  resumeUpload(id: string): Promise<UploadWriter>;
  /** Upload session ids with their last activity, for purging abandoned ones. */
  listUploads(): AsyncIterable<UploadSummary>;
  /**
   * Removes whatever is left of an upload session, whole or not: a crash can leave one that
   * `resumeUpload` does not take (files of a session being created, or the state of one whose
   * data was committed into place). Nothing when there is none.
   */
  removeUpload(id: string): Promise<void>;
  /** Is the store reachable and writable (for /readyz)? Rejects with a reason anyone may read (no absolute paths). */
  ping(): Promise<void>;
}

export interface AppendOptions {
  /** Refuse (TOO_LARGE) as soon as this call would append more than this many bytes. */
  maxBytes?: number;
  /** The call must append exactly this many bytes (a chunk with a Content-Range); else SIZE_INVALID. */
  exactBytes?: number;
  /**
   * The offset the caller believes the session is at (the start of a chunk's Content-Range).
   * Checked against the durable offset under the session's lock: RANGE_INVALID on mismatch.
   */
  atOffset?: number;
  /**
   * Told `true` while the store works on its own before it reads the source (re-reading a
   * resumed session's bytes to hash them, after a restart or in another process), `false` once it
   * reads: a caller timing the source out for idleness does not count that time.
   */
  busy?: (busy: boolean) => void;
}

export interface UploadWriter {
  readonly id: string;
  /** Bytes received so far (durable: survives a restart). Updated by append. */
  readonly offset: number;
  /**
   * Appends a stream at the current offset. Streams, never buffers the whole body; reading
   * follows the pace of the disk (backpressure). On any failure — the source errors or ends
   * short, a limit in `opts` is broken — the session stays at its previous durable offset and
   * the call rejects: a source failure as BLOB_UPLOAD_INVALID, a limit as in AppendOptions,
   * a storage failure as it is. Returns the new offset.
   */
  append(source: Readable, opts?: AppendOptions): Promise<number>;
  /**
   * Verifies the received bytes against `expected` (and `expectedSize` when given), makes the
   * blob durable and visible under its digest, and removes the session. Without `expected` the
   * digest computed with the session's algorithm (sha256 by default) is used. A mismatch throws
   * DIGEST_INVALID (or SIZE_INVALID) and discards the session. Committing a digest that already
   * exists replaces the stored bytes with these verified ones (mending a blob damaged at rest)
   * and refreshes the blob's `modified` time.
   */
  commit(expected?: Digest, expectedSize?: number): Promise<BlobInfo>;
  /** Discards the session and its bytes. Idempotent. */
  cancel(): Promise<void>;
}
