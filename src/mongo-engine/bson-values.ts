import {
  Binary,
  BSONRegExp,
  BSONSymbol,
  Code,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  serialize,
  type Document,
} from 'bson';

/**
 * Helpers over BSON values in the two shapes the engine holds them:
 * - "typed": deserialized with promoteValues:false, numbers are Int32/Double/Long wrappers,
 *   so a document round-trips with its exact BSON types;
 * - "view": plain JS numbers (what mingo understands), used for matching, sorting and index keys.
 * Functions here accept both shapes unless they say otherwise.
 */

export function isPlainObject(v: unknown): v is Document {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function isNumeric(v: unknown): boolean {
  return (
    typeof v === 'number' ||
    typeof v === 'bigint' ||
    v instanceof Int32 ||
    v instanceof Double ||
    v instanceof Long ||
    v instanceof Decimal128
  );
}

/** The numeric value of a BSON number in either shape; undefined when not a number. */
export function numericValue(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Int32 || v instanceof Double) return v.value;
  if (v instanceof Long) return v.toNumber();
  if (v instanceof Decimal128) return Number(v.toString());
  return undefined;
}

/** Reads a numeric command option (limit, batchSize, ...), accepting any BSON number type. */
export function optionalNumber(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  return numericValue(v);
}

export function isTruthyOption(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  const n = numericValue(v);
  return n !== undefined ? n !== 0 : true;
}

/** Converts a typed value into its view shape (numbers promoted). Untouched subtrees are shared. */
export function toView(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof Int32 || v instanceof Double) return v.value;
  if (v instanceof Long) {
    const n = v.toNumber();
    return Number.isSafeInteger(n) ? n : v;
  }
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const c = toView(v[i]);
      if (c !== v[i] && out === undefined) out = v.slice(0, i);
      if (out !== undefined) out.push(c);
    }
    return out ?? v;
  }
  if (isPlainObject(v)) {
    let out: Document | undefined;
    const keys = Object.keys(v);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      const c = toView(v[k]);
      if (c !== v[k] && out === undefined) {
        out = {};
        for (let j = 0; j < i; j++) setField(out, keys[j] as string, v[keys[j] as string]);
      }
      if (out !== undefined) setField(out, k, c);
    }
    return out ?? v;
  }
  return v;
}

export function toViewDoc(d: Document): Document {
  return toView(d) as Document;
}

/** mongod's canonical type ordering for comparisons and sorts. */
export function typeRank(v: unknown): number {
  if (v === undefined || v === null) return 1;
  if (v instanceof MinKey) return 0;
  if (v instanceof MaxKey) return 127;
  if (isNumeric(v)) return 2;
  if (typeof v === 'string' || v instanceof BSONSymbol) return 3;
  if (Array.isArray(v)) return 5;
  if (v instanceof Binary || v instanceof Uint8Array) return 6;
  if (v instanceof ObjectId) return 7;
  if (typeof v === 'boolean') return 8;
  if (v instanceof Date) return 9;
  if (v instanceof Timestamp) return 10;
  if (v instanceof RegExp || v instanceof BSONRegExp) return 11;
  if (v instanceof Code) return 13;
  return 4; // objects and anything else
}

function cmp<T extends number | string | bigint>(a: T, b: T): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * mongod's order of strings: their UTF-8 bytes (code point order), computed without encoding
 * them. UTF-16 code units keep that order except that surrogates (D800-DFFF, halves of code
 * points from 0x10000) sort below E000-FFFF: moved above them here.
 */
export function compareStrings(x: string, y: string): number {
  if (x === y) return 0;
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const a = x.charCodeAt(i);
    const b = y.charCodeAt(i);
    if (a === b) continue;
    return a >= 0xd800 && b >= 0xd800 ? codePointRank(a) - codePointRank(b) : a - b;
  }
  return x.length - y.length;
}

function codePointRank(unit: number): number {
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

function compareNumbers(a: unknown, b: unknown): number {
  if (a instanceof Long && b instanceof Long) return a.compare(b);
  const x = numericValue(a) as number;
  const y = numericValue(b) as number;
  if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : -1; // NaN sorts below all numbers in mongod
  if (Number.isNaN(y)) return 1;
  return cmp(x, y);
}

function bytesOf(v: Binary | Uint8Array): Uint8Array {
  return v instanceof Binary ? v.buffer : v;
}

/** Total order over BSON values following mongod's comparison rules. */
export function compareValues(a: unknown, b: unknown): number {
  // fast paths for what index keys and sorts mostly hold
  if (typeof a === 'string' && typeof b === 'string') return Math.sign(compareStrings(a, b));
  if (typeof a === 'number' && typeof b === 'number' && a === a && b === b) return a < b ? -1 : a > b ? 1 : 0;
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return cmp(ra, rb);
  switch (ra) {
    case 0:
    case 1:
    case 127:
      return 0;
    case 2:
      return compareNumbers(a, b);
    case 3:
      return Math.sign(compareStrings(String(a instanceof BSONSymbol ? a.value : a), String(b instanceof BSONSymbol ? b.value : b)));
    case 4:
      return compareObjects(a as Document, b as Document);
    case 5: {
      const xa = a as unknown[];
      const xb = b as unknown[];
      const n = Math.min(xa.length, xb.length);
      for (let i = 0; i < n; i++) {
        const c = compareValues(xa[i], xb[i]);
        if (c !== 0) return c;
      }
      return cmp(xa.length, xb.length);
    }
    case 6: {
      const ba = bytesOf(a as Binary);
      const bb = bytesOf(b as Binary);
      if (ba.length !== bb.length) return cmp(ba.length, bb.length);
      const sa = a instanceof Binary ? a.sub_type : 0;
      const sb = b instanceof Binary ? b.sub_type : 0;
      if (sa !== sb) return cmp(sa, sb);
      return Buffer.compare(Buffer.from(ba.buffer, ba.byteOffset, ba.length), Buffer.from(bb.buffer, bb.byteOffset, bb.length));
    }
    case 7:
      // byte order is hex-string order, without building strings
      return Buffer.compare((a as ObjectId).id, (b as ObjectId).id);
    case 8:
      return cmp(a ? 1 : 0, b ? 1 : 0);
    case 9:
      return cmp((a as Date).getTime(), (b as Date).getTime());
    case 10:
      return (a as Timestamp).compare(b as Timestamp);
    case 11: {
      const [pa, fa] = regexParts(a);
      const [pb, fb] = regexParts(b);
      return Math.sign(compareStrings(pa, pb) || compareStrings(fa, fb));
    }
    default:
      return cmp(String(a), String(b));
  }
}

function regexParts(v: unknown): [string, string] {
  if (v instanceof RegExp) return [v.source, v.flags];
  if (v instanceof BSONRegExp) return [v.pattern, v.options];
  return ['', ''];
}

function compareObjects(a: Document, b: Document): number {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  const n = Math.min(ka.length, kb.length);
  for (let i = 0; i < n; i++) {
    const fa = ka[i] as string;
    const fb = kb[i] as string;
    const t = cmp(typeRank(a[fa]), typeRank(b[fb]));
    if (t !== 0) return t;
    const k = Math.sign(compareStrings(fa, fb));
    if (k !== 0) return k;
    const c = compareValues(a[fa], b[fb]);
    if (c !== 0) return c;
  }
  return cmp(ka.length, kb.length);
}

export function valuesEqual(a: unknown, b: unknown): boolean {
  return compareValues(a, b) === 0;
}

/**
 * Canonical string for a value such that equal values (by mongod's rules: 1 == 1.0 == 1L,
 * missing == null for index purposes) give equal strings. Used as the key of hash indexes.
 * No encoding contains a raw \u0001, so compound keys can be joined with it.
 */
export function encodeKey(v: unknown): string {
  if (v === undefined || v === null) return 'z';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      return 'n' + (Object.is(v, -0) ? '0' : String(v));
    case 'boolean':
      return v ? 'T' : 'F';
    case 'bigint':
      return 'n' + v.toString();
    default:
      break;
  }
  if (v instanceof ObjectId) return 'o' + v.toHexString();
  if (v instanceof Date) return 'd' + String(v.getTime());
  if (v instanceof Int32 || v instanceof Double) return encodeKey(v.value);
  if (v instanceof Long) {
    const n = v.toNumber();
    return Number.isSafeInteger(n) ? encodeKey(n) : 'n' + v.toString();
  }
  if (v instanceof Decimal128) return encodeKey(Number(v.toString()));
  if (Array.isArray(v)) return '[' + v.map(encodeKey).join(',') + ']';
  if (v instanceof Binary) return 'x' + String(v.sub_type) + ':' + Buffer.from(v.buffer).toString('base64');
  if (v instanceof Uint8Array) return 'x0:' + Buffer.from(v).toString('base64');
  if (v instanceof Timestamp) return 't' + v.toString();
  if (v instanceof RegExp) return 'r' + JSON.stringify([v.source, v.flags]);
  if (v instanceof BSONRegExp) return 'r' + JSON.stringify([v.pattern, v.options]);
  if (v instanceof MinKey) return '-';
  if (v instanceof MaxKey) return '+';
  if (v instanceof BSONSymbol) return JSON.stringify(v.value);
  if (isPlainObject(v)) {
    const parts: string[] = [];
    for (const k of Object.keys(v)) parts.push(JSON.stringify(k) + ':' + encodeKey(v[k]));
    return '{' + parts.join(',') + '}';
  }
  return 'u' + JSON.stringify(String(v));
}

/** BSON type name as mongod prints it in error messages and `$type` answers. */
export function bsonTypeName(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) <= 0x7fffffff ? 'int' : 'double';
  if (typeof v === 'bigint') return 'long';
  if (v instanceof Int32) return 'int';
  if (v instanceof Double) return 'double';
  if (v instanceof Long) return 'long';
  if (v instanceof Decimal128) return 'decimal';
  if (Array.isArray(v)) return 'array';
  if (v instanceof ObjectId) return 'objectId';
  if (v instanceof Date) return 'date';
  if (v instanceof Binary || v instanceof Uint8Array) return 'binData';
  if (v instanceof Timestamp) return 'timestamp';
  if (v instanceof RegExp || v instanceof BSONRegExp) return 'regex';
  if (v instanceof MinKey) return 'minKey';
  if (v instanceof MaxKey) return 'maxKey';
  if (v instanceof Code) return 'javascript';
  if (v instanceof BSONSymbol) return 'symbol';
  return 'object';
}

/** Renders a value like mongod does inside error messages (`{ name: "x" }`, `ObjectId('..')`). */
export function formatValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Int32 || v instanceof Double) return String(v.value);
  if (v instanceof Long) return v.toString();
  if (v instanceof Decimal128) return v.toString();
  if (v instanceof ObjectId) return `ObjectId('${v.toHexString()}')`;
  if (v instanceof Date) return `new Date(${v.getTime()})`;
  if (Array.isArray(v)) return v.length === 0 ? '[]' : '[ ' + v.map(formatValue).join(', ') + ' ]';
  if (v instanceof Binary) return `BinData(${v.sub_type}, ${Buffer.from(v.buffer).toString('hex').toUpperCase()})`;
  if (v instanceof Timestamp) return `Timestamp(${v.high}, ${v.low})`;
  if (v instanceof RegExp) return `/${v.source}/${v.flags}`;
  if (isPlainObject(v)) return formatDocument(v);
  return String(v);
}

export function formatDocument(d: Document): string {
  const keys = Object.keys(d);
  if (keys.length === 0) return '{}';
  return '{ ' + keys.map((k) => `${k}: ${formatValue(d[k])}`).join(', ') + ' }';
}

/** Deep copy of a typed value; BSON wrapper objects are immutable and shared. */
/**
 * `doc[key] = value`, also for the key `__proto__`: to MongoDB an ordinary field name, to a
 * plain assignment the object's prototype (the field would be dropped without a word).
 */
export function setField(doc: Document, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(doc, key, { value, writable: true, enumerable: true, configurable: true });
  else doc[key] = value;
}

export function cloneValue<T>(v: T): T {
  if (Array.isArray(v)) return v.map(cloneValue) as T;
  if (isPlainObject(v)) {
    const out: Document = {};
    for (const k of Object.keys(v)) setField(out, k, cloneValue(v[k]));
    return out as T;
  }
  if (v instanceof Date) return new Date(v.getTime()) as T;
  return v;
}

/**
 * All values a dotted path reaches in a document, descending through arrays the way
 * mongod's index key generation does. An array at the end is expanded into its elements
 * (empty arrays give `undefined`, indexed like a missing field).
 */
export function pathValues(doc: unknown, path: string): unknown[] {
  const out: unknown[] = [];
  collectPath(doc, path.split('.'), 0, out, true);
  return out;
}

function collectPath(v: unknown, segs: string[], i: number, out: unknown[], expandArrays: boolean): void {
  if (i === segs.length) {
    if (expandArrays && Array.isArray(v)) {
      if (v.length === 0) out.push(undefined);
      else for (const e of v) out.push(e);
    } else out.push(v);
    return;
  }
  const seg = segs[i] as string;
  if (Array.isArray(v)) {
    const idx = /^\d+$/.test(seg) ? Number(seg) : -1;
    if (idx >= 0 && idx < v.length) {
      collectPath(v[idx], segs, i + 1, out, expandArrays);
      return;
    }
    let descended = false;
    for (const e of v) {
      if (isPlainObject(e)) {
        collectPath(e, segs, i, out, expandArrays);
        descended = true;
      }
    }
    if (!descended) out.push(undefined);
    return;
  }
  if (isPlainObject(v)) {
    collectPath(v[seg], segs, i + 1, out, expandArrays);
    return;
  }
  out.push(undefined);
}

/** The value at a dotted path without array expansion (undefined when absent). */
export function getPath(doc: unknown, path: string): unknown {
  let cur: unknown = doc;
  for (const seg of path.split('.')) {
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(seg)) return undefined;
      cur = cur[Number(seg)];
    } else if (isPlainObject(cur)) {
      cur = cur[seg];
    } else return undefined;
  }
  return cur;
}

/** BSON bytes of a document as a Node Buffer (bson types its result as Uint8Array). */
export function toBson(doc: Document, ignoreUndefined = false): Buffer {
  const u = serialize(doc, { ignoreUndefined });
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
