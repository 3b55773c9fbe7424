import { deserialize, type Document } from 'bson';
import { crc32c } from './crc32c.ts';

/**
 * MongoDB wire protocol framing: message header, OP_MSG (kind 0 body + kind 1 document
 * sequences, optional CRC-32C checksum), the legacy OP_QUERY handshake and its OP_REPLY.
 * https://github.com/mongodb/specifications/blob/master/source/message/OP_MSG.md
 */

export const OP_REPLY = 1;
export const OP_QUERY = 2004;
export const OP_COMPRESSED = 2012;
export const OP_MSG = 2013;

export const MAX_MESSAGE_SIZE = 48_000_000;
export const MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024;
export const MAX_WRITE_BATCH_SIZE = 100_000;
/**
 * The largest document a message may carry (mongod's BSONObjMaxInternalSize): a stored document's
 * 16 MiB plus room for the command around it. A larger command body is answered with
 * BSONObjectTooLarge, as mongod answers it, however the driver built it (a filter with a long
 * `$in`, say).
 */
export const MAX_COMMAND_DOCUMENT_SIZE = MAX_BSON_OBJECT_SIZE + 16 * 1024;

export const FLAG_CHECKSUM_PRESENT = 1 << 0;
export const FLAG_MORE_TO_COME = 1 << 1;
export const FLAG_EXHAUST_ALLOWED = 1 << 16;

const DESERIALIZE_TYPED = { promoteValues: false } as const;

export interface MessageHeader {
  length: number;
  requestId: number;
  responseTo: number;
  opCode: number;
}

export interface OpMsgRequest {
  kind: 'msg';
  header: MessageHeader;
  flags: number;
  /** The kind-0 body with each kind-1 sequence merged in under its identifier. */
  command: Document;
  moreToCome: boolean;
  /** a document of the message over MAX_COMMAND_DOCUMENT_SIZE (not read): the command is refused */
  oversized?: { size: number; firstField: string };
}

export interface OpQueryRequest {
  kind: 'query';
  header: MessageHeader;
  collection: string;
  query: Document;
}

export interface OpCompressedRequest {
  kind: 'compressed';
  header: MessageHeader;
}

export type WireRequest = OpMsgRequest | OpQueryRequest | OpCompressedRequest;

export class ProtocolError extends Error {}

export function readHeader(frame: Buffer): MessageHeader {
  return {
    length: frame.readInt32LE(0),
    requestId: frame.readInt32LE(4),
    responseTo: frame.readInt32LE(8),
    opCode: frame.readInt32LE(12),
  };
}

function readCString(buf: Buffer, offset: number): [string, number] {
  const end = buf.indexOf(0, offset);
  if (end < 0) throw new ProtocolError('unterminated cstring');
  return [buf.toString('utf8', offset, end), end + 1];
}

function documentSize(buf: Buffer, offset: number, limit: number): number {
  if (offset + 5 > limit) throw new ProtocolError('truncated document');
  const size = buf.readInt32LE(offset);
  if (size < 5 || offset + size > limit) throw new ProtocolError('invalid document size');
  return size;
}

function readDocument(buf: Buffer, offset: number, limit: number): [Document, number] {
  const size = documentSize(buf, offset, limit);
  return [deserialize(buf.subarray(offset, offset + size), DESERIALIZE_TYPED), offset + size];
}

/** The name of a document's first field, read from its bytes (for the oversized error). */
function firstFieldName(buf: Buffer, offset: number, size: number): string {
  if (size <= 5) return '';
  const end = buf.indexOf(0, offset + 5);
  return end < 0 || end >= offset + size ? '' : buf.toString('utf8', offset + 5, end);
}

/** Parses one complete frame (header included). */
export function parseMessage(frame: Buffer): WireRequest {
  const header = readHeader(frame);
  switch (header.opCode) {
    case OP_MSG:
      return parseOpMsg(frame, header);
    case OP_QUERY:
      return parseOpQuery(frame, header);
    case OP_COMPRESSED:
      return { kind: 'compressed', header };
    default:
      throw new ProtocolError(`unsupported opCode ${header.opCode}`);
  }
}

function parseOpMsg(frame: Buffer, header: MessageHeader): OpMsgRequest {
  const flags = frame.readUInt32LE(16);
  // Unknown required bits (0-15) must make the server reject the message.
  if ((flags & 0xffff) & ~(FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME)) {
    throw new ProtocolError(`unsupported OP_MSG flag bits ${flags}`);
  }
  let end = frame.length;
  if (flags & FLAG_CHECKSUM_PRESENT) {
    end -= 4;
    const expected = frame.readUInt32LE(end);
    if (crc32c(frame, 0, end) !== expected) throw new ProtocolError('OP_MSG checksum mismatch');
  }
  let offset = 20;
  let body: Document | undefined;
  const sequences: Array<[string, Document[]]> = [];
  let oversized: OpMsgRequest['oversized'];
  // a document too large to take is skipped, not read: the command gets an error reply
  const tooLarge = (at: number, limit: number): number | undefined => {
    const size = documentSize(frame, at, limit);
    if (size <= MAX_COMMAND_DOCUMENT_SIZE) return undefined;
    oversized ??= { size, firstField: firstFieldName(frame, at, size) };
    return at + size;
  };
  while (offset < end) {
    const kind = frame[offset];
    offset += 1;
    if (kind === 0) {
      if (body) throw new ProtocolError('OP_MSG has more than one body section');
      const skipped = tooLarge(offset, end);
      if (skipped !== undefined) {
        body = {};
        offset = skipped;
      } else {
        [body, offset] = readDocument(frame, offset, end);
      }
    } else if (kind === 1) {
      const size = frame.readInt32LE(offset);
      const sectionEnd = offset + size;
      if (size < 5 || sectionEnd > end) throw new ProtocolError('invalid document sequence size');
      let [identifier, pos] = readCString(frame, offset + 4);
      const docs: Document[] = [];
      while (pos < sectionEnd) {
        const skipped = tooLarge(pos, sectionEnd);
        if (skipped !== undefined) {
          pos = skipped;
          continue;
        }
        let doc: Document;
        [doc, pos] = readDocument(frame, pos, sectionEnd);
        docs.push(doc);
      }
      sequences.push([identifier, docs]);
      offset = sectionEnd;
    } else {
      throw new ProtocolError(`unknown OP_MSG section kind ${String(kind)}`);
    }
  }
  if (!body) throw new ProtocolError('OP_MSG without a body section');
  for (const [identifier, docs] of sequences) {
    if (identifier in body) throw new ProtocolError(`duplicate field ${identifier} in OP_MSG`);
    body[identifier] = docs;
  }
  return { kind: 'msg', header, flags, command: body, moreToCome: (flags & FLAG_MORE_TO_COME) !== 0, ...(oversized ? { oversized } : {}) };
}

function parseOpQuery(frame: Buffer, header: MessageHeader): OpQueryRequest {
  const [collection, afterName] = readCString(frame, 20);
  // flags(4) collection numberToSkip(4) numberToReturn(4) query [fieldSelector]
  const [query] = readDocument(frame, afterName + 8, frame.length);
  return { kind: 'query', header, collection, query };
}

export function encodeOpMsg(requestId: number, responseTo: number, body: Buffer, flags = 0): Buffer {
  const out = Buffer.allocUnsafe(21 + body.length);
  out.writeInt32LE(out.length, 0);
  out.writeInt32LE(requestId, 4);
  out.writeInt32LE(responseTo, 8);
  out.writeInt32LE(OP_MSG, 12);
  out.writeUInt32LE(flags, 16);
  out[20] = 0;
  body.copy(out, 21);
  return out;
}

export function encodeOpReply(requestId: number, responseTo: number, doc: Buffer): Buffer {
  const out = Buffer.allocUnsafe(36 + doc.length);
  out.writeInt32LE(out.length, 0);
  out.writeInt32LE(requestId, 4);
  out.writeInt32LE(responseTo, 8);
  out.writeInt32LE(OP_REPLY, 12);
  out.writeInt32LE(0, 16); // responseFlags
  out.writeBigInt64LE(0n, 20); // cursorID
  out.writeInt32LE(0, 28); // startingFrom
  out.writeInt32LE(1, 32); // numberReturned
  doc.copy(out, 36);
  return out;
}

/**
 * Reassembles frames from a TCP byte stream: a frame may arrive split across chunks,
 * and one chunk may carry several frames.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Returns the next complete frame, or undefined when more bytes are needed. */
  next(): Buffer | undefined {
    if (this.buffered < 4) return undefined;
    const first = this.chunks[0] as Buffer;
    const length = first.length >= 4 ? first.readInt32LE(0) : this.concat().readInt32LE(0);
    if (length < 16 || length > MAX_MESSAGE_SIZE) throw new ProtocolError(`invalid message length ${length}`);
    if (this.buffered < length) return undefined;
    const head = this.chunks[0] as Buffer;
    if (head.length >= length) {
      const frame = head.subarray(0, length);
      if (head.length === length) this.chunks.shift();
      else this.chunks[0] = head.subarray(length);
      this.buffered -= length;
      return frame;
    }
    const all = this.concat();
    const frame = all.subarray(0, length);
    this.chunks = all.length > length ? [all.subarray(length)] : [];
    this.buffered -= length;
    return frame;
  }

  private concat(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0] as Buffer;
  }
}
