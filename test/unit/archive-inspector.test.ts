import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import { pack } from 'tar-stream';
import type { Digest } from '../../src/domain/digest.ts';
import { VolregError } from '../../src/domain/errors.ts';
import { inspectArchive, type ArchiveInspection, type InspectOptions } from '../../src/domain/volumes/archive-inspector.ts';
import { OffThreadInspector } from '../../src/workers/off-thread-inspector.ts';

type Inspect = (source: Readable, opts?: InspectOptions) => Promise<ArchiveInspection>;
import { detectCompression } from '../../src/domain/volumes/compression.ts';

let dir = '';
let tarBytes: Buffer = Buffer.alloc(0);

const sha256 = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
const sh = (cmd: string, args: string[], input?: Buffer): Buffer =>
  execFileSync(cmd, args, { input, maxBuffer: 256 * 1024 * 1024 });
/** Streams a buffer in small chunks, as a socket would deliver it. */
const chunked = (b: Buffer, size = 7001): Readable =>
  Readable.from(
    (function* () {
      for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
    })(),
    { objectMode: false },
  );

async function invalidReason(inspect: Inspect, body: Buffer): Promise<string> {
  const err = await inspect(chunked(body)).then(
    () => null,
    (e: unknown) => e,
  );
  if (!(err instanceof VolregError)) throw new Error(`expected ARCHIVE_INVALID, got ${String(err)}`);
  if (err.code !== 'ARCHIVE_INVALID') throw new Error(`expected ARCHIVE_INVALID, got ${err.code}`);
  return err.message;
}

async function hostileTar(entries: Array<{ name: string; type?: 'file' | 'symlink' | 'link' | 'directory' | 'fifo'; linkname?: string; body?: string }>): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(Buffer.from(c as Uint8Array));
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) =>
      p.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname }, e.body ?? '', (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'volreg-inspect-'));
  const root = join(dir, 'tree');
  await mkdir(join(root, 'a/b/c'), { recursive: true });
  await mkdir(join(root, 'empty'));
  await writeFile(join(root, 'a/b/c/deep.txt'), 'deep\n');
  await writeFile(join(root, 'ünïcødé ☃.txt'), 'snow\n');
  await writeFile(join(root, 'random.bin'), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251)));
  await symlink('a/b/c/deep.txt', join(root, 'link'));
  tarBytes = sh('tar', ['-C', root, '--format=pax', '-cf', '-', '.']);
});

test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Every case runs against inspectArchive here and against the same on a worker thread.
const inspector = new OffThreadInspector();
test.after.always(() => inspector.close());
const IMPLEMENTATIONS: Array<[string, Inspect]> = [
  ['this thread', inspectArchive],
  ['worker thread', (source, opts) => inspector.inspect(source, opts)],
];

test('compression is decided by magic bytes only', (t) => {
  t.deepEqual(detectCompression(Buffer.from([0x1f, 0x8b, 8, 0])), { kind: 'ok', compression: 'gzip' });
  t.deepEqual(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), { kind: 'ok', compression: 'zstd' });
  t.deepEqual(detectCompression(Buffer.from([0x50, 0x2a, 0x4d, 0x18])), { kind: 'ok', compression: 'zstd' });
  t.deepEqual(detectCompression(Buffer.from('ustar')), { kind: 'ok', compression: 'none' });
  t.deepEqual(detectCompression(Buffer.from('PK\x03\x04')), { kind: 'unsupported', format: 'zip' });
});

for (const [label, inspect] of IMPLEMENTATIONS) {
  test(`${label}: a plain tar: entries, size and digest of the uncompressed stream`, async (t) => {
    const got = await inspect(chunked(tarBytes));
    const listed = sh('tar', ['-tf', '-'], tarBytes).toString().trim().split('\n');
    t.is(got.compression, 'none');
    t.is(got.entries, listed.length);
    t.is(got.uncompressedSize, tarBytes.length);
    t.is(got.uncompressedDigest, sha256(tarBytes));
    t.is(got.unsafeEntries, 0);
  });

  test(`${label}: gzip and zstd bodies are detected by magic number and decompressed`, async (t) => {
    const gz = sh('gzip', ['-c'], tarBytes);
    const zst = sh('zstd', ['-q', '-c'], tarBytes);
    const a = await inspect(chunked(gz));
    const b = await inspect(chunked(zst, 333));
    t.is(a.compression, 'gzip');
    t.is(b.compression, 'zstd');
    for (const got of [a, b]) {
      t.is(got.uncompressedDigest, sha256(tarBytes));
      t.is(got.uncompressedSize, tarBytes.length);
    }
    t.is(a.entries, b.entries);
  });

  test(`${label}: multi-frame zstd and multi-member gzip are one stream`, async (t) => {
    const half = Math.floor(tarBytes.length / 2);
    const zst = Buffer.concat([sh('zstd', ['-q', '-c'], tarBytes.subarray(0, half)), sh('zstd', ['-q', '-c'], tarBytes.subarray(half))]);
    const gz = Buffer.concat([sh('gzip', ['-c'], tarBytes.subarray(0, half)), sh('gzip', ['-c'], tarBytes.subarray(half))]);
    t.is((await inspect(chunked(zst))).uncompressedDigest, sha256(tarBytes));
    t.is((await inspect(chunked(gz))).uncompressedDigest, sha256(tarBytes));
  });

  test(`${label}: truncated archives are refused, whatever the compression`, async (t) => {
    const gz = sh('gzip', ['-c'], tarBytes);
    const zst = sh('zstd', ['-q', '-c'], tarBytes);
    // the plain tar without the zero padding after its end marker (GNU tar pads to 10 KiB records):
    // cut anywhere in that padding it is still a whole archive
    const lastData = tarBytes.length - [...tarBytes].reverse().findIndex((b) => b !== 0);
    const archiveEnd = Math.ceil(lastData / 512) * 512 + 1024;
    t.is((await inspect(chunked(tarBytes.subarray(0, archiveEnd + 100)))).uncompressedSize, archiveEnd + 100);
    for (const body of [tarBytes.subarray(0, archiveEnd), gz, zst]) {
      for (const keep of [0.1, 0.5, 0.99]) {
        t.regex(await invalidReason(inspect, body.subarray(0, Math.floor(body.length * keep))), /not a complete/);
      }
      t.regex(await invalidReason(inspect, body.subarray(0, body.length - 1)), /not a complete/);
    }
  });

  test(`${label}: a tar cut exactly at an entry boundary (no end-of-archive marker) is refused`, async (t) => {
    const one = await hostileTar([{ name: 'x.txt', body: 'x'.repeat(512) }]);
    // header + one data block, no zero blocks
    t.regex(await invalidReason(inspect, one.subarray(0, 1024)), /end-of-archive|truncated/);
    // one zero block only
    t.regex(await invalidReason(inspect, one.subarray(0, 1536)), /end-of-archive|truncated/);
    t.is((await inspect(chunked(one))).entries, 1);
  });

  test(`${label}: garbage after the end, a second archive or corrupt headers are refused`, async (t) => {
    const garbage = Buffer.concat([tarBytes, Buffer.from('trailing garbage')]);
    t.regex(await invalidReason(inspect, garbage), /end-of-archive/);
    t.regex(await invalidReason(inspect, Buffer.concat([tarBytes, tarBytes])), /end-of-archive/);
    t.regex(await invalidReason(inspect, Buffer.concat([sh('gzip', ['-c'], tarBytes), Buffer.from('garbage')])), /not a complete/);
    const corrupt = Buffer.from(tarBytes);
    corrupt[1024 + 10] = corrupt[1024 + 10]! ^ 0xff; // inside the second header block's name
    t.regex(await invalidReason(inspect, corrupt), /not a complete/);
    const gz = sh('gzip', ['-c'], tarBytes);
    const flipped = Buffer.from(gz);
    flipped[Math.floor(gz.length / 2)] = flipped[Math.floor(gz.length / 2)]! ^ 0x55;
    t.regex(await invalidReason(inspect, flipped), /not a complete/);
    // zero padding after the marker is what tar itself writes and is fine
    t.is((await inspect(chunked(Buffer.concat([tarBytes, Buffer.alloc(20480)])))).uncompressedSize, tarBytes.length + 20480);
  });

  test(`${label}: after a gzip stream only zero bytes may follow (as gzip says), after the end marker zeros of any length (as GNU tar reads)`, async (t) => {
    const gz = sh('gzip', ['-c'], tarBytes);
    t.is((await inspect(chunked(Buffer.concat([gz, Buffer.alloc(1000)])))).uncompressedDigest, sha256(tarBytes));
    t.regex(await invalidReason(inspect, Buffer.concat([gz, Buffer.from('\0garbage after the gzip stream')])), /data after the end of the gzip stream/);
    t.regex(await invalidReason(inspect, Buffer.concat([gz, Buffer.alloc(70_000), Buffer.from([1])])), /data after the end of the gzip stream/);
    // the client going away in the padding, after gunzip's output ended, is still the client going away
    const boom = new Error('client went away');
    const failing = Readable.from(
      (async function* () {
        yield gz;
        yield Buffer.alloc(5000);
        throw boom;
      })(),
      { objectMode: false },
    );
    t.is(await t.throwsAsync(inspect(failing)), boom);
    // refused by the tar parser at the end of gunzip's output: the answer does not wait for the
    // rest of the input (zero padding that keeps coming)
    const refusedInside = sh('gzip', ['-c'], Buffer.concat([tarBytes, Buffer.from('garbage after the end marker')]));
    let endless = true;
    let ended = false;
    const padding = Readable.from(
      (async function* () {
        yield refusedInside;
        // a minute of padding at most: an answer that waits for the input's end comes only after it
        for (let i = 0; endless && i < 1200; i++) {
          yield Buffer.alloc(65_536);
          await new Promise((r) => setTimeout(r, 50));
        }
        ended = true;
      })(),
      { objectMode: false },
    );
    const refused = await t.throwsAsync(inspect(padding));
    t.false(ended, 'answered while the input still came');
    endless = false;
    t.regex(refused?.message ?? '', /end-of-archive/);
    const entries = (await inspect(chunked(tarBytes))).entries;
    const padded = Buffer.concat([tarBytes, Buffer.alloc(100)]);
    for (const body of [padded, sh('gzip', ['-c'], padded), sh('zstd', ['-q', '-c'], padded)]) {
      const got = await inspect(chunked(body));
      t.is(got.entries, entries);
      t.is(got.uncompressedSize, padded.length);
    }
  });

  test(`${label}: a tar whose first name starts with BZh is a tar; a pax size that is not decimal is refused`, async (t) => {
    t.is((await inspect(chunked(await hostileTar([{ name: 'BZh9-notes.txt', body: 'notes' }])))).entries, 1);
    const p = pack();
    const chunks: Buffer[] = [];
    const done = (async () => {
      for await (const c of p) chunks.push(Buffer.from(c as Uint8Array));
    })();
    p.entry({ name: 'f.txt', pax: { size: '0x10' } }, '0123456789abcdef');
    p.finalize();
    await done;
    t.regex(await invalidReason(inspect, Buffer.concat(chunks)), /malformed pax size/);
  });

  test(`${label}: non-tar bodies are refused with a reason`, async (t) => {
    t.regex(await invalidReason(inspect, Buffer.alloc(0)), /empty/);
    t.regex(await invalidReason(inspect, Buffer.from('hello, this is not a tar archive at all\n'.repeat(40))), /not a complete/);
    t.regex(await invalidReason(inspect, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3])), /xz/);
    t.regex(await invalidReason(inspect, Buffer.from('BZh91AY&SY')), /bzip2/);
    t.regex(await invalidReason(inspect, sh('gzip', ['-c'], Buffer.from('gzip of plain text, not a tar'))), /not a complete/);
  });

  test(`${label}: a zstd frame asking for a window beyond the limit is refused before decoding`, async (t) => {
    const zst = sh('zstd', ['-q', '-c'], tarBytes);
    const err = await t.throwsAsync(inspect(chunked(zst), { maxZstdWindow: 1024 }));
    t.is((err as VolregError).code, 'ARCHIVE_INVALID');
    t.regex(err!.message, /window/);
  });

  test(`${label}: hostile entries are accepted as bytes but counted as unsafe`, async (t) => {
    const tar = await hostileTar([
      { name: 'ok.txt', body: 'fine' },
      { name: '../escape.txt', body: 'bad' },
      { name: '/etc/abs.txt', body: 'bad' },
      { name: 'dir/../../up.txt', body: 'bad' },
      { name: 'in-link', type: 'symlink', linkname: 'ok.txt' },
      { name: 'out-link', type: 'symlink', linkname: '../../etc/passwd' },
      { name: 'abs-link', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'hard-out', type: 'link', linkname: '../x' },
    ]);
    const got = await inspect(chunked(tar));
    t.is(got.entries, 8);
    t.is(got.unsafeEntries, 6);
  });

  test(`${label}: a hard link must name an earlier file, symlink, fifo or link: one to a later, missing or directory entry is refused`, async (t) => {
    const fine = await hostileTar([
      { name: './f', body: 'f' },
      { name: 's', type: 'symlink', linkname: 'f' },
      { name: 'p', type: 'fifo' },
      { name: 'hf', type: 'link', linkname: 'f' },
      { name: 'hs', type: 'link', linkname: './s' },
      { name: 'hp', type: 'link', linkname: 'p' },
      { name: 'hh', type: 'link', linkname: 'hf' },
      { name: 'escape', type: 'link', linkname: '../x' },
    ]);
    const got = await inspect(chunked(fine));
    t.is(got.entries, 8);
    t.is(got.unsafeEntries, 1, 'a link leaving the archive is counted as unsafe, as before, not refused');
    const refused: Array<Parameters<typeof hostileTar>[0]> = [
      [{ name: 'b', type: 'link', linkname: 'a' }, { name: 'a', body: 'later' }],
      [{ name: 'c', body: 'c' }, { name: 'b', type: 'link', linkname: 'a' }],
      [{ name: 'd', type: 'directory' }, { name: 'b', type: 'link', linkname: 'd' }],
      [{ name: 'a', body: 'a file, then a directory' }, { name: 'a', type: 'directory' }, { name: 'b', type: 'link', linkname: 'a' }],
    ];
    for (const entries of refused) {
      t.regex(await invalidReason(inspect, await hostileTar(entries)), /entry "b": it is a hard link to "[ad]", which no earlier entry of the archive is/);
    }
  });

  test(`${label}: a file entry whose name ends in "/" is a directory; one carrying data is refused (tar reads its data as headers)`, async (t) => {
    const dir = await hostileTar([{ name: 'f/', body: '' }, { name: 'f/inner', body: 'in' }, { name: 'h', type: 'link', linkname: 'f/inner' }]);
    t.is((await inspect(chunked(dir))).entries, 3);
    t.regex(await invalidReason(inspect, await hostileTar([{ name: 'f/', body: 'data' }])), /entry "f\/": a file entry whose name ends in "\/" is a directory to tar/);
  });

  test(`${label}: a failing source is passed through, not reported as a bad archive`, async (t) => {
    const boom = new Error('client went away');
    const source = Readable.from(
      (async function* () {
        yield tarBytes.subarray(0, 4096);
        throw boom;
      })(),
      { objectMode: false },
    );
    const err = await t.throwsAsync(inspect(source));
    t.is(err, boom);
  });

  test(`${label}: skipPlainHash leaves the digest of a plain tar to the caller, but never of a compressed one`, async (t) => {
    const plain = await inspect(chunked(tarBytes), { skipPlainHash: true });
    t.is(plain.uncompressedDigest, null);
    t.is(plain.uncompressedSize, tarBytes.length);
    const gz = await inspect(chunked(sh('gzip', ['-c'], tarBytes)), { skipPlainHash: true });
    t.is(gz.uncompressedDigest, sha256(tarBytes));
  });
}

test('a fault of the inspection itself is thrown as it is, not told as a verdict on the archive', async (t) => {
  // a value that is no bytes reaches the inspector's own code: a TypeError, as a programming
  // error inside the decoders or the parser would be
  const source = Readable.from([tarBytes.subarray(0, 100), 42], { objectMode: true });
  const err = await t.throwsAsync(inspectArchive(source));
  t.true(err instanceof TypeError, String(err));
  t.false(err instanceof VolregError);
});

test('worker thread: concurrent inspections are kept apart, each with its own answer', async (t) => {
  const gz = sh('gzip', ['-c'], tarBytes);
  const truncated = gz.subarray(0, Math.floor(gz.length / 2));
  const results = await Promise.allSettled(
    Array.from({ length: 12 }, (_, i) => inspector.inspect(chunked(i % 3 === 2 ? truncated : i % 3 === 1 ? gz : tarBytes, 1000 + i))),
  );
  results.forEach((r, i) => {
    if (i % 3 === 2) {
      t.is(r.status, 'rejected');
      t.is(r.status === 'rejected' && (r.reason as VolregError).code, 'ARCHIVE_INVALID');
    } else {
      t.is(r.status, 'fulfilled');
      t.is(r.status === 'fulfilled' && r.value.uncompressedDigest, sha256(tarBytes));
      t.is(r.status === 'fulfilled' && r.value.compression, i % 3 === 1 ? 'gzip' : 'none');
    }
  });
});

test('worker thread: a refusal keeps its reason and detail; a closed worker is replaced on the next inspection', async (t) => {
  const own = new OffThreadInspector();
  try {
    const err = await t.throwsAsync(own.inspect(chunked(Buffer.from('this is not a tar archive at all, just text'.repeat(20)))));
    t.true(err instanceof VolregError);
    t.is((err as VolregError).code, 'ARCHIVE_INVALID');
    t.is(typeof ((err as VolregError).detail as { reason?: unknown }).reason, 'string');

    // Closing mid-inspection fails that inspection, not the next one.
    const slow = new Readable({ read() {} });
    slow.push(tarBytes.subarray(0, 2048));
    const pending = own.inspect(slow);
    own.close();
    await t.throwsAsync(pending, { message: /closed/ });
    const again = await own.inspect(chunked(tarBytes));
    t.is(again.uncompressedDigest, sha256(tarBytes));
  } finally {
    own.close();
  }
});

test('worker thread: inspections that end early (refused, or their source failed) give their ring slots back', async (t) => {
  const own = new OffThreadInspector();
  try {
    // Far more inspections than the ring has slots: a slot kept by any of them would leave a
    // later one waiting forever.
    const endless = (head: Buffer): Readable => {
      let sent = 0;
      return new Readable({
        read() {
          this.push(sent++ === 0 ? head : Buffer.alloc(7001, 0x41));
        },
      });
    };
    for (let i = 0; i < 20; i++) {
      const err = await t.throwsAsync(own.inspect(endless(Buffer.from('PK\x03\x04 a zip archive, not a tar'))));
      t.is((err as VolregError).code, 'ARCHIVE_INVALID');
    }
    for (let i = 0; i < 20; i++) {
      const failing = new Readable({ read() {} });
      failing.push(tarBytes.subarray(0, 3000 + i));
      setImmediate(() => failing.destroy(new Error('client went away')));
      await t.throwsAsync(own.inspect(failing), { message: /client went away/ });
    }
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no free ring slot: an ended inspection kept one')), 10_000).unref());
    const again = await Promise.race([own.inspect(chunked(tarBytes)), timeout]);
    t.is(again.uncompressedDigest, sha256(tarBytes));
  } finally {
    own.close();
  }
});
