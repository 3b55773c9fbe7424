import { deserialize, type Document } from 'bson';
import { toBson } from './bson-values.ts';
import { crc32c } from './crc32c.ts';
import type { DdlOp } from './collection-store.ts';

/**
 * On-disk record framing shared by journal and snapshot files:
 *
 *   u32 payloadLength | u32 crc32c(payload) | payload
 *   payload = u8 kind | u16 nsLength | ns (utf8) | body (BSON)
 *
 * kind PUT: body is the document's exact BSON (insert or full post-image of an update)
 * kind REMOVE: body is { id }
 * kind DDL: body is { op, args }
 * A record whose length runs past the end of the file or whose checksum fails marks a torn tail.
 */

export const KIND_PUT = 1;
export const KIND_REMOVE = 2;
export const KIND_DDL = 3;

export type JournalRecord =
  | { kind: typeof KIND_PUT; ns: string; doc: Buffer }
  | { kind: typeof KIND_REMOVE; ns: string; id: unknown }
  | { kind: typeof KIND_DDL; op: DdlOp; args: Document };

const HEADER = 8;

function frame(kind: number, ns: string, body: Buffer): Buffer {
  const nsBytes = Buffer.from(ns, 'utf8');
  const payloadLen = 3 + nsBytes.length + body.length;
  const out = Buffer.allocUnsafe(HEADER + payloadLen);
  out[HEADER] = kind;
  out.writeUInt16LE(nsBytes.length, HEADER + 1);
  nsBytes.copy(out, HEADER + 3);
  body.copy(out, HEADER + 3 + nsBytes.length);
  out.writeUInt32LE(payloadLen, 0);
  out.writeUInt32LE(crc32c(out, HEADER, out.length), 4);
  return out;
}

export function encodePut(ns: string, raw: Buffer): Buffer {
  return frame(KIND_PUT, ns, raw);
}

export function encodeRemove(ns: string, id: unknown): Buffer {
  return frame(KIND_REMOVE, ns, toBson({ id }));
}

export function encodeDdl(op: DdlOp, args: Document): Buffer {
  return frame(KIND_DDL, '', toBson({ op, args }));
}

export interface DecodeResult {
  records: JournalRecord[];
  /** byte offset just past the last good record */
  goodLength: number;
  /** true when bytes after goodLength were not a valid record */
  torn: boolean;
}

export function decodeRecords(buf: Buffer): DecodeResult {
  const records: JournalRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    if (off + HEADER > buf.length) return { records, goodLength: off, torn: true };
    const len = buf.readUInt32LE(off);
    const crc = buf.readUInt32LE(off + 4);
    const start = off + HEADER;
    const end = start + len;
    if (len < 3 || end > buf.length || crc32c(buf, start, end) !== crc) return { records, goodLength: off, torn: true };
    const kind = buf[start];
    const nsLen = buf.readUInt16LE(start + 1);
    const ns = buf.toString('utf8', start + 3, start + 3 + nsLen);
    const body = buf.subarray(start + 3 + nsLen, end);
    try {
      if (kind === KIND_PUT) records.push({ kind, ns, doc: Buffer.from(body) });
      else if (kind === KIND_REMOVE) records.push({ kind, ns, id: deserialize(body, { promoteValues: false })['id'] });
      else if (kind === KIND_DDL) {
        const d = deserialize(body, { promoteValues: false });
        records.push({ kind, op: d['op'] as DdlOp, args: d['args'] as Document });
      } else return { records, goodLength: off, torn: true };
    } catch {
      return { records, goodLength: off, torn: true };
    }
    off = end;
  }
  return { records, goodLength: off, torn: false };
}
