import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import test, { type ExecutionContext } from 'ava';
import { Decompress } from 'fzstd';
import { VolregError } from '../../src/domain/errors.ts';
import { inspectArchive } from '../../src/domain/volumes/archive-inspector.ts';
import { decompressedTar, type DecompressOptions } from '../../src/domain/volumes/decompress.ts';
import { ZSTD_BLOCK_MAXIMUM_SIZE, ZstdBlockCutter, type ZstdFrameEnd } from '../../src/domain/volumes/zstd-blocks.ts';

// The decoder cuts its input so that one push to fzstd decodes to about 32 blocks (4 MiB);
// this is that bound with room for the block that crosses it.
const PUSH_OUTPUT_BOUND = 33 * ZSTD_BLOCK_MAXIMUM_SIZE;

setFlagsFromString('--expose-gc');
const gc = (globalThis.gc ?? runInNewContext('gc')) as () => void;

const sh = (cmd: string, args: string[], input?: Buffer): Buffer => execFileSync(cmd, args, { input, maxBuffer: 512 * 1024 * 1024 });
const zstd = (data: Buffer, ...args: string[]): Buffer => sh('zstd', ['-q', '-c', ...args], data);
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function blockHeader(size: number, type: number, last: boolean): number[] {
  const v = size * 8 + type * 2 + (last ? 1 : 0);
  return [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff];
}

/**
 * The probe's bomb: a zstd frame header (by default a 128 KiB window) and `blocks` RLE blocks
 * of 4 bytes, each announcing `blockSize` (128 KiB) zeros. `replace` swaps block i for other bytes.
 */
function rleBomb(blocks: number, replace: (i: number) => number[] | null = () => null, blockSize = 131072, windowDescriptor = 0x38): Buffer {
  const bytes = [0x28, 0xb5, 0x2f, 0xfd, 0x00, windowDescriptor];
  for (let i = 0; i < blocks; i++) bytes.push(...(replace(i) ?? [...blockHeader(blockSize, 1, i === blocks - 1), 0x00]));
  return Buffer.from(bytes);
}

function skippableFrame(payload: Buffer, magicLow = 0x50): Buffer {
  const head = Buffer.from([magicLow, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]);
  head.writeUInt32LE(payload.length, 4);
  return Buffer.concat([head, payload]);
}

/** The bytes among what the cutter hands out (not its frame marks). */
const bytesOnly = (pieces: Iterable<Uint8Array | ZstdFrameEnd>): Uint8Array[] => [...pieces].filter((p): p is Uint8Array => p instanceof Uint8Array);

/** Streams a buffer in chunks of `size` bytes, as a socket would deliver it. */
const chunked = (b: Buffer, size: number): Readable =>
  Readable.from(
    (function* () {
      for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
    })(),
    { objectMode: false },
  );

async function decoded(body: Buffer, size: number, opts?: DecompressOptions): Promise<Buffer> {
  const { compression, tar } = await decompressedTar(chunked(body, size), opts);
  if (compression !== 'zstd') throw new Error(`detected ${compression}`);
  const parts: Buffer[] = [];
  for await (const c of tar) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function decodeError(body: Buffer, size: number, opts?: DecompressOptions): Promise<string> {
  return decoded(body, size, opts).then(
    () => 'decoded without error',
    (e: unknown) => (e instanceof Error ? e.message : String(e)),
  );
}

// Pseudo-random text: compresses about 3:1 like ordinary files do.
function text(bytes: number, seed: number): Buffer {
  const words = ['volume', 'snapshot', 'registry', 'tar', 'block', 'frame', 'the', 'a', 'of', 'zstd', 'manifest', 'layer', '\n'];
  let x = seed;
  const parts: string[] = [];
  let n = 0;
  while (n < bytes) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = words[x % words.length]! + ((x >> 8) % 7 === 0 ? String(x % 1000) : '') + ' ';
    parts.push(w);
    n += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

async function drainBombSlowly(t: ExecutionContext, bomb: Buffer, size: number, expected: number): Promise<void> {
  const zeros = Buffer.alloc(PUSH_OUTPUT_BOUND);
  const memory = (): number => process.memoryUsage().external; // includes arrayBuffers
  // a collection frees array buffers in the background and the next one finishes that: collect twice
  const settled = (): number => (gc(), gc(), memory());
  const base = settled();
  const { tar } = await decompressedTar(chunked(bomb, size));
  let total = 0;
  let biggestChunk = 0;
  let peak = 0;
  let sampledAt = -Infinity;
  for await (const c of tar) {
    const chunk = c as Buffer;
    if (total - sampledAt >= 4 * 1024 * 1024) {
      sampledAt = total;
      peak = Math.max(peak, settled() - base);
    }
    biggestChunk = Math.max(biggestChunk, chunk.length);
    if (chunk.length > zeros.length || !chunk.equals(zeros.subarray(0, chunk.length))) t.fail('the bomb decodes to zeros only');
    total += chunk.length;
    await new Promise((resolve) => setImmediate(resolve)); // a slow reader
  }
  t.log(`chunks of ${size}: at most ${(peak / 1048576).toFixed(1)} MiB held, biggest chunk ${biggestChunk} bytes`);
  t.is(total, expected, `chunks of ${size}`);
  t.true(biggestChunk <= PUSH_OUTPUT_BOUND, `chunks of ${size}: a chunk of ${biggestChunk} bytes was handed out`);
  t.true(peak < 64 * 1024 * 1024, `chunks of ${size}: ${(peak / 1048576).toFixed(0)} MiB held while decoding ${expected >> 20} MiB`);
}

test.serial('an RLE bomb decodes with bounded memory, in whatever chunks it arrives, read slowly', async (t) => {
  const blocks = 2048; // 8 KiB that decode to 256 MiB
  const bomb = rleBomb(blocks);
  for (const size of [1, 7, 4096, 64 * 1024, bomb.length]) await drainBombSlowly(t, bomb, size, blocks * 131072);
});

test.serial('RLE blocks announcing more than 128 KiB each are bounded by what they announce', async (t) => {
  // the format caps a block at 128 KiB, but fzstd decodes an RLE block of up to 2 MiB in a large enough window
  const blocks = 128;
  const bomb = rleBomb(blocks, () => null, 2 ** 21 - 1, 0x68); // 8 MiB window
  for (const size of [1, bomb.length]) await drainBombSlowly(t, bomb, size, blocks * (2 ** 21 - 1));
});

test('a piece holds at most maxBlocksPerPiece blocks, however little they announce', (t) => {
  const blocks = 1000;
  const tiny = rleBomb(blocks, () => null, 1); // 4-byte blocks announcing 1 byte each
  const cutter = new ZstdBlockCutter({ maxOutputPerPiece: 32 * ZSTD_BLOCK_MAXIMUM_SIZE, maxBlocksPerPiece: 32 });
  const pieces = bytesOnly([...cutter.cut(tiny), ...cutter.end()]);
  t.true(Buffer.concat(pieces).equals(tiny), 'every byte, in order');
  // the frame header (6 bytes) goes with the first piece; after it each block is 4 bytes
  t.true(pieces.every((p, i) => p.length <= 32 * 4 + (i === 0 ? 6 : 0)), `pieces of ${pieces.map((p) => p.length).join(', ')} bytes`);
  t.true(pieces.length >= Math.ceil(blocks / 32));
});

test('a frame asking for a window beyond 8 MiB (zstd --long) is refused before decoding, with the advice', async (t) => {
  const long = rleBomb(4, () => null, 1, 0x88); // 128 MiB window
  t.regex(await decodeError(long, long.length), /zstd window of 134217728 bytes exceeds 8388608 \(compress without --long/);
  const justOver = rleBomb(4, () => null, 1, 0x69); // 9 MiB window
  t.regex(await decodeError(justOver, justOver.length), /exceeds 8388608/);
});

test('the cutter hands out every byte in order and no piece decodes to more than the bound', (t) => {
  const text1 = zstd(text(3 << 20, 1));
  const small = zstd(text(100_000, 2), '--zstd=wlog=10', '--stream-size=100000');
  const body = Buffer.concat([
    skippableFrame(Buffer.from('metadata')),
    rleBomb(300),
    text1,
    skippableFrame(Buffer.alloc(0), 0x5f),
    small,
    rleBomb(40),
  ]);
  const sizes = [1, 2, 3, 5, 7, 18, 333, 4099, 65536, body.length];
  for (const size of sizes) {
    const cutter = new ZstdBlockCutter({ maxOutputPerPiece: 32 * ZSTD_BLOCK_MAXIMUM_SIZE });
    const pieces: Uint8Array[] = [];
    let output = 0;
    let biggestPush = 0;
    const decoder = new Decompress((chunk) => {
      output += chunk.length;
    });
    const push = (piece: Uint8Array, final = false): void => {
      const before = output;
      decoder.push(piece, final);
      biggestPush = Math.max(biggestPush, output - before);
    };
    for (let i = 0; i < body.length; i += size) {
      for (const piece of bytesOnly(cutter.cut(body.subarray(i, i + size)))) {
        pieces.push(Buffer.from(piece));
        push(piece);
      }
    }
    for (const piece of bytesOnly(cutter.end())) pieces.push(piece), push(piece);
    push(new Uint8Array(0), true);
    t.true(Buffer.concat(pieces).equals(body), `chunks of ${size}`);
    t.is(output, 340 * 131072 + (3 << 20) + 100_000, `chunks of ${size}`);
    t.true(biggestPush <= PUSH_OUTPUT_BOUND, `chunks of ${size}: one push decoded to ${biggestPush} bytes`);
  }
});

test('the cutter holds a frame header back until it has been checked', (t) => {
  const first = zstd(text(50_000, 3));
  const second = zstd(text(50_000, 4));
  const body = Buffer.concat([first, second]);
  for (const size of [1, 3, 7, 100, body.length]) {
    let frames = 0;
    const cutter = new ZstdBlockCutter({
      maxOutputPerPiece: 32 * ZSTD_BLOCK_MAXIMUM_SIZE,
      onFrameHeader: () => {
        if (++frames === 2) throw new Error('refused');
      },
    });
    let handedOut = 0;
    t.throws(
      () => {
        for (let i = 0; i < body.length; i += size) for (const piece of bytesOnly(cutter.cut(body.subarray(i, i + size)))) handedOut += piece.length;
      },
      { message: 'refused' },
    );
    t.true(handedOut <= first.length, `chunks of ${size}: ${handedOut - first.length} bytes of the refused frame went out`);
    if (size === 1) t.is(handedOut, first.length);
  }
});

test('real zstd streams decode byte for byte, whatever the chunk sizes', async (t) => {
  const random = randomBytes(1536 * 1024);
  const prose = text(4 << 20, 5);
  const repetitive = Buffer.concat([Buffer.alloc(8 << 20), Buffer.from('abc'.repeat(2 << 20)), Buffer.alloc(3 << 20, 0x41)]);
  const tiny = text(200, 6);
  const small = text(10_000, 9);
  const medium = text(100_000, 10);
  const cases: Array<[string, Buffer, Buffer]> = [
    ['random', random, zstd(random)],
    ['prose', prose, zstd(prose)],
    ['prose, level 19', prose, zstd(prose, '-19')],
    ['prose, 8 MiB window (the largest taken)', prose, zstd(prose, '--zstd=wlog=23')],
    ['repetitive', repetitive, zstd(repetitive)],
    ['prose with content size', prose, zstd(prose, `--stream-size=${prose.length}`)],
    ['prose without checksum', prose, zstd(prose, '--no-check')],
    ['prose, 1 KiB window', prose, zstd(prose, '--zstd=wlog=10', `--stream-size=${prose.length}`)],
    ['random with content size, no checksum', random, zstd(random, `--stream-size=${random.length}`, '--no-check')],
    ['tiny, single segment', tiny, zstd(tiny, `--stream-size=${tiny.length}`)],
    ['small, single segment', small, zstd(small, `--stream-size=${small.length}`)],
    ['medium, single segment', medium, zstd(medium, `--stream-size=${medium.length}`)],
    ['empty', Buffer.alloc(0), zstd(Buffer.alloc(0))],
    ['two frames, -T0', Buffer.concat([prose, repetitive]), Buffer.concat([zstd(prose, '-T0'), zstd(repetitive, '-T0', '--no-check')])],
    [
      'skippable frames in front, between and after',
      Buffer.concat([random, prose]),
      Buffer.concat([
        skippableFrame(Buffer.from('a skippable frame in front')),
        zstd(random),
        skippableFrame(Buffer.alloc(0), 0x5a),
        zstd(prose, `--stream-size=${prose.length}`),
        skippableFrame(randomBytes(70_000), 0x5f),
      ]),
    ],
  ];
  // the header descriptors cover what the cutter reads: content size fields, single segment, checksum or not
  const descriptors = new Set(cases.map(([, , z]) => z[z[0] === 0x28 ? 4 : 8 + z.readUInt32LE(4) + 4]!));
  for (const flags of [0x04, 0x00, 0x84, 0xa4, 0xa0, 0x64, 0x24]) t.true(descriptors.has(flags), `a frame with descriptor 0x${flags.toString(16)}`);
  for (const [name, plain, compressed] of cases) {
    const sizes = compressed.length < 300_000 ? [1, 7, 4099, 65536, compressed.length] : [7, 4099, 65537, compressed.length];
    for (const size of sizes) {
      const got = await decoded(compressed, size);
      t.is(got.length, plain.length, `${name}, chunks of ${size}`);
      t.is(sha256(got), sha256(plain), `${name}, chunks of ${size}`);
    }
  }
});

test('truncated and corrupt streams fail as before', async (t) => {
  const zst = zstd(text(1 << 20, 7));
  const cases: Array<[string, Buffer, RegExp]> = [
    ['cut in the frame header', zst.subarray(0, 5), /unexpected EOF/],
    ['cut after the frame header', zst.subarray(0, 9), /unexpected EOF/],
    ['cut at 10 %', zst.subarray(0, Math.floor(zst.length / 10)), /unexpected EOF/],
    ['last byte missing', zst.subarray(0, zst.length - 1), /unexpected EOF/],
    ['bomb without a last block', rleBomb(16, (i) => (i === 15 ? [...blockHeader(131072, 1, false), 0] : null)), /unexpected EOF/],
    ['reserved block type', rleBomb(64, (i) => (i === 10 ? [...blockHeader(5, 3, false), 0] : null)), /invalid block type/],
    ['reserved block type first', rleBomb(4, (i) => (i === 0 ? [...blockHeader(5, 3, false), 0] : null)), /invalid block type/],
    ['reserved descriptor bit', Buffer.concat([zst.subarray(0, 4), Buffer.from([zst[4]! | 0x08]), zst.subarray(5)]), /invalid zstd data/],
    ['garbage after the frame', Buffer.concat([zst, Buffer.from('garbage after the last frame')]), /invalid zstd data/],
  ];
  for (const [name, body, reason] of cases) {
    for (const size of [1, 7, 65536]) t.regex(await decodeError(body, size), reason, `${name}, chunks of ${size}`);
    const err = await inspectArchive(chunked(body, 4099)).then(
      () => null,
      (e: unknown) => e,
    );
    t.true(err instanceof VolregError && err.code === 'ARCHIVE_INVALID', `${name}: ${String(err)}`);
    t.regex((err as Error).message, reason, name);
  }
});

test('every frame’s window is checked before it is decoded, also after a skippable frame or another frame', async (t) => {
  const data = text(200_000, 8);
  const small = zstd(data, '--zstd=wlog=10');
  const large = zstd(data, '--zstd=wlog=20');
  const opts = { maxZstdWindow: 64 * 1024 };
  for (const size of [1, 7, 65536]) {
    t.is((await decoded(Buffer.concat([small, small]), size, opts)).length, 2 * data.length);
    for (const body of [large, Buffer.concat([small, large]), Buffer.concat([skippableFrame(Buffer.from('x')), large])]) {
      t.regex(await decodeError(body, size, opts), /zstd window of 1048576 bytes exceeds 65536/);
    }
  }
});

test('the cutter marks where each frame ends, with its checksum and content size, and no piece spans two frames', (t) => {
  const a = zstd(text(300_000, 11));
  const bPlain = text(150_000, 12);
  const b = zstd(bPlain, '--no-check', `--stream-size=${bPlain.length}`);
  const skip = skippableFrame(Buffer.from('metadata'));
  const body = Buffer.concat([skip, a, b]);
  for (const size of [1, 7, 4099, body.length]) {
    const cutter = new ZstdBlockCutter({ maxOutputPerPiece: 32 * ZSTD_BLOCK_MAXIMUM_SIZE });
    const frames: Array<{ bytes: Buffer; end: ZstdFrameEnd }> = [];
    let pending: Uint8Array[] = [];
    const take = (piece: Uint8Array | ZstdFrameEnd): void => {
      if (piece instanceof Uint8Array) pending.push(Buffer.from(piece));
      else {
        frames.push({ bytes: Buffer.concat(pending), end: piece });
        pending = [];
      }
    };
    for (let i = 0; i < body.length; i += size) for (const piece of cutter.cut(body.subarray(i, i + size))) take(piece);
    for (const piece of cutter.end()) take(piece);
    t.is(pending.length, 0, `chunks of ${size}: nothing after the last mark`);
    t.deepEqual(
      frames.map((f) => f.end),
      [
        { frameEnd: 'skippable', checksum: null, contentSize: null },
        { frameEnd: 'frame', checksum: a.readUInt32LE(a.length - 4), contentSize: null },
        { frameEnd: 'frame', checksum: null, contentSize: bPlain.length },
      ],
      `chunks of ${size}`,
    );
    t.true(frames[0]!.bytes.equals(skip) && frames[1]!.bytes.equals(a) && frames[2]!.bytes.equals(b), `chunks of ${size}: each frame's bytes between its marks`);
  }
});

/** The offset of a frame's Frame_Content_Size field (the last field of its header). */
function contentSizeField(frame: Buffer): { at: number; bytes: number } {
  const fhd = frame[4]!;
  const bytes = [fhd & 0x20 ? 1 : 0, 2, 4, 8][fhd >> 6]!;
  const size = 5 + (fhd & 0x20 ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + bytes;
  return { at: size - bytes, bytes };
}

test('content that does not match its frame is refused: a changed byte (checksum), the checksum itself, the content size', async (t) => {
  const random = randomBytes(200_000); // incompressible: zstd stores raw blocks, so a flipped byte decodes to a different byte
  const good = zstd(random);
  const sized = zstd(random, `--stream-size=${random.length}`, '--no-check');
  const flip = (b: Buffer, at: number): Buffer => {
    const c = Buffer.from(b);
    c[at] = c[at]! ^ 0xff;
    return c;
  };
  const withContentSize = (delta: number): Buffer => {
    const c = Buffer.from(sized);
    const { at, bytes } = contentSizeField(c);
    c.writeUIntLE(c.readUIntLE(at, bytes) + delta, at, bytes);
    return c;
  };
  const cases: Array<[string, Buffer, RegExp]> = [
    ['a byte of a block changed', flip(good, 1000), /does not match its checksum/],
    ['the checksum changed', flip(good, good.length - 1), /does not match its checksum/],
    ['the second of two frames changed', Buffer.concat([good, flip(good, 5000)]), /does not match its checksum/],
    ['content size one more', withContentSize(1), /decodes to 200000 bytes, its header says 200001/],
    ['content size one less', withContentSize(-1), /decodes to 200000 bytes, its header says 199999/],
  ];
  t.is((await decoded(Buffer.concat([good, sized]), 4099)).length, 2 * random.length, 'the unchanged frames decode');
  for (const [name, body, reason] of cases) {
    for (const size of [3, 65536]) t.regex(await decodeError(body, size), reason, `${name}, chunks of ${size}`);
    const err = await inspectArchive(chunked(body, 4099)).catch((e: unknown) => e);
    t.true(err instanceof VolregError && err.code === 'ARCHIVE_INVALID', `${name}: ${String(err)}`);
  }
});
