import { VolregError } from '../domain/errors.ts';

/**
 * What a failure of the data filesystem means to a client. A disk that fails a read or a write
 * (EIO; a lost network volume: ESTALE; damage the filesystem found: EUCLEAN, EBADMSG) or a
 * filesystem the kernel remounted read-only after an error (EROFS) is no fault of the request
 * and no bug: 503, saying which, with the details in the log. Null for anything else.
 */
const FAILED = new Set(['EIO', 'ESTALE', 'EUCLEAN', 'EBADMSG']);

/** Whether `err` is the filesystem failing (those codes, or EROFS), not the caller's request. */
export function isFilesystemFailure(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'EROFS' || (code !== undefined && FAILED.has(code));
}

export function fromStorageFailure(err: unknown): VolregError | null {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code === 'EROFS') {
    return new VolregError('UNAVAILABLE', 'the data filesystem is read-only (EROFS: remounted after an error?); the request did not complete');
  }
  if (code !== undefined && FAILED.has(code)) {
    return new VolregError('UNAVAILABLE', `the data filesystem failed (${code}); the request did not complete, see the server log`);
  }
  return null;
}
