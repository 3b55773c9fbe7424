import { type Document } from 'bson';
import { Aggregator } from 'mingo';
import { cloneValue, isPlainObject, toView, toBson } from '../bson-values.ts';
import { engineError, EngineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { compileFilter } from '../matcher.ts';
import { findRecords } from '../query-executor.ts';
import { cursorReply } from '../reply-builder.ts';
import { cursorBatchSize } from './command-args.ts';

/**
 * aggregate, evaluated by mingo over view-shaped documents. A leading $match is answered
 * by the query executor first so indexes narrow the input. Results keep JS number types
 * (int32 when integral, double otherwise), which is what drivers see from mongod in practice.
 */

const SUPPORTED_STAGES = new Set([
  '$addFields', '$bucket', '$bucketAuto', '$count', '$densify', '$documents', '$facet', '$fill',
  '$graphLookup', '$group', '$limit', '$lookup', '$match', '$project', '$redact', '$replaceRoot',
  '$replaceWith', '$sample', '$set', '$setWindowFields', '$skip', '$sort', '$sortByCount',
  '$unionWith', '$unset', '$unwind',
]);

const UNSUPPORTED_STAGES: Record<string, EngineError> = {
  $changeStream: engineError('ChangeStreamNotSupported', 'The $changeStream stage is only supported on replica sets'),
  $out: engineError('CommandNotSupported', '$out is not supported by the volreg embedded engine'),
  $merge: engineError('CommandNotSupported', '$merge is not supported by the volreg embedded engine'),
  $geoNear: engineError('CommandNotSupported', '$geoNear is not supported by the volreg embedded engine'),
  $search: engineError('CommandNotSupported', '$search is not supported by the volreg embedded engine'),
  $collStats: engineError('CommandNotSupported', '$collStats is not supported by the volreg embedded engine'),
  $indexStats: engineError('CommandNotSupported', '$indexStats is not supported by the volreg embedded engine'),
  $currentOp: engineError('CommandNotSupported', '$currentOp is not supported by the volreg embedded engine'),
  $listSessions: engineError('CommandNotSupported', '$listSessions is not supported by the volreg embedded engine'),
  $listLocalSessions: engineError('CommandNotSupported', '$listLocalSessions is not supported by the volreg embedded engine'),
  $planCacheStats: engineError('CommandNotSupported', '$planCacheStats is not supported by the volreg embedded engine'),
};

function checkPipeline(pipeline: Document[]): void {
  pipeline.forEach((stage, i) => {
    const keys = Object.keys(stage);
    if (keys.length !== 1) {
      throw engineError('Location40323', 'A pipeline stage specification object must contain exactly one field.');
    }
    const name = keys[0] as string;
    const bad = UNSUPPORTED_STAGES[name];
    if (bad) throw new EngineError(bad.code, bad.message);
    if (!SUPPORTED_STAGES.has(name)) throw engineError('Location40324', `Unrecognized pipeline stage name: '${name}'`);
    if (name === '$documents' && i !== 0) throw engineError('BadValue', '$documents is only valid as the first stage in a pipeline');
    const arg = stage[name];
    if (name === '$match' && isPlainObject(arg)) compileFilter(arg); // rejects $where/$text early
    if (name === '$facet' && isPlainObject(arg)) for (const sub of Object.values(arg)) if (Array.isArray(sub)) checkPipeline(sub as Document[]);
    if ((name === '$lookup' || name === '$unionWith') && isPlainObject(arg) && Array.isArray(arg['pipeline'])) checkPipeline(arg['pipeline'] as Document[]);
  });
}

export function aggregateCommand(cmd: Document, ctx: CommandContext): Buffer | Document {
  const target = cmd['aggregate'];
  const pipelineArg = cmd['pipeline'];
  if (!Array.isArray(pipelineArg) || !pipelineArg.every(isPlainObject)) {
    throw engineError('TypeMismatch', "'pipeline' option must be specified as an array");
  }
  if (cmd['explain'] !== undefined && cmd['explain'] !== false) {
    throw engineError('CommandNotSupported', 'explain is not supported by the volreg embedded engine');
  }
  if (!isPlainObject(cmd['cursor'])) {
    throw engineError('FailedToParse', "The 'cursor' option is required, except for aggregate with the explain argument");
  }
  const pipeline = toView(pipelineArg) as Document[];
  checkPipeline(pipeline);
  const catalog = ctx.state.catalog;
  let input: Document[] = [];
  let ns: string;
  let stages = pipeline;
  if (typeof target === 'string') {
    ns = `${ctx.db}.${target}`;
    const coll = catalog.getCollection(ctx.db, target);
    const first = stages[0];
    if (first && isPlainObject(first['$match'])) {
      input = findRecords(coll, first['$match'] as Document).map((r) => cloneValue(r.view));
      stages = stages.slice(1);
    } else if (coll) {
      input = [...coll.records.values()].map((r) => cloneValue(r.view));
    }
  } else {
    ns = `${ctx.db}.$cmd.aggregate`;
    if (!stages[0] || !('$documents' in stages[0])) {
      throw engineError('InvalidNamespace', "{aggregate: 1} is not valid for '$match'; a collection is required.");
    }
  }
  const resolved = new Map<string, Document[]>();
  const collectionResolver = (name: string): Document[] => {
    let docs = resolved.get(name);
    if (!docs) {
      const c = catalog.getCollection(ctx.db, name);
      docs = c ? [...c.records.values()].map((r) => cloneValue(r.view)) : [];
      resolved.set(name, docs);
    }
    return docs;
  };
  let results: Document[];
  try {
    results = new Aggregator(stages, { collectionResolver, scriptEnabled: false }).run(input) as Document[];
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw engineError('BadValue', err instanceof Error ? err.message : String(err));
  }
  const batch = ctx.state.cursors.open(ns, ctx.connectionId, results, (d: Document) => toBson(d, true), cursorBatchSize(cmd), false);
  return cursorReply('firstBatch', batch.docs, batch.id, ns);
}
