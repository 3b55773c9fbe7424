import { type Document } from 'bson';
import { Query } from 'mingo';
import { isPlainObject, numericValue, setField, toView, toBson } from './bson-values.ts';
import { typedDocument, type StoredRecord } from './collection-store.ts';
import { engineError } from './errors.ts';
import { fieldNames, projectTopLevel } from './raw-projection.ts';

/**
 * Find projections. Plain inclusion/exclusion (the common case) is applied to the typed
 * document so BSON number types survive; projections with operators ($slice, $elemMatch,
 * positional `.$`, expressions) are evaluated by mingo on the view shape.
 */

type PathTree = { [k: string]: PathTree | true };
/** A tree without a prototype: a field named `__proto__` is a key like any other. */
const pathTree = (): PathTree => Object.create(null) as PathTree;

export interface Projector {
  /** raw BSON of the projected record */
  project(rec: StoredRecord): Buffer;
}

const IDENTITY: Projector = { project: (rec) => rec.raw };

function isComplex(key: string, v: unknown): boolean {
  if (key.endsWith('.$') || key.startsWith('$')) return true;
  if (typeof v === 'string' || Array.isArray(v)) return true;
  return isPlainObject(v);
}

function truthyFlag(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  const n = numericValue(v);
  return n === undefined ? undefined : n !== 0;
}

export function compileProjection(projection: Document | undefined, filterView: Document): Projector {
  if (!projection || Object.keys(projection).length === 0) return IDENTITY;
  const keys = Object.keys(projection);
  if (keys.some((k) => isComplex(k, projection[k]))) {
    const view = toView(projection) as Document;
    const q = new Query(filterView, { scriptEnabled: false });
    return {
      project: (rec) => {
        try {
          const out = q.find([rec.view], view).all()[0] ?? {};
          return toBson(out);
        } catch (err) {
          throw engineError('BadValue', err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  let includeId = true;
  let mode: 'include' | 'exclude' | undefined;
  const tree = pathTree();
  for (const k of keys) {
    const flag = truthyFlag(projection[k]);
    if (flag === undefined) throw engineError('BadValue', `Unsupported projection option: ${k}`);
    if (k === '_id') {
      includeId = flag;
      continue;
    }
    const m = flag ? 'include' : 'exclude';
    if (mode && mode !== m) {
      throw m === 'exclude'
        ? engineError('Location31254', `Cannot do exclusion on field ${k} in inclusion projection`)
        : engineError('BadValue', `Cannot do inclusion on field ${k} in exclusion projection`);
    }
    mode = m;
    addPath(tree, k.split('.'));
  }
  if (mode === undefined) mode = includeId ? 'include' : 'exclude';
  if (mode === 'include') {
    if (includeId) tree['_id'] = true;
  } else if (!includeId) tree['_id'] = true;
  const fn = mode === 'include' ? include : exclude;
  const general = (rec: StoredRecord): Buffer => toBson(fn(typedDocument(rec), tree) as Document);
  const names = Object.keys(tree);
  if (names.every((k) => tree[k] === true)) {
    // top-level fields only: copy the chosen elements' bytes
    const fields = fieldNames(names);
    const including = mode === 'include';
    return { project: (rec) => projectTopLevel(rec.raw, fields, including) ?? general(rec) };
  }
  return { project: general };
}

function addPath(tree: PathTree, segs: string[]): void {
  let cur = tree;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i] as string;
    if (i === segs.length - 1) {
      cur[s] = true;
      return;
    }
    const next = cur[s];
    if (next === true) return;
    if (next === undefined) cur[s] = pathTree();
    cur = cur[s] as PathTree;
  }
}

function include(v: unknown, tree: PathTree): unknown {
  if (Array.isArray(v)) {
    return v.filter((e) => isPlainObject(e) || Array.isArray(e)).map((e) => include(e, tree));
  }
  if (!isPlainObject(v)) return undefined;
  const out: Document = {};
  for (const k of Object.keys(v)) {
    const t = tree[k];
    if (t === undefined) continue;
    if (t === true) setField(out, k, v[k]);
    else if (isPlainObject(v[k]) || Array.isArray(v[k])) setField(out, k, include(v[k], t));
  }
  return out;
}

function exclude(v: unknown, tree: PathTree): unknown {
  if (Array.isArray(v)) return v.map((e) => (isPlainObject(e) || Array.isArray(e) ? exclude(e, tree) : e));
  if (!isPlainObject(v)) return v;
  const out: Document = {};
  for (const k of Object.keys(v)) {
    const t = tree[k];
    if (t === true) continue;
    setField(out, k, t === undefined ? v[k] : exclude(v[k], t));
  }
  return out;
}
