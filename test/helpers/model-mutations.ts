import fc from 'fast-check';
import { MT } from './manifest-fixtures.ts';

/**
 * Mutations of valid manifests for the /v2 fuzz tests: edits of the parsed JSON (a value
 * replaced at any path by one of the wrong type or out of range, a field removed or added,
 * deep nesting, a digest of the wrong algorithm, length or case) and of the raw bytes (a
 * duplicate key, 1e309, a BOM, invalid UTF-8, truncation).
 */

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path to a value in `doc` (objects by key, arrays by index), the root excluded. */
export function pathsOf(doc: Json, at: Array<string | number> = []): Array<Array<string | number>> {
  if (doc === null || typeof doc !== 'object') return [];
  const entries: Array<[string | number, Json]> = Array.isArray(doc) ? doc.map((v, i) => [i, v]) : Object.entries(doc);
  return entries.flatMap(([k, v]) => [[...at, k], ...pathsOf(v, [...at, k])]);
}

function parentOf(doc: Json, path: Array<string | number>): { parent: Json[] | { [k: string]: Json }; key: string | number } | null {
  let cur: Json = doc;
  for (const k of path.slice(0, -1)) {
    if (cur === null || typeof cur !== 'object') return null;
    cur = (cur as Record<string | number, Json>)[k as never] as Json;
  }
  if (cur === null || typeof cur !== 'object') return null;
  return { parent: cur, key: path[path.length - 1]! };
}

const HEX = 'abcdef0123456789';
const hex = (n: number): string => Array.from({ length: n }, (_, i) => HEX[(i * 7) % 16]).join('');

/** Digests that are wrong in one way each. */
export const BAD_DIGESTS = [
  `sha256:${hex(63)}`,
  `sha256:${hex(65)}`,
  `sha256:${hex(64).toUpperCase()}`,
  `SHA256:${hex(64)}`,
  `sha512:${hex(64)}`,
  `sha512:${hex(128)}`,
  `md5:${hex(32)}`,
  `sha384:${hex(96)}`,
  `sha256+b64u:${hex(43)}`,
  'sha256:',
  ':',
  '',
  `sha256:${hex(62)}é`,
  `sha256:${hex(64)}\n`,
  `sha256:../../${hex(58)}`,
];

const weirdValue: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(null, true, false, -1, 0, 1.5, -0.5, 2 ** 53, 2 ** 63, -(2 ** 63), Number.MAX_VALUE, '', 'x', [], {}, '\u0000', '\ud800', 'é'.repeat(300)),
  fc.constantFrom<Json>(...BAD_DIGESTS),
  fc.constantFrom<Json>(MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList, MT.schema1, MT.schema1Signed, 'text/plain', 'application/vnd.oci.image.manifest.v2+json', 'a/b/c'),
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.integer({ min: 100, max: 200 }).map((depth) => {
    let v: Json = 1;
    for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
    return v;
  }),
);

export type Mutation =
  | { op: 'set'; pick: number; value: Json }
  | { op: 'delete'; pick: number }
  | { op: 'add'; pick: number; key: string; value: Json }
  | { op: 'raw-duplicate-key'; key: string; value: string }
  | { op: 'raw-1e309'; pick: number }
  | { op: 'raw-bom' }
  | { op: 'raw-invalid-utf8'; at: number }
  | { op: 'raw-truncate'; at: number }
  | { op: 'raw-flip'; at: number; byte: number };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), pick: fc.nat(), value: weirdValue }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('add' as const), pick: fc.nat(), key: fc.constantFrom('mediaType', 'schemaVersion', 'subject', 'artifactType', 'annotations', 'urls', 'platform', 'extra', '__proto__', 'constructor', '$where', 'a.b'), value: weirdValue }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('raw-duplicate-key' as const), key: fc.constantFrom('mediaType', 'schemaVersion', 'config', 'layers', 'manifests', 'subject'), value: fc.constantFrom('"x"', '1', '2', 'null', '[]', '{}', `"${MT.ociIndex}"`) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('raw-1e309' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'raw-bom' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('raw-invalid-utf8' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('raw-truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('raw-flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }) },
);

/** Applies the JSON mutations in order, serializes (as the base was: `indent`), then the raw ones. */
export function mutate(base: Buffer, mutations: readonly Mutation[]): Buffer {
  const doc = JSON.parse(base.toString('utf8')) as Json;
  const indent = base.includes('\n') ? 3 : 0;
  for (const m of mutations) {
    if (m.op !== 'set' && m.op !== 'delete' && m.op !== 'add') continue;
    const paths = pathsOf(doc);
    if (paths.length === 0) continue;
    const path = paths[m.pick % paths.length]!;
    const at = parentOf(doc, path);
    if (!at) continue;
    const { parent, key } = at;
    if (m.op === 'set') (parent as Record<string | number, Json>)[key as never] = m.value;
    else if (m.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
    } else {
      const target = (parent as Record<string | number, Json>)[key as never];
      if (target && typeof target === 'object' && !Array.isArray(target)) Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      else if (typeof doc === 'object' && doc !== null && !Array.isArray(doc)) Object.defineProperty(doc, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    }
  }
  let bytes = Buffer.from(JSON.stringify(doc, null, indent) ?? 'null');
  for (const m of mutations) {
    if (m.op === 'raw-duplicate-key') {
      const open = bytes.indexOf('{');
      if (open >= 0) bytes = Buffer.concat([bytes.subarray(0, open + 1), Buffer.from(`"${m.key}":${m.value},`), bytes.subarray(open + 1)]);
    } else if (m.op === 'raw-1e309') {
      const numbers = [...bytes.toString('latin1').matchAll(/(?<=[:\[,]\s*)-?\d+(?:\.\d+)?/g)];
      if (numbers.length === 0) continue;
      const hit = numbers[m.pick % numbers.length]!;
      bytes = Buffer.concat([bytes.subarray(0, hit.index), Buffer.from('1e309'), bytes.subarray(hit.index! + hit[0].length)]);
    } else if (m.op === 'raw-bom') {
      bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]);
    } else if (m.op === 'raw-invalid-utf8') {
      const at = m.at % (bytes.length + 1);
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([0xc3, 0x28, 0xff]), bytes.subarray(at)]);
    } else if (m.op === 'raw-truncate') {
      bytes = bytes.subarray(0, m.at % (bytes.length + 1));
    } else if (m.op === 'raw-flip' && bytes.length > 0) {
      bytes = Buffer.from(bytes);
      bytes[m.at % bytes.length] = m.byte;
    }
  }
  return bytes;
}

/** Content-Type values a push may carry: each manifest type, generic ones, parameters, nonsense, none. */
export const contentTypeArb: fc.Arbitrary<string | null> = fc.oneof(
  fc.constantFrom<string | null>(null, MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList, MT.schema1, MT.schema1Signed),
  fc.constantFrom<string | null>('', 'application/json', 'application/octet-stream', 'text/plain', `${MT.ociManifest}; charset=utf-8`, MT.ociManifest.toUpperCase(), 'application/vnd.oci.image.manifest.v1+json, text/plain', ';', '*/*', 'multipart/form-data; boundary=x', 'application/vnd.oci.image.config.v1+json'),
);
