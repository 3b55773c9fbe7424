import type { Document } from 'bson';
import { bsonTypeName, isPlainObject, isTruthyOption, numericValue } from '../bson-values.ts';
import { engineError } from '../errors.ts';

/** Argument parsing shared by command handlers, with mongod's error wording. */

export function collectionArg(cmd: Document, field: string): string {
  const v = cmd[field];
  if (typeof v !== 'string') {
    throw engineError('InvalidNamespace', `collection name has invalid type ${bsonTypeName(v)}`);
  }
  if (v.length === 0) throw engineError('InvalidNamespace', `Invalid namespace specified '.${v}'`);
  return v;
}

export function optionalDocument(cmd: Document, field: string): Document | undefined {
  const v = cmd[field];
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) {
    throw engineError('TypeMismatch', `BSON field '${field}' is the wrong type '${bsonTypeName(v)}', expected type 'object'`);
  }
  return v;
}

export function documentArray(cmd: Document, field: string, command: string): Document[] {
  const v = cmd[field];
  if (!Array.isArray(v)) {
    if (v === undefined) throw engineError('Location40414', `BSON field '${command}.${field}' is missing but a required field`);
    throw engineError('TypeMismatch', `BSON field '${command}.${field}' is the wrong type '${bsonTypeName(v)}', expected type 'array'`);
  }
  for (const d of v) {
    if (!isPlainObject(d)) throw engineError('TypeMismatch', `BSON field '${command}.${field}' must contain documents`);
  }
  return v as Document[];
}

export function optionalInt(cmd: Document, field: string): number | undefined {
  const v = cmd[field];
  if (v === undefined || v === null) return undefined;
  const n = numericValue(v);
  if (n === undefined) {
    throw engineError('TypeMismatch', `BSON field '${field}' is the wrong type '${bsonTypeName(v)}', expected types '[long, int, decimal, double]'`);
  }
  return Math.trunc(n);
}

export function flag(cmd: Document, field: string, dflt = false): boolean {
  return cmd[field] === undefined ? dflt : isTruthyOption(cmd[field]);
}

export function cursorBatchSize(cmd: Document): number | undefined {
  const c = cmd['cursor'];
  if (!isPlainObject(c)) return undefined;
  const n = numericValue(c['batchSize']);
  if (n !== undefined && n < 0) throw engineError('BadValue', 'BatchSize value must be non-negative, but received: ' + String(n));
  return n;
}
