import type { Long } from 'bson';

/**
 * Builds the BSON of cursor replies directly from stored document bytes, so a find never
 * deserializes and re-serializes the documents it returns.
 */

function cstring(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

function arrayOfRaw(docs: Buffer[]): Buffer {
  let size = 5;
  for (let i = 0; i < docs.length; i++) size += 2 + decimalDigits(i) + (docs[i] as Buffer).length;
  const out = Buffer.allocUnsafe(size);
  out.writeInt32LE(size, 0);
  let o = 4;
  for (let i = 0; i < docs.length; i++) {
    out[o++] = 0x03;
    o += out.write(String(i), o, 'latin1');
    out[o++] = 0;
    o += (docs[i] as Buffer).copy(out, o);
  }
  out[o] = 0;
  return out;
}

function decimalDigits(i: number): number {
  return i < 10 ? 1 : i < 100 ? 2 : i < 1000 ? 3 : String(i).length;
}

export function cursorReply(batchField: 'firstBatch' | 'nextBatch', docs: Buffer[], id: Long, ns: string): Buffer {
  const batch = arrayOfRaw(docs);
  const nsBytes = Buffer.from(ns, 'utf8');
  const batchName = cstring(batchField);
  // cursor subdocument: <array batch> <int64 id> <string ns>
  const cursorSize = 4 + 1 + batchName.length + batch.length + 1 + 3 + 8 + 1 + 3 + 4 + nsBytes.length + 1 + 1;
  const total = 4 + 1 + 7 + cursorSize + 1 + 3 + 8 + 1;
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  out.writeInt32LE(total, o); o += 4;
  out[o++] = 0x03; o += out.write('cursor\0', o, 'latin1');
  out.writeInt32LE(cursorSize, o); o += 4;
  out[o++] = 0x04; o += batchName.copy(out, o);
  o += batch.copy(out, o);
  out[o++] = 0x12; o += out.write('id\0', o, 'latin1');
  out.writeInt32LE(id.low, o); out.writeInt32LE(id.high, o + 4); o += 8;
  out[o++] = 0x02; o += out.write('ns\0', o, 'latin1');
  out.writeInt32LE(nsBytes.length + 1, o); o += 4;
  o += nsBytes.copy(out, o);
  out[o++] = 0;
  out[o++] = 0; // end of cursor
  out[o++] = 0x01; o += out.write('ok\0', o, 'latin1');
  out.writeDoubleLE(1, o); o += 8;
  out[o++] = 0;
  return out;
}
