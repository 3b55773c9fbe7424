import type { Document } from 'bson';
import { isPlainObject, numericValue, toView } from '../bson-values.ts';
import { typedDocument, type Collection } from '../collection-store.ts';
import { asEngineError, engineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { findRecords } from '../query-executor.ts';
import { applyUpdate, buildUpsertDocument, parseUpdate } from '../update-engine.ts';
import { MAX_WRITE_BATCH_SIZE } from '../wire-protocol.ts';
import { collectionArg, documentArray, flag } from './command-args.ts';

/** insert, update and delete: per-statement results with mongod's writeErrors shape. */

function checkBatchSize(n: number): void {
  if (n < 1 || n > MAX_WRITE_BATCH_SIZE) {
    throw engineError('InvalidLength', `Write batch sizes must be between 1 and ${MAX_WRITE_BATCH_SIZE}. Got ${n} operations.`);
  }
}

function writeReply(n: number, writeErrors: Document[], extra: Document = {}): Document {
  const reply: Document = { n, ...extra };
  if (writeErrors.length > 0) reply['writeErrors'] = writeErrors;
  reply['ok'] = 1;
  return reply;
}

export function insertCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'insert');
  const docs = documentArray(cmd, 'documents', 'insert');
  checkBatchSize(docs.length);
  const ordered = flag(cmd, 'ordered', true);
  const bypassValidation = flag(cmd, 'bypassDocumentValidation');
  const coll = ctx.state.catalog.ensureCollection(ctx.db, name);
  const writeErrors: Document[] = [];
  let n = 0;
  for (let i = 0; i < docs.length; i++) {
    try {
      coll.insert(docs[i] as Document, { bypassValidation, log: ctx.state.log });
      n++;
    } catch (err) {
      writeErrors.push(asEngineError(err).toWriteError(i));
      if (ordered) break;
    }
  }
  return writeReply(n, writeErrors);
}

interface UpdateOutcome {
  n: number;
  nModified: number;
  upsertedId?: unknown;
}

/** One update statement; shared with findAndModify-like callers. */
export function runUpdateStatement(ctx: CommandContext, collName: string, stmt: Document, bypassValidation: boolean): UpdateOutcome {
  const q = isPlainObject(stmt['q']) ? stmt['q'] : {};
  const spec = parseUpdate(stmt['u']);
  const multi = flag(stmt, 'multi');
  const upsert = flag(stmt, 'upsert');
  if (multi && spec.kind === 'replacement') {
    throw engineError('FailedToParse', 'multi update is not supported for replacement-style update');
  }
  const arrayFilters = Array.isArray(stmt['arrayFilters']) ? (stmt['arrayFilters'] as Document[]) : [];
  const filterView = toView(q) as Document;
  const catalog = ctx.state.catalog;
  let coll: Collection | undefined = catalog.getCollection(ctx.db, collName);
  const sort = isPlainObject(stmt['sort']) ? (toView(stmt['sort']) as Document) : undefined;
  const matches = findRecords(coll, filterView, { limit: multi ? 0 : 1, sort });
  const opts = { bypassValidation, log: ctx.state.log };
  if (matches.length === 0) {
    if (!upsert) return { n: 0, nModified: 0 };
    coll = coll ?? catalog.ensureCollection(ctx.db, collName);
    const doc = buildUpsertDocument(q, spec, { filter: filterView, arrayFilters, isUpsertInsert: true });
    const rec = coll.insert(doc, opts);
    return { n: 1, nModified: 0, upsertedId: typedDocument(rec)['_id'] };
  }
  let n = 0;
  let nModified = 0;
  for (const rec of matches) {
    const next = applyUpdate(spec, typedDocument(rec), { filter: filterView, oldView: rec.view, arrayFilters, isUpsertInsert: false });
    const stored = (coll as Collection).replace(rec, next, opts);
    n++;
    if (stored !== rec) nModified++;
  }
  return { n, nModified };
}

export function updateCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'update');
  const updates = documentArray(cmd, 'updates', 'update');
  checkBatchSize(updates.length);
  const ordered = flag(cmd, 'ordered', true);
  const bypassValidation = flag(cmd, 'bypassDocumentValidation');
  const writeErrors: Document[] = [];
  const upserted: Document[] = [];
  let n = 0;
  let nModified = 0;
  for (let i = 0; i < updates.length; i++) {
    try {
      const r = runUpdateStatement(ctx, name, updates[i] as Document, bypassValidation);
      n += r.n;
      nModified += r.nModified;
      if (r.upsertedId !== undefined) upserted.push({ index: i, _id: r.upsertedId });
    } catch (err) {
      writeErrors.push(asEngineError(err).toWriteError(i));
      if (ordered) break;
    }
  }
  const extra: Document = { nModified };
  if (upserted.length > 0) extra['upserted'] = upserted;
  // mongod orders fields n, [upserted], nModified, [writeErrors], ok
  const out: Document = { n };
  if (upserted.length > 0) out['upserted'] = upserted;
  out['nModified'] = nModified;
  if (writeErrors.length > 0) out['writeErrors'] = writeErrors;
  out['ok'] = 1;
  return out;
}

export function deleteCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'delete');
  const deletes = documentArray(cmd, 'deletes', 'delete');
  checkBatchSize(deletes.length);
  const ordered = flag(cmd, 'ordered', true);
  const writeErrors: Document[] = [];
  let n = 0;
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  for (let i = 0; i < deletes.length; i++) {
    try {
      const stmt = deletes[i] as Document;
      const limit = numericValue(stmt['limit']);
      if (limit === undefined) throw engineError('Location40414', "BSON field 'delete.deletes.limit' is missing but a required field");
      if (limit !== 0 && limit !== 1) throw engineError('FailedToParse', `The limit field in delete objects must be 0 or 1. Got ${limit}`);
      if (!coll) continue;
      const q = isPlainObject(stmt['q']) ? stmt['q'] : {};
      for (const rec of findRecords(coll, toView(q) as Document, { limit })) {
        coll.delete(rec);
        n++;
      }
    } catch (err) {
      writeErrors.push(asEngineError(err).toWriteError(i));
      if (ordered) break;
    }
  }
  return writeReply(n, writeErrors);
}
