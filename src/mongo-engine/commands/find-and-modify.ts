import { deserialize, type Document } from 'bson';
import { toView } from '../bson-values.ts';
import { typedDocument, type Collection, type StoredRecord } from '../collection-store.ts';
import { engineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { compileProjection } from '../projection.ts';
import { findRecords } from '../query-executor.ts';
import { applyUpdate, buildUpsertDocument, parseUpdate } from '../update-engine.ts';
import { collectionArg, flag, optionalDocument } from './command-args.ts';

/** findAndModify: atomically find one document and update or remove it. */

export function findAndModifyCommand(cmd: Document, ctx: CommandContext): Document {
  const cmdName = 'findAndModify' in cmd ? 'findAndModify' : 'findandmodify';
  const name = collectionArg(cmd, cmdName);
  const query = optionalDocument(cmd, 'query') ?? {};
  const sort = optionalDocument(cmd, 'sort');
  const fields = optionalDocument(cmd, 'fields');
  const remove = flag(cmd, 'remove');
  const returnNew = flag(cmd, 'new');
  const upsert = flag(cmd, 'upsert');
  const hasUpdate = cmd['update'] !== undefined;
  const bypassValidation = flag(cmd, 'bypassDocumentValidation');
  if (remove && hasUpdate) throw engineError('FailedToParse', 'Cannot specify both an update and remove=true');
  if (!remove && !hasUpdate) throw engineError('FailedToParse', 'Either an update or remove=true must be specified');
  if (remove && upsert) throw engineError('FailedToParse', 'Cannot specify both upsert=true and remove=true ');
  if (remove && returnNew) {
    throw engineError('FailedToParse', "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document");
  }
  const filterView = toView(query) as Document;
  const catalog = ctx.state.catalog;
  let coll: Collection | undefined = catalog.getCollection(ctx.db, name);
  const [found] = findRecords(coll, filterView, { sort: sort ? (toView(sort) as Document) : undefined, limit: 1 });
  const projector = compileProjection(fields, filterView);
  const render = (rec: StoredRecord | undefined): Document | null => (rec ? deserialize(projector.project(rec), { promoteValues: false }) : null);
  const opts = { bypassValidation, log: ctx.state.log };

  if (remove) {
    if (!found || !coll) return { lastErrorObject: { n: 0 }, value: null, ok: 1 };
    const value = render(found);
    coll.delete(found);
    return { lastErrorObject: { n: 1 }, value, ok: 1 };
  }

  const spec = parseUpdate(cmd['update']);
  const arrayFilters = Array.isArray(cmd['arrayFilters']) ? (cmd['arrayFilters'] as Document[]) : [];
  if (!found) {
    if (!upsert) return { lastErrorObject: { n: 0, updatedExisting: false }, value: null, ok: 1 };
    coll = coll ?? catalog.ensureCollection(ctx.db, name);
    const doc = buildUpsertDocument(query, spec, { filter: filterView, arrayFilters, isUpsertInsert: true });
    const rec = coll.insert(doc, opts);
    return {
      lastErrorObject: { n: 1, updatedExisting: false, upserted: typedDocument(rec)['_id'] },
      value: returnNew ? render(rec) : null,
      ok: 1,
    };
  }
  const next = applyUpdate(spec, typedDocument(found), { filter: filterView, oldView: found.view, arrayFilters, isUpsertInsert: false });
  const stored = (coll as Collection).replace(found, next, opts);
  return { lastErrorObject: { n: 1, updatedExisting: true }, value: render(returnNew ? stored : found), ok: 1 };
}
