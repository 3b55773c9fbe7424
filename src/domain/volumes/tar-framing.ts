/**
 * Follows the 512-byte block structure of a tar stream to answer what `tar-stream` does not:
 * did the archive end with its end-of-archive marker (two zero blocks), and is there anything
 * but zero padding after it? tar-stream skips zero blocks silently, so a tar cut at an entry
 * boundary, or one with a second archive or garbage appended, would otherwise pass.
 *
 * Only header blocks are examined; entry data is counted, never looked at (pax headers are
 * read for the `size` key, which overrides the size field of the next header).
 *
 * Asked to (`keepMtimeFields`), it also keeps each entry's raw mtime field until the reader of
 * the parsed entries takes it: tar-stream misreads some (entry-attributes.ts says which), and
 * its parsed header does not carry the raw block. The framing sees each header before the
 * parser does, so the fields wait in a queue, in entry order.
 */
const BLOCK = 512;
const MAX_PAX_BYTES = 1024 * 1024;

export class TarFramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFramingError';
  }
}

function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function readNumeric(block: Uint8Array, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if (field[0]! & 0x80) {
    // GNU base-256: big-endian, first byte's high bit is the marker
    if (field[0] === 0xff) throw new TarFramingError('negative size in tar header');
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  let text = '';
  for (const byte of field) {
    if (byte === 0 || byte === 0x20) {
      if (text.length > 0) break;
      continue;
    }
    if (byte < 0x30 || byte > 0x37) throw new TarFramingError('malformed numeric field in tar header');
    text += String.fromCharCode(byte);
  }
  return text.length === 0 ? 0 : parseInt(text, 8);
}

function paxSize(data: Buffer): number | null {
  let rest = data;
  let size: number | null = null;
  while (rest.length > 0) {
    const space = rest.indexOf(0x20);
    if (space <= 0) break;
    const lenText = rest.subarray(0, space).toString('latin1');
    const len = Number(lenText);
    if (!DECIMAL.test(lenText) || len <= space || len > rest.length) throw new TarFramingError('malformed pax header');
    const record = rest.subarray(space + 1, len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0 && record.slice(0, eq) === 'size') {
      const text = record.slice(eq + 1);
      const value = Number(text);
      // decimal digits only, as POSIX says and GNU tar checks (Number would take 0x10 or 1e3)
      if (!DECIMAL.test(text) || !Number.isSafeInteger(value)) throw new TarFramingError('malformed pax size');
      size = value;
    }
    rest = rest.subarray(len);
  }
  return size;
}

const DECIMAL = /^[0-9]{1,16}$/;

const MTIME_OFFSET = 136;
const MTIME_LENGTH = 12;

/** An entry header's numeric fields other than size (which readNumeric reads strictly): offset, length. */
const ATTRIBUTE_FIELDS: ReadonlyArray<[name: string, offset: number, length: number]> = [
  ['mode', 100, 8],
  ['uid', 108, 8],
  ['gid', 116, 8],
  ['mtime', MTIME_OFFSET, MTIME_LENGTH],
];
/** ...and a device's numbers (tar reads them for devices only) */
const DEVICE_FIELDS: ReadonlyArray<[name: string, offset: number, length: number]> = [
  ['devmajor', 329, 8],
  ['devminor', 337, 8],
];

/**
 * The raw text of a numeric field whose octal digits are followed by something else ("7K",
 * "0649"), or null. tar-stream reads the digits and ignores the rest (mode 7, mode 0o64); GNU tar
 * fails on the field ("Archive contains '7K' where numeric mode_t value expected"), so the two
 * would restore different things. A field with no digit at all tar-stream reads as NaN, which
 * entry-attributes.ts judges (a pax record may stand in for it).
 */
function digitsThenJunk(block: Uint8Array, offset: number, length: number): string | null {
  const field = block.subarray(offset, offset + length);
  if (field[0]! & 0x80) return null; // base-256
  let i = 0;
  while (i < field.length && field[i] === 0x20) i++;
  while (i < field.length && field[i] === 0) i++;
  const digitsStart = i;
  while (i < field.length && field[i]! >= 0x30 && field[i]! <= 0x37) i++;
  if (i === digitsStart || i === field.length || field[i] === 0 || field[i] === 0x20) return null;
  return JSON.stringify(Buffer.from(field).toString('latin1').replace(/[\0 ]+$/, ''));
}

const META_TYPES = new Set(['x', 'g', 'L', 'K']);

export class TarFraming {
  /** Entries seen (pax and GNU long-name headers are not entries). */
  entries = 0;
  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  /** bytes of entry data (and its padding) still to skip */
  private skip = 0;
  private paxChunks: Buffer[] | null = null;
  private paxWanted = 0;
  private nextSizeOverride: number | null = null;
  private zeroBlocks = 0;
  /** mtime fields of entries framed but not yet taken (null: not kept) */
  private readonly mtimeFields: Buffer[] | null;

  constructor(opts: { keepMtimeFields?: boolean } = {}) {
    this.mtimeFields = opts.keepMtimeFields ? [] : null;
  }

  /**
   * The raw mtime field of the next entry not yet taken (with keepMtimeFields): a tar parser
   * fed the same bytes hands its entries over in this order. Call once per parsed entry.
   */
  takeMtimeField(): Buffer {
    const field = this.mtimeFields?.shift();
    if (field === undefined) throw new TarFramingError('tar structure is inconsistent');
    return field;
  }

  /** Whether the end-of-archive marker has been seen. */
  get ended(): boolean {
    return this.zeroBlocks >= 2;
  }

  /**
   * Follows `chunk`; returns how many of its bytes belong to the archive, end-of-archive marker
   * included. The rest is padding after the marker, which a tar parser need not see (tar-stream
   * refuses padding that is not whole blocks; GNU tar reads it).
   */
  write(chunk: Uint8Array): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        if (this.paxChunks && this.paxWanted > 0) {
          const take = Math.min(n, this.paxWanted);
          this.paxChunks.push(Buffer.from(chunk.subarray(at, at + take)));
          this.paxWanted -= take;
        }
        this.skip -= n;
        at += n;
        if (this.skip === 0 && this.paxChunks) {
          this.nextSizeOverride = paxSize(Buffer.concat(this.paxChunks));
          this.paxChunks = null;
        }
        continue;
      }
      if (this.ended) {
        // After the marker only zero padding (to the record size) may follow.
        for (let i = at; i < chunk.length; i++) {
          if (chunk[i] !== 0) throw new TarFramingError('data after the end-of-archive marker');
        }
        return at;
      }
      const n = Math.min(BLOCK - this.headerFill, chunk.length - at);
      this.header.set(chunk.subarray(at, at + n), this.headerFill);
      this.headerFill += n;
      at += n;
      if (this.headerFill === BLOCK) {
        this.headerFill = 0;
        this.onHeader(this.header);
      }
    }
    return at;
  }

  private onHeader(block: Buffer): void {
    if (isZeroBlock(block)) {
      this.zeroBlocks++;
      return;
    }
    if (this.zeroBlocks > 0) throw new TarFramingError('entry after a zero block');
    const typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156]!);
    let size = readNumeric(block, 124, 12);
    if (!Number.isSafeInteger(size)) throw new TarFramingError('entry size out of range');
    if (META_TYPES.has(typeflag)) {
      if (size > MAX_PAX_BYTES) throw new TarFramingError('extended header too large');
      if (typeflag === 'x') {
        this.paxChunks = [];
        this.paxWanted = size;
      }
    } else {
      this.entries++;
      const fields = typeflag === '3' || typeflag === '4' ? [...ATTRIBUTE_FIELDS, ...DEVICE_FIELDS] : ATTRIBUTE_FIELDS;
      for (const [name, offset, length] of fields) {
        const junk = digitsThenJunk(block, offset, length);
        if (junk !== null) throw new TarFramingError(`malformed ${name} field ${junk} in tar header (entry ${this.entries}): tar -x fails on it`);
      }
      this.mtimeFields?.push(Buffer.from(block.subarray(MTIME_OFFSET, MTIME_OFFSET + MTIME_LENGTH)));
      if (this.nextSizeOverride !== null) size = this.nextSizeOverride;
      this.nextSizeOverride = null;
      // As tar-stream does: a directory entry carries no data whatever its size field says.
      if (typeflag === '5') size = 0;
    }
    this.skip = Math.ceil(size / BLOCK) * BLOCK;
    if (this.skip === 0 && this.paxChunks) {
      this.nextSizeOverride = paxSize(Buffer.alloc(0));
      this.paxChunks = null;
    }
  }

  /** Throws unless the stream ended cleanly after the end-of-archive marker. */
  finish(): void {
    if (this.skip > 0 || this.headerFill > 0) throw new TarFramingError('archive is truncated');
    if (!this.ended) throw new TarFramingError('archive has no end-of-archive marker (truncated?)');
  }
}
