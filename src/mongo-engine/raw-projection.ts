/**
 * Inclusion or exclusion of top-level fields straight on a document's BSON bytes: the chosen
 * elements are copied as they are, in document order, which is what deserializing, picking and
 * re-serializing would produce, without doing either.
 */

/** Byte length of the value of an element of BSON type `type` starting at `pos`; -1 if unknown. */
function valueLength(buf: Buffer, type: number, pos: number): number {
  switch (type) {
    case 0x01: // double
    case 0x09: // UTC datetime
    case 0x11: // timestamp
    case 0x12: // int64
      return 8;
    case 0x02: // string
    case 0x0d: // JavaScript code
    case 0x0e: // symbol
      return 4 + buf.readInt32LE(pos);
    case 0x03: // document
    case 0x04: // array
    case 0x0f: // code with scope
      return buf.readInt32LE(pos);
    case 0x05: // binary: length, subtype, bytes
      return 5 + buf.readInt32LE(pos);
    case 0x06: // undefined
    case 0x0a: // null
    case 0xff: // MinKey
    case 0x7f: // MaxKey
      return 0;
    case 0x07: // ObjectId
      return 12;
    case 0x08: // boolean
      return 1;
    case 0x0b: {
      // regex: two cstrings
      const a = buf.indexOf(0, pos);
      return buf.indexOf(0, a + 1) + 1 - pos;
    }
    case 0x0c: // DBPointer: string + ObjectId
      return 4 + buf.readInt32LE(pos) + 12;
    case 0x10: // int32
      return 4;
    case 0x13: // decimal128
      return 16;
    default:
      return -1;
  }
}

/** Field names as UTF-8 bytes, for comparing element names in place. */
export function fieldNames(names: Iterable<string>): Buffer[] {
  return [...names].map((n) => Buffer.from(n, 'utf8'));
}

function isOneOf(raw: Buffer, from: number, to: number, fields: readonly Buffer[]): boolean {
  const len = to - from;
  for (const f of fields) {
    if (f.length !== len) continue;
    let i = 0;
    while (i < len && raw[from + i] === f[i]) i++;
    if (i === len) return true;
  }
  return false;
}

/**
 * The document with only the `fields` (include) or without them (exclude). Returns undefined
 * for bytes it cannot walk, so the caller can take the general path.
 */
export function projectTopLevel(raw: Buffer, fields: readonly Buffer[], include: boolean): Buffer | undefined {
  const end = raw.readInt32LE(0) - 1;
  const keep: Array<[number, number]> = [];
  let size = 5;
  let pos = 4;
  while (pos < end) {
    const start = pos;
    const type = raw[pos] as number;
    const nameEnd = raw.indexOf(0, pos + 1);
    if (nameEnd < 0 || nameEnd >= end) return undefined;
    const len = valueLength(raw, type, nameEnd + 1);
    if (len < 0) return undefined;
    pos = nameEnd + 1 + len;
    if (pos > end) return undefined;
    if (isOneOf(raw, start + 1, nameEnd, fields) === include) {
      keep.push([start, pos]);
      size += pos - start;
    }
  }
  const out = Buffer.allocUnsafe(size);
  out.writeInt32LE(size, 0);
  let o = 4;
  for (const [a, b] of keep) o += raw.copy(out, o, a, b);
  out[o] = 0;
  return out;
}
