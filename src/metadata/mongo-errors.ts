import { MongoNetworkError, MongoNotConnectedError, MongoServerError, MongoServerSelectionError, MongoTopologyClosedError } from 'mongodb';
import { VolregError } from '../domain/errors.ts';
import { WRITES_STOPPED } from '../mongo-engine/errors.ts';
import { isDriverSocketError } from './driver-sockets.ts';

// mongod's code for a write refused for lack of disk space (the embedded engine answers it when
// its journal could not be written for that reason)
const OUT_OF_DISK_SPACE = 14031;

/**
 * What a failure of MongoDB means to a client: the metadata store out of disk space is
 * STORAGE_FULL, an unreachable one is UNAVAILABLE. Null for anything else (an internal error).
 * Unreachable includes a socket error the driver passed on unwrapped (`write EPIPE` on a
 * connection the server closed at once): recognised by the socket it came from, never by its
 * code alone, which an HTTP client's socket can fail with too (driver-sockets.ts).
 */
export function fromMongoFailure(err: unknown): VolregError | null {
  if (err instanceof MongoServerError && err.code === OUT_OF_DISK_SPACE) {
    return new VolregError('STORAGE_FULL', 'the metadata store is out of disk space; the request did not complete');
  }
  if (err instanceof MongoServerError && err.message.includes(WRITES_STOPPED)) {
    // the embedded engine after a journal write failed for another reason than space (an I/O error)
    return new VolregError('UNAVAILABLE', 'the metadata store accepts no writes until volreg is restarted (see /healthz and the log); the request did not complete');
  }
  if (
    err instanceof MongoServerSelectionError ||
    err instanceof MongoNetworkError ||
    err instanceof MongoNotConnectedError ||
    err instanceof MongoTopologyClosedError ||
    isDriverSocketError(err)
  ) {
    return new VolregError('UNAVAILABLE', 'the metadata store is unreachable; try again later');
  }
  return null;
}
