import { open, readFile } from 'node:fs/promises';
import { isSupportedAlgorithm, type DigestAlgorithm } from '../domain/digest.ts';
import { VolregError } from '../domain/errors.ts';
import { isMissing, replaceFile } from './fs-ops.ts';
import { uploadStatePath, uploadStateTempPath } from './paths.ts';

/** An upload session's `state.json`: its digest algorithm and the offset of its last completed append. */
export interface SessionState {
  version: 1;
  algorithm: DigestAlgorithm;
  offset: number;
  started: string;
  updated: string;
}

// state.json is JSON padded with spaces to this size, so an update overwrites it whole in place.
const STATE_RECORD_BYTES = 256;

export async function readSessionState(root: string, id: string): Promise<SessionState> {
  let text: string;
  try {
    text = await readFile(uploadStatePath(root, id), 'utf8');
  } catch (err) {
    if (isMissing(err)) throw new VolregError('BLOB_UPLOAD_UNKNOWN');
    throw err;
  }
  let parsed: Partial<SessionState> = {};
  try {
    parsed = JSON.parse(text) as Partial<SessionState>;
  } catch {
    // Unreadable (cut short by a machine crash): the session cannot be trusted; it is gone.
  }
  if (
    parsed.version !== 1 ||
    typeof parsed.algorithm !== 'string' ||
    !isSupportedAlgorithm(parsed.algorithm) ||
    typeof parsed.offset !== 'number' ||
    !Number.isSafeInteger(parsed.offset) ||
    parsed.offset < 0
  ) {
    throw new VolregError('BLOB_UPLOAD_UNKNOWN', 'upload session state is unreadable; start a new upload');
  }
  return parsed as SessionState;
}

/**
 * Writes `state.json`. A new (or repaired) session's state is written to a temp file,
 * fsynced and renamed, so it exists whole after any crash. An append's new offset is one
 * in-place write of a fixed-size record instead: a single write cannot be half done when the
 * process dies, it costs no rename (a rename waits on the filesystem journal), and it need not
 * be durable since a stale offset only means the interrupted bytes past it are sent again.
 */
export async function writeSessionState(root: string, id: string, state: SessionState, { durable }: { durable: boolean }): Promise<void> {
  const record = Buffer.from(JSON.stringify(state).padEnd(STATE_RECORD_BYTES));
  if (!durable && record.length === STATE_RECORD_BYTES) {
    const fh = await open(uploadStatePath(root, id), 'r+');
    try {
      await fh.write(record, 0, record.length, 0);
    } finally {
      await fh.close();
    }
    return;
  }
  await replaceFile(uploadStatePath(root, id), uploadStateTempPath(root, id), record);
}
