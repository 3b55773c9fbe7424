import { MongoNetworkError, MongoNotConnectedError, MongoServerError, MongoServerSelectionError, MongoTopologyClosedError } from 'mongodb';
import { VolregError } from '../domain/errors.ts';

// mongod's code for a write refused for lack of disk space (the embedded engine answers it when
// its journal could not be written for that reason)
const OUT_OF_DISK_SPACE = 14031;

/**
 * What a failure of MongoDB means to a client: the metadata store out of disk space is
 * STORAGE_FULL, an unreachable one is UNAVAILABLE. Null for anything else (an internal error).
 */
export function fromMongoFailure(err: unknown): VolregError | null {
  if (err instanceof MongoServerError && err.code === OUT_OF_DISK_SPACE) {
    return new VolregError('STORAGE_FULL', 'the metadata store is out of disk space; the request did not complete');
  }
  if (
    err instanceof MongoServerSelectionError ||
    err instanceof MongoNetworkError ||
    err instanceof MongoNotConnectedError ||
    err instanceof MongoTopologyClosedError
  ) {
    return new VolregError('UNAVAILABLE', 'the metadata store is unreachable; try again later');
  }
  return null;
}
