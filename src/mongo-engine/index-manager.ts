import type { Document } from 'bson';
import { encodeKey, formatValue, isPlainObject, numericValue, pathValues, toView } from './bson-values.ts';
import { engineError } from './errors.ts';
import { compileFilter, type Matcher } from './matcher.ts';
import { OrderedEntries } from './ordered-entries.ts';

/**
 * Secondary indexes, kept two ways. Hash maps from a canonical encoding of the key values to
 * record ids: a compound index keeps one map per key prefix, so equality lookups on any prefix
 * (and unique checks) are a single Map.get. And the same entries in key order (ordered-entries.ts),
 * which range predicates and sorts walk from a position instead of scanning the collection. The
 * order is built the first time a query needs it and maintained from then on, so indexes only
 * ever used for lookups (most of them) never pay for it.
 */

export type RecordId = string;

/** A map value is a single id (the common unique case) or a set of ids. */
type Postings = RecordId | Set<RecordId>;

const SEP = '\u0001';

export interface KeyEntry {
  /** encoded full key */
  key: string;
  /** the values (view shape) of each indexed field for this key */
  values: unknown[];
}

export class Index {
  readonly name: string;
  readonly fields: string[];
  readonly unique: boolean;
  readonly sparse: boolean;
  readonly spec: Document;
  private readonly partial: Matcher | undefined;
  /** prefixMaps[j] maps the encoding of the first j+1 field values to ids */
  private readonly prefixMaps: Array<Map<string, Postings>>;
  /** direction of each field (1 or -1) */
  readonly dirs: Array<1 | -1>;
  /** hashed indexes have no meaningful order */
  readonly orderable: boolean;
  /** entries in key order, once a query asked for them */
  private ordered: OrderedEntries | undefined;
  /** records that have more than one entry (array values): their order cannot serve sorts */
  private multikeyRecords = 0;

  constructor(spec: Document) {
    this.spec = spec;
    this.name = String(spec['name']);
    this.fields = Object.keys(spec['key'] as Document);
    this.unique = spec['unique'] === true || this.name === '_id_';
    this.sparse = spec['sparse'] === true;
    const pfe = spec['partialFilterExpression'];
    this.partial = isPlainObject(pfe) ? compileFilter(toView(pfe) as Document) : undefined;
    this.prefixMaps = this.fields.map(() => new Map<string, Postings>());
    const key = spec['key'] as Document;
    this.dirs = this.fields.map((f) => ((numericValue(key[f]) ?? 1) < 0 ? -1 : 1));
    this.orderable = !this.fields.some((f) => typeof key[f] === 'string');
  }

  /** The entries in key order, built from `records` (all of the collection's) on first use. */
  orderedEntries(records: Iterable<{ rid: RecordId; view: Document }>): OrderedEntries {
    if (!this.orderable) throw new Error(`index ${this.name} has no order`);
    if (!this.ordered) {
      const all: Array<{ vals: unknown[]; rid: RecordId }> = [];
      for (const rec of records) for (const e of this.entriesFor(rec.view)) all.push({ vals: e.values, rid: rec.rid });
      const ordered = new OrderedEntries(this.dirs);
      ordered.load(all);
      this.ordered = ordered;
    }
    return this.ordered;
  }

  /** True while some record has several entries (an array in an indexed field). */
  get isMultikey(): boolean {
    return this.multikeyRecords > 0;
  }

  get isPartial(): boolean {
    return this.partial !== undefined;
  }

  get expireAfterSeconds(): number | undefined {
    return numericValue(this.spec['expireAfterSeconds']);
  }

  /** The index entries of a document (several when a field is an array), or [] if it is not indexed. */
  entriesFor(view: Document): KeyEntry[] {
    if (this.partial && !this.partial.test(view)) return [];
    if (this.fields.length === 1) {
      const vals = dedupe(pathValues(view, this.fields[0] as string));
      if (this.sparse && vals.every((v) => v === undefined)) return [];
      return vals.map((v) => ({ key: encodeKey(v), values: [v] }));
    }
    const perField = this.fields.map((f) => pathValues(view, f));
    if (this.sparse && perField.every((vals) => vals.every((v) => v === undefined))) return [];
    let combos: unknown[][] = [[]];
    for (const vals of perField) {
      const uniq = dedupe(vals);
      const next: unknown[][] = [];
      for (const c of combos) for (const v of uniq) next.push([...c, v]);
      combos = next;
    }
    return combos.map((values) => ({ key: values.map(encodeKey).join(SEP), values }));
  }

  add(rid: RecordId, view: Document, entries = this.entriesFor(view)): void {
    if (this.ordered) for (const e of entries) this.ordered.insert({ vals: e.values, rid });
    if (entries.length > 1) this.multikeyRecords++;
    if (this.fields.length === 1) {
      for (const e of entries) addPosting(this.prefixMaps[0] as Map<string, Postings>, e.key, rid);
      return;
    }
    for (const e of entries) {
      const parts = e.key.split(SEP);
      for (let j = 0; j < this.fields.length; j++) {
        const k = j === this.fields.length - 1 ? e.key : parts.slice(0, j + 1).join(SEP);
        addPosting(this.prefixMaps[j] as Map<string, Postings>, k, rid);
      }
    }
  }

  remove(rid: RecordId, view: Document): void {
    this.removeEntries(rid, this.entriesFor(view));
  }

  /** Moves a replaced record's entries; nothing to do when its keys did not change. */
  update(rid: RecordId, oldView: Document, view: Document, entries: KeyEntry[]): void {
    const old = this.entriesFor(oldView);
    if (old.length === entries.length && old.every((e, i) => e.key === (entries[i] as KeyEntry).key)) return;
    this.removeEntries(rid, old);
    this.add(rid, view, entries);
  }

  private removeEntries(rid: RecordId, entries: KeyEntry[]): void {
    if (this.ordered) for (const e of entries) this.ordered.remove({ vals: e.values, rid });
    if (entries.length > 1) this.multikeyRecords--;
    if (this.fields.length === 1) {
      for (const e of entries) removePosting(this.prefixMaps[0] as Map<string, Postings>, e.key, rid);
      return;
    }
    for (const e of entries) {
      const parts = e.key.split(SEP);
      for (let j = 0; j < this.fields.length; j++) {
        const k = j === this.fields.length - 1 ? e.key : parts.slice(0, j + 1).join(SEP);
        removePosting(this.prefixMaps[j] as Map<string, Postings>, k, rid);
      }
    }
  }

  /** For unique indexes: the first entry of `view` already owned by another record. */
  findConflict(rid: RecordId, entries: KeyEntry[]): KeyEntry | undefined {
    if (!this.unique) return undefined;
    const full = this.prefixMaps[this.fields.length - 1] as Map<string, Postings>;
    for (const e of entries) {
      const p = full.get(e.key);
      if (p === undefined) continue;
      if (typeof p === 'string') {
        if (p !== rid) return e;
      } else {
        for (const other of p) if (other !== rid) return e;
      }
    }
    return undefined;
  }

  /** Ids whose first `values.length` fields equal the given (one value per field). */
  lookup(values: unknown[], out: Set<RecordId>): void {
    const key = values.map(encodeKey).join(SEP);
    const p = (this.prefixMaps[values.length - 1] as Map<string, Postings>).get(key);
    if (p === undefined) return;
    if (typeof p === 'string') out.add(p);
    else for (const id of p) out.add(id);
  }

  clear(): void {
    for (const m of this.prefixMaps) m.clear();
    this.ordered = undefined;
    this.multikeyRecords = 0;
  }

  /** mongod's duplicate-key error for an entry of this index. */
  duplicateKeyError(ns: string, entry: KeyEntry): Error {
    const keyPattern: Document = {};
    const keyValue: Document = {};
    const specKey = this.spec['key'] as Document;
    this.fields.forEach((f, i) => {
      keyPattern[f] = toView(specKey[f]);
      keyValue[f] = entry.values[i] === undefined ? null : entry.values[i];
    });
    const shown = this.fields.map((f, i) => `${f}: ${formatKeyValue(entry.values[i])}`).join(', ');
    return engineError(
      'DuplicateKey',
      `E11000 duplicate key error collection: ${ns} index: ${this.name} dup key: { ${shown} }`,
      { keyPattern, keyValue },
    );
  }
}

function formatKeyValue(v: unknown): string {
  return v === undefined ? 'null' : formatValue(v);
}

function dedupe(vals: unknown[]): unknown[] {
  if (vals.length <= 1) return vals;
  const seen = new Set<string>();
  const out: unknown[] = [];
  for (const v of vals) {
    const k = encodeKey(v);
    if (!seen.has(k)) {
      seen.add(k);
      out.push(v);
    }
  }
  return out;
}

function addPosting(map: Map<string, Postings>, key: string, rid: RecordId): void {
  const p = map.get(key);
  if (p === undefined) map.set(key, rid);
  else if (typeof p === 'string') {
    if (p !== rid) map.set(key, new Set([p, rid]));
  } else p.add(rid);
}

function removePosting(map: Map<string, Postings>, key: string, rid: RecordId): void {
  const p = map.get(key);
  if (p === undefined) return;
  if (typeof p === 'string') {
    if (p === rid) map.delete(key);
  } else {
    p.delete(rid);
    if (p.size === 1) map.set(key, p.values().next().value as RecordId);
    else if (p.size === 0) map.delete(key);
  }
}

/** Default index name from a key pattern, as mongod builds it: { a: 1, b: -1 } -> "a_1_b_-1". */
export function defaultIndexName(key: Document): string {
  return Object.keys(key)
    .map((k) => `${k}_${String(toView(key[k]))}`)
    .join('_');
}
