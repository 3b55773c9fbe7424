import {
  MongoBulkWriteError,
  MongoClientClosedError,
  MongoErrorLabel,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoServerClosedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
  MongoWriteConcernError,
} from 'mongodb';
import { VolregError } from '../domain/errors.ts';
import { WRITES_STOPPED } from '../mongo-engine/errors.ts';
import { isDriverSocketError } from './driver-sockets.ts';

// mongod's code for a write refused for lack of disk space (the embedded engine answers it when
// its journal could not be written for that reason)
const OUT_OF_DISK_SPACE = 14031;

/**
 * What a replica set answers while it has no writable primary, or while a node shuts down or
 * steps down: the codes MongoDB's drivers retry a read or a write on (the retryable reads and
 * writes specifications). The driver retries once, and only the operations it may retry; what
 * still fails is passed on, and is as transient as the election: at most about 12 s with the
 * default settings (MongoDB's "Replica Set Elections").
 */
const REPLICA_SET_CHANGING = Object.freeze({
  HostUnreachable: 6,
  HostNotFound: 7,
  WriteConcernFailed: 64,
  NetworkTimeout: 89,
  ShutdownInProgress: 91,
  PrimarySteppedDown: 189,
  ExceededTimeLimit: 262,
  SocketException: 9001,
  LegacyNotPrimary: 10058,
  NotWritablePrimary: 10107,
  InterruptedAtShutdown: 11600,
  InterruptedDueToReplStateChange: 11602,
  NotPrimaryNoSecondaryOk: 13435,
  NotPrimaryOrSecondary: 13436,
  ReadConcernMajorityNotAvailableYet: 134,
} as const);
const REPLICA_SET_CHANGING_CODES: ReadonlySet<number> = new Set(Object.values(REPLICA_SET_CHANGING));

/**
 * How long a client waits before sending again when the metadata store is away: about an
 * election's time, and a restarted mongod's. Said for an unreachable store too, so that
 * agents (volreg's CLI) ride out a restart of the database instead of failing a backup; the
 * request that met it already waited the driver's server selection (15 s) before its answer.
 */
const METADATA_RETRY_AFTER_SECONDS = '10';

/** the code a write concern error carries (on the error itself, or in its reply's writeConcernError) */
function writeConcernCode(err: MongoServerError): number | undefined {
  if (!(err instanceof MongoWriteConcernError)) return undefined;
  const code = (err.result as { writeConcernError?: { code?: unknown } } | undefined)?.writeConcernError?.code;
  return typeof code === 'number' ? code : undefined;
}

function isReplicaSetChanging(err: MongoServerError): boolean {
  if (err.hasErrorLabel(MongoErrorLabel.RetryableWriteError)) return true;
  return [err.code, writeConcernCode(err)].some((c) => typeof c === 'number' && REPLICA_SET_CHANGING_CODES.has(c));
}

/**
 * A command cut off by the client's closing (the watchdog reopening it: client-watchdog.ts):
 * on a connection in use, on a server or a pool closed meanwhile. The pool's error is not
 * exported by the driver, so it is known by its name.
 */
function isClosedUnderIt(err: unknown): boolean {
  return err instanceof MongoClientClosedError || err instanceof MongoServerClosedError || (err instanceof Error && err.name === 'MongoPoolClosedError');
}

/**
 * What a failure of MongoDB means to a client: the metadata store out of disk space is
 * STORAGE_FULL, an unreachable one is UNAVAILABLE, and so is a replica set electing a primary
 * (both with Retry-After). Null for anything else (an internal error).
 * Unreachable includes a socket error the driver passed on unwrapped (`write EPIPE` on a
 * connection the server closed at once): recognised by the socket it came from, never by its
 * code alone, which an HTTP client's socket can fail with too (driver-sockets.ts).
 */
export function fromMongoFailure(err: unknown): VolregError | null {
  // insertMany and bulkWrite wrap whatever stopped them (a server selection that found no
  // server, a network error) in a bulk write error: it is judged by what it wraps
  if (err instanceof MongoBulkWriteError && err.errorResponse instanceof Error && err.errorResponse !== err) return fromMongoFailure(err.errorResponse);
  if (err instanceof MongoServerError && err.code === OUT_OF_DISK_SPACE) {
    return new VolregError('STORAGE_FULL', 'the metadata store is out of disk space; the request did not complete');
  }
  if (err instanceof MongoServerError && err.message.includes(WRITES_STOPPED)) {
    // the embedded engine after a journal write failed for another reason than space (an I/O error)
    return new VolregError('UNAVAILABLE', 'the metadata store accepts no writes until volreg is restarted (see /healthz and the log); the request did not complete');
  }
  if (err instanceof MongoServerError && isReplicaSetChanging(err)) {
    // what the request wrote before stays (each write is whole and safe to repeat): trying it again completes it
    return new VolregError('UNAVAILABLE', 'the metadata store is changing its primary; try again shortly', undefined, {
      'Retry-After': METADATA_RETRY_AFTER_SECONDS,
    });
  }
  if (
    err instanceof MongoServerSelectionError ||
    err instanceof MongoNetworkError ||
    err instanceof MongoNotConnectedError ||
    err instanceof MongoTopologyClosedError ||
    isClosedUnderIt(err) ||
    isDriverSocketError(err)
  ) {
    // what the request wrote before it stays, as in a failover: sending it again completes it
    return new VolregError('UNAVAILABLE', 'the metadata store is unreachable; try again later', undefined, { 'Retry-After': METADATA_RETRY_AFTER_SECONDS });
  }
  return null;
}
