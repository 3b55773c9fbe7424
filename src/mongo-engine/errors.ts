import type { Document } from 'bson';

/**
 * The server error codes the engine can answer with, named as mongod names them
 * (src/mongo/base/error_codes.yml), so drivers and tests can match on code or codeName.
 */
/** How the engine's refusal of writes after a failed journal write ends (the service recognises it). */
export const WRITES_STOPPED = 'no writes are accepted until the engine is restarted';

export const ErrorCodes = {
  InternalError: 1,
  BadValue: 2,
  FailedToParse: 9,
  TypeMismatch: 14,
  Overflow: 15,
  IllegalOperation: 20,
  InvalidLength: 16,
  NamespaceNotFound: 26,
  IndexNotFound: 27,
  PathNotViable: 28,
  ConflictingUpdateOperators: 40,
  CursorNotFound: 43,
  NamespaceExists: 48,
  InvalidNamespace: 73,
  CommandNotFound: 59,
  ImmutableField: 66,
  CannotCreateIndex: 67,
  InvalidOptions: 72,
  IndexOptionsConflict: 85,
  IndexKeySpecsConflict: 86,
  CommandNotSupported: 115,
  DocumentValidationFailure: 121,
  BSONObjectTooLarge: 10334,
  Location17217: 17217,
  DuplicateKey: 11000,
  ChangeStreamNotSupported: 40573,
  NoSuchKey: 4,
  Unauthorized: 13,
  NotImplemented: 238,
  Location40324: 40324,
  Location40323: 40323,
  Location15983: 15983,
  Location31254: 31254,
  Location40414: 40414,
  InvalidIndexSpecificationOption: 197,
  CannotCreateCollection: 166,
  InvalidPipelineOperator: 168,
  OutOfDiskSpace: 14031,
} as const;

export type ErrorCodeName = keyof typeof ErrorCodes;

const NAME_BY_CODE = new Map<number, string>(
  Object.entries(ErrorCodes).map(([name, code]) => [code, name]),
);

export function codeNameFor(code: number): string {
  return NAME_BY_CODE.get(code) ?? `Location${code}`;
}

/** A server-side error that becomes `{ok: 0, errmsg, code, codeName}` or a writeErrors entry. */
export class EngineError extends Error {
  readonly code: number;
  readonly codeName: string;
  /** Extra fields mongod puts next to errmsg (keyPattern/keyValue, errInfo). */
  readonly extra: Document;

  constructor(code: number, message: string, extra: Document = {}) {
    super(message);
    this.name = 'EngineError';
    this.code = code;
    this.codeName = codeNameFor(code);
    this.extra = extra;
  }

  toReply(): Document {
    return { ok: 0, errmsg: this.message, code: this.code, codeName: this.codeName, ...this.extra };
  }

  toWriteError(index: number): Document {
    return { index, code: this.code, ...this.extra, errmsg: this.message };
  }
}

export function engineError(code: ErrorCodeName, message: string, extra?: Document): EngineError {
  return new EngineError(ErrorCodes[code], message, extra);
}

/** Turns anything thrown inside a command into an EngineError; unknown errors become InternalError. */
export function asEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // mingo reports malformed queries/pipelines with plain errors; mongod calls those BadValue.
  if (err instanceof Error && (err.constructor.name === 'MingoError' || /mingo|operator|expects|must/i.test(message))) {
    return new EngineError(ErrorCodes.BadValue, message);
  }
  return new EngineError(ErrorCodes.InternalError, message);
}
