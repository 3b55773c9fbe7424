import type { Readable } from 'node:stream';
import type { Digest } from '../domain/digest.ts';

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

/** Inclusive byte range, as in HTTP `Range: bytes=start-end`. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface BlobStore {
  /** Size of a committed blob, or null when absent. */
  stat(digest: Digest): Promise<BlobInfo | null>;
  /** Streams a committed blob (or an inclusive range of it). Throws BLOB_UNKNOWN when absent. */
  read(digest: Digest, range?: ByteRange): Promise<Readable>;
  /** Removes a committed blob; false when it was not there. Idempotent. */
  delete(digest: Digest): Promise<boolean>;
  /** Every committed blob. */
  list(): AsyncIterable<BlobInfo>;

  /** Starts a new upload session with a fresh id. */
  createUpload(): Promise<UploadWriter>;
  /**
   * Reopens an upload session (after a restart or from another process sharing the store).
   * Throws BLOB_UPLOAD_UNKNOWN when there is none. The hash state of the bytes received so far
   * is restored (persisted or recomputed), so the session can go on at `offset`.
   */
  resumeUpload(id: string): Promise<UploadWriter>;
  /** Upload session ids with their last activity, for purging abandoned ones. */
  listUploads(): AsyncIterable<{ id: string; lastActivity: Date }>;
  /** Is the store reachable (for /readyz)? */
  ping(): Promise<void>;
}

export interface UploadWriter {
  readonly id: string;
  /** Bytes received so far (durable: survives a restart). */
  readonly offset: number;
  /**
   * Appends a stream at the current offset. Streams, never buffers the whole body. Rejects
   * (and keeps the session at its previous durable offset) if the source errors.
   * `maxBytes` bounds how much this call may append (SIZE_INVALID/TOO_LARGE beyond it).
   */
  append(source: Readable, opts?: { maxBytes?: number }): Promise<number>;
  /**
   * Verifies the received bytes against `expected` (and `expectedSize` when given), makes the
   * blob durable and visible under its digest, and removes the session. Without `expected` the
   * computed sha256 digest is used. A mismatch throws DIGEST_INVALID (or SIZE_INVALID) and
   * discards the session. Committing a digest that already exists is a cheap no-op.
   */
  commit(expected?: Digest, expectedSize?: number): Promise<BlobInfo>;
  /** Discards the session and its bytes. Idempotent. */
  cancel(): Promise<void>;
}
