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
 * kind COMMIT (journal only): body is a u64 LE, the file offset where its write batch began;
 *   it ends every batch the journal writes and syncs as one (journal.ts)
 * kind HEAD: body is { file: 'journal' | 'snapshot', generation, store }, the first record of
 *   every file (format 3): which generation it is and which store (a random id fixed when the
 *   directory was created) it belongs to, so a missing or foreign file is noticed
 * kind SEAL (snapshot only): body is { generation, records, store }, its last record: a snapshot
 *   without it, or whose count differs, is incomplete (a snapshot cut at a record boundary
 *   decodes cleanly otherwise)
 *
 * A record whose length runs past the end of the file or whose checksum fails is damage. At the
 * end of the last journal that is a torn tail: the batch being written when the process died,
 * whose writers were never acknowledged. But a batch is written only after the one before it
 * was synced, so damage followed by the commit record of a batch that began after it is in
 * bytes that were synced and acknowledged: decodeRecords says so (`acknowledgedAfter`).
 */

export const KIND_PUT = 1;
export const KIND_REMOVE = 2;
export const KIND_DDL = 3;
export const KIND_COMMIT = 4;
export const KIND_HEAD = 5;
export const KIND_SEAL = 6;

/** What the HEAD record of a file says. */
export interface FileHead {
  file: 'journal' | 'snapshot';
  generation: number;
  store: string;
}

/** What the SEAL record of a snapshot says. */
export interface FileSeal {
  generation: number;
  /** PUT, REMOVE and DDL records before it */
  records: number;
  store: string;
}

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

export function encodeHead(head: FileHead): Buffer {
  return frame(KIND_HEAD, '', toBson({ ...head }));
}

export function encodeSeal(seal: FileSeal): Buffer {
  return frame(KIND_SEAL, '', toBson({ ...seal }));
}

const COMMIT_BODY = 8;
const COMMIT_PAYLOAD = 3 + COMMIT_BODY;

/** The record that ends a write batch which began at file offset `batchStart`. */
export function encodeCommit(batchStart: number): Buffer {
  const body = Buffer.alloc(COMMIT_BODY);
  body.writeBigUInt64LE(BigInt(batchStart));
  return frame(KIND_COMMIT, '', body);
}

/** Where the batches of the intact commit records after `from` began (a linear scan; only run on damage). */
function* commitsAfter(buf: Buffer, from: number): Generator<number> {
  for (let p = from + 1; p + HEADER + COMMIT_PAYLOAD <= buf.length; p++) {
    if (buf.readUInt32LE(p) !== COMMIT_PAYLOAD || buf[p + HEADER] !== KIND_COMMIT) continue;
    const start = p + HEADER;
    if (crc32c(buf, start, start + COMMIT_PAYLOAD) === buf.readUInt32LE(p + 4)) yield Number(buf.readBigUInt64LE(start + 3));
  }
}

export interface DecodeResult {
  /** the records, when decodeRecords was given no `onRecord` to hand them to */
  records: JournalRecord[];
  /** how many PUT, REMOVE and DDL records were decoded */
  count: number;
  /** byte offset just past the last good record */
  goodLength: number;
  /** true when bytes after goodLength were not a valid record */
  torn: boolean;
  /** torn, and a batch written after the damage follows it: the damaged bytes had been acknowledged */
  acknowledgedAfter: boolean;
  /** torn, and the damaged batch's commit record is intact: it was written whole, then damaged (or cut by a power loss before its sync) */
  writtenWhole: boolean;
  /** the file's HEAD record (its first), if it has one */
  head?: FileHead;
  /** the file's SEAL record, if it has one (nothing may follow it) */
  seal?: FileSeal;
}

/**
 * Decodes the records of a file's bytes. With `onRecord`, each is handed over as it is decoded
 * and none is kept, and a PUT's `doc` is a view into `buf` (copy what is kept): start-up then
 * never holds a second copy of a whole snapshot besides the file's bytes and the catalog.
 */
export function decodeRecords(buf: Buffer, onRecord?: (rec: JournalRecord) => void): DecodeResult {
  const records: JournalRecord[] = [];
  let count = 0;
  const take = (rec: JournalRecord): void => {
    count++;
    if (onRecord) onRecord(rec);
    else records.push(rec);
  };
  const marks: { head?: FileHead; seal?: FileSeal } = {};
  const damaged = (off: number): DecodeResult => {
    const begun = [...commitsAfter(buf, off)];
    // a commit of a batch begun after the damage: acknowledged bytes; any commit: the damaged batch was written whole
    return { records, count, goodLength: off, torn: true, acknowledgedAfter: begun.some((b) => b > off), writtenWhole: begun.length > 0, ...marks };
  };
  let off = 0;
  let unknown: number | undefined;
  while (off < buf.length) {
    if (marks.seal) return damaged(off); // nothing follows a seal
    if (off + HEADER > buf.length) return damaged(off);
    const len = buf.readUInt32LE(off);
    const crc = buf.readUInt32LE(off + 4);
    const start = off + HEADER;
    const end = start + len;
    if (len < 3 || end > buf.length || crc32c(buf, start, end) !== crc) return damaged(off);
    const kind = buf[start];
    const nsLen = buf.readUInt16LE(start + 1);
    const ns = buf.toString('utf8', start + 3, start + 3 + nsLen);
    const body = buf.subarray(start + 3 + nsLen, end);
    let rec: JournalRecord | undefined;
    try {
      if (kind === KIND_PUT) rec = { kind, ns, doc: onRecord ? body : Buffer.from(body) };
      else if (kind === KIND_REMOVE) rec = { kind, ns, id: deserialize(body, { promoteValues: false })['id'] };
      else if (kind === KIND_DDL) {
        const d = deserialize(body, { promoteValues: false });
        rec = { kind, op: d['op'] as DdlOp, args: d['args'] as Document };
      } else if (kind === KIND_HEAD) {
        if (off !== 0) return damaged(off);
        const d = deserialize(body);
        marks.head = { file: d['file'] as FileHead['file'], generation: Number(d['generation']), store: String(d['store']) };
      } else if (kind === KIND_SEAL) {
        const d = deserialize(body);
        marks.seal = { generation: Number(d['generation']), records: Number(d['records']), store: String(d['store']) };
      } else if (kind !== KIND_COMMIT) unknown = kind;
    } catch {
      return damaged(off);
    }
    // A record intact but of a kind this version does not know was written by a newer one:
    // never damage to truncate.
    if (unknown !== undefined) throw newerFormat('the metadata files', `a record of kind ${unknown}`);
    // Outside the try: what the receiver throws is its own failure, not damage in the file.
    if (rec) take(rec);
    off = end;
  }
  return { records, count, goodLength: off, torn: false, acknowledgedAfter: false, writtenWhole: false, ...marks };
}

/** The refusal for data a newer engine wrote: starting would lose what this one cannot read. */
export function newerFormat(where: string, what: string): Error {
  return new Error(
    `${where} was written by a newer volreg (${what}); refusing to start rather than lose what it wrote. ` +
      'Run that version again, or restore a backup made before it.',
  );
}
