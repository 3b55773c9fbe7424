import { join } from 'node:path';
import { splitDigest, type Digest, type DigestAlgorithm } from '../domain/digest.ts';

/**
 * The one module that knows where the filesystem driver keeps things. Everything lives under
 * the store's root (VOLREG_DATA_DIR):
 *
 * ```
 * <root>/
 *   blobs/
 *     store-id           the id of the metadata database these blobs are recorded in (one
 *                        line); every process on this directory must use that database
 *                        (store-mark.ts, metadata/store-binding.ts)
 *     sha256/
 *       ab/
 *         ab12…ef          a committed blob, named by the hex of its digest; immutable,
 *                          created only by renaming a verified, fsynced upload onto it
 *         ab12…ef.deleting-<uuid>
 *                          a blob moved aside by a guarded delete (garbage collection) while it
 *                          re-checks references; put back by list() if a crash left it there
 *     sha512/
 *       …                  same layout for sha512 digests
 *   quarantine/
 *     sha256/
 *       ab12…ef.<time>     bytes that were a blob and no longer hash to its digest (damaged at
 *                          rest), moved out of blobs/ by quarantineIfDamaged; volreg never reads,
 *                          lists or removes them: they are kept for the operator
 *   uploads/
 *     <uuid>/              one upload session
 *       data               the bytes received; only [0, offset) counts: bytes past the
 *                          offset are the remains of an interrupted append
 *       state.json         { algorithm, offset, started, updated }, JSON padded to a fixed
 *                          size: created via state.json.tmp (fsynced, renamed), then
 *                          overwritten in place by each append — the commit point of a chunk
 *       lock               exists while one request appends, commits or cancels; names its
 *                          owner (host, pid, process instance) so a dead owner's lock is broken
 *       lock.wanted        kept fresh by a request of another process waiting for the lock, so
 *                          a holder whose client stalled gives way (fs-lock.ts)
 * ```
 *
 * Blob and upload directories sit on one filesystem, so committing an upload is one rename.
 */

export const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEX = /^[0-9a-f]+$/;

export function blobsRoot(root: string): string {
  return join(root, 'blobs');
}

export function storeMarkPath(root: string): string {
  return join(root, 'blobs', 'store-id');
}

export function algorithmDir(root: string, alg: DigestAlgorithm): string {
  return join(root, 'blobs', alg);
}

export function blobDir(root: string, digest: Digest): string {
  const [alg, hex] = checkedSplit(digest);
  return join(root, 'blobs', alg, hex.slice(0, 2));
}

export function blobPath(root: string, digest: Digest): string {
  const [, hex] = checkedSplit(digest);
  return join(blobDir(root, digest), hex);
}

/** Where a guarded delete moves a blob while it decides (see the tree above). */
export function blobAsidePath(root: string, digest: Digest, token: string): string {
  if (!UPLOAD_ID.test(token)) throw new Error('invalid aside token');
  return `${blobPath(root, digest)}${ASIDE_MARK}${token}`;
}

export const ASIDE_MARK = '.deleting-';

/** Where damaged bytes of `digest` go (see the tree above); `at` tells two such moves apart. */
export function quarantinePath(root: string, digest: Digest, at: Date): string {
  const [alg, hex] = checkedSplit(digest);
  return join(root, 'quarantine', alg, `${hex}.${at.toISOString().replace(/[:.]/g, '-')}`);
}

export function uploadsRoot(root: string): string {
  return join(root, 'uploads');
}

export function uploadDir(root: string, id: string): string {
  if (!UPLOAD_ID.test(id)) throw new Error('invalid upload id');
  return join(root, 'uploads', id);
}

export function uploadDataPath(root: string, id: string): string {
  return join(uploadDir(root, id), 'data');
}

export function uploadStatePath(root: string, id: string): string {
  return join(uploadDir(root, id), 'state.json');
}

export function uploadStateTempPath(root: string, id: string): string {
  return join(uploadDir(root, id), 'state.json.tmp');
}

export function uploadLockPath(root: string, id: string): string {
  return join(uploadDir(root, id), 'lock');
}

// Digests reach here already parsed; this guards the path against a digest built elsewhere.
function checkedSplit(digest: Digest): [DigestAlgorithm, string] {
  const [alg, hex] = splitDigest(digest);
  if ((alg !== 'sha256' && alg !== 'sha512') || hex.length < 64 || !HEX.test(hex)) {
    throw new Error('digest is not a supported, parsed digest');
  }
  return [alg, hex];
}
