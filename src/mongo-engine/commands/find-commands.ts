import { Double, Long, type Document } from 'bson';
import { encodeKey, pathValues, toView, toBson } from '../bson-values.ts';
import { typedDocument, type StoredRecord } from '../collection-store.ts';
import { engineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { compileProjection } from '../projection.ts';
import { distinctFromIndex, findRecords } from '../query-executor.ts';
import { cursorReply } from '../reply-builder.ts';
import { collectionArg, flag, optionalDocument, optionalInt } from './command-args.ts';

/** find, getMore, killCursors, count, distinct. */

export function findCommand(cmd: Document, ctx: CommandContext): Buffer {
  const name = collectionArg(cmd, 'find');
  const ns = `${ctx.db}.${name}`;
  if (flag(cmd, 'tailable')) {
    throw engineError('BadValue', `error processing query: ns=${ns} tailable cursor requested on non capped collection`);
  }
  const filter = toView(optionalDocument(cmd, 'filter') ?? {}) as Document;
  const sort = optionalDocument(cmd, 'sort');
  const projection = optionalDocument(cmd, 'projection');
  const skip = optionalInt(cmd, 'skip') ?? 0;
  const limitArg = optionalInt(cmd, 'limit') ?? 0;
  const batchSize = optionalInt(cmd, 'batchSize');
  if (skip < 0) throw engineError('BadValue', `Skip value must be non-negative, but received: ${skip}`);
  if (limitArg < 0) throw engineError('BadValue', `Limit value must be non-negative, but received: ${limitArg}`);
  if (batchSize !== undefined && batchSize < 0) throw engineError('BadValue', `BatchSize value must be non-negative, but received: ${batchSize}`);
  const singleBatch = flag(cmd, 'singleBatch');
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  const recs = findRecords(coll, filter, { sort: sort ? (toView(sort) as Document) : undefined, skip, limit: limitArg });
  const projector = compileProjection(projection, filter);
  const batch = ctx.state.cursors.open(ns, ctx.connectionId, recs, (r: StoredRecord) => projector.project(r), batchSize, singleBatch);
  return cursorReply('firstBatch', batch.docs, batch.id, ns);
}

export function getMoreCommand(cmd: Document, ctx: CommandContext): Buffer {
  const id = cmd['getMore'];
  if (!(id instanceof Long)) throw engineError('TypeMismatch', "BSON field 'getMore.getMore' is the wrong type, expected type 'long'");
  const name = collectionArg(cmd, 'collection');
  const ns = `${ctx.db}.${name}`;
  const batch = ctx.state.cursors.getMore(id, ns, optionalInt(cmd, 'batchSize'));
  return cursorReply('nextBatch', batch.docs, batch.id, ns);
}

export function killCursorsCommand(cmd: Document, ctx: CommandContext): Document {
  collectionArg(cmd, 'killCursors');
  const ids = Array.isArray(cmd['cursors']) ? cmd['cursors'].filter((x: unknown): x is Long => x instanceof Long) : [];
  const { killed, notFound } = ctx.state.cursors.kill(ids);
  return { cursorsKilled: killed, cursorsNotFound: notFound, cursorsAlive: [], cursorsUnknown: [], ok: 1 };
}

export function countCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'count');
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  const query = toView(optionalDocument(cmd, 'query') ?? {}) as Document;
  const skip = Math.max(0, optionalInt(cmd, 'skip') ?? 0);
  const limit = Math.abs(optionalInt(cmd, 'limit') ?? 0);
  let n: number;
  if (!coll) n = 0;
  else if (Object.keys(query).length === 0) n = coll.size;
  else n = findRecords(coll, query).length;
  n = Math.max(0, n - skip);
  if (limit > 0) n = Math.min(n, limit);
  return { n, ok: 1 };
}

export function distinctCommand(cmd: Document, ctx: CommandContext): Buffer {
  const name = collectionArg(cmd, 'distinct');
  const key = cmd['key'];
  if (typeof key !== 'string') throw engineError('TypeMismatch', "BSON field 'distinct.key' is the wrong type, expected type 'string'");
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  const query = toView(optionalDocument(cmd, 'query') ?? {}) as Document;
  const fromIndex = coll && cmd['collation'] === undefined ? distinctFromIndex(coll, query, key) : undefined;
  if (fromIndex) return distinctReply(fromIndex);
  const seen = new Set<string>();
  const values: unknown[] = [];
  for (const rec of findRecords(coll, query)) {
    // Strings are the same in the view as in the typed document: only records with other values
    // are deserialized again with their exact BSON types.
    let found = pathValues(rec.view, key);
    if (!found.every((v) => typeof v === 'string' || v === undefined)) found = pathValues(typedDocument(rec), key);
    for (const v of found) {
      if (v === undefined) continue;
      const k = encodeKey(v);
      if (seen.has(k)) continue;
      seen.add(k);
      values.push(v);
    }
  }
  return distinctReply(values);
}

/**
 * Serialized once, here: the size check and the reply are the same bytes. Past 16 MB mongod
 * answers 17217; a reply past the serializer's own buffer (17 MiB) fails to serialize at all.
 */
function distinctReply(values: unknown[]): Buffer {
  const tooBig = () => engineError('Location17217', 'distinct too big, 16mb cap');
  let reply: Buffer;
  try {
    reply = toBson({ values, ok: new Double(1) });
  } catch (err) {
    if (err instanceof RangeError || (err as { code?: unknown }).code === 'ERR_OUT_OF_RANGE') throw tooBig();
    throw err;
  }
  if (reply.length > 16 * 1024 * 1024) throw tooBig();
  return reply;
}
