import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import type { ExecutionContext, TestFn } from 'ava';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import { isVolregError, type ErrorCode } from '../../src/domain/errors.ts';
import type { BlobStore, UploadWriter } from '../../src/storage/blob-store.ts';

/**
 * The contract every BlobStore driver passes. A driver's test file calls
 * `blobStoreContract(test, 'fs', factory)`; each test gets a fresh, empty store from the
 * factory and must leave no raw object (file, document, chunk) behind: the suite fails a
 * test whose store is not empty again at its end.
 */
export interface BlobStoreHarness {
  store: BlobStore;
  /** Another store on the same underlying storage: a restart, or a second process. */
  reopen(): Promise<BlobStore>;
  /** Raw objects the driver keeps (file paths, document ids) — empty when the store is empty. */
  leftovers(): Promise<string[]>;
  /** Flips one byte of a committed blob where it is stored, as bit rot would (same size). */
  damage(digest: Digest): Promise<void>;
  /** Removes what `quarantineIfDamaged` moved to `place`; returns its bytes. */
  takeQuarantined(place: string): Promise<Buffer>;
  /** Releases everything the harness made (temp dirs, connections). */
  close(): Promise<void>;
}

export type BlobStoreFactory = () => Promise<BlobStoreHarness>;

type Body = (t: ExecutionContext, h: BlobStoreHarness) => Promise<void>;

export function blobStoreContract(test: TestFn, driver: string, factory: BlobStoreFactory): void {
  const contract = (title: string, body: Body): void => {
    test(`${driver} store: ${title}`, async (t) => {
      const h = await factory();
      try {
        await body(t, h);
        t.deepEqual(await h.leftovers(), [], 'the test left objects behind in the store');
      } finally {
        await h.close();
      }
    });
  };

  contract('an empty store lists nothing and answers ping', async (t, h) => {
    await h.store.ping();
    t.deepEqual(await collect(h.store.list()), []);
    t.deepEqual(await collect(h.store.listUploads()), []);
    t.is(await h.store.stat(digestOf('nothing here')), null);
    await expectCode(t, h.store.read(digestOf('nothing here')), 'BLOB_UNKNOWN');
  });

  contract('commit without an expected digest computes sha256 of the bytes', async (t, h) => {
    const bytes = randomBytes(70_000);
    const w = await h.store.createUpload();
    t.is(w.offset, 0);
    t.is(await w.append(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)])), bytes.length);
    t.is(w.offset, bytes.length);
    const info = await w.commit();
    t.deepEqual(info, { digest: digestOf(bytes), size: bytes.length });
    t.deepEqual(await h.store.stat(info.digest), info);
    sameBytes(t, await readAll(await h.store.read(info.digest)), bytes);
    t.true(await h.store.delete(info.digest));
  });

  contract('commit with the right digest and size makes the blob visible; the session is gone', async (t, h) => {
    const bytes = randomBytes(4096);
    const digest = digestOf(bytes);
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    t.is(await h.store.stat(digest), null, 'nothing is visible before commit');
    await expectCode(t, h.store.read(digest), 'BLOB_UNKNOWN');
    t.deepEqual(await w.commit(digest, bytes.length), { digest, size: bytes.length });
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);
    await expectCode(t, h.store.resumeUpload(w.id), 'BLOB_UPLOAD_UNKNOWN');
    t.deepEqual(await collect(h.store.listUploads()), []);
    await h.store.delete(digest);
  });

  contract('commit with a wrong digest is DIGEST_INVALID and keeps nothing', async (t, h) => {
    const bytes = randomBytes(5000);
    const wrong = digestOf('something else');
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    const err = await expectCode(t, w.commit(wrong), 'DIGEST_INVALID');
    t.deepEqual(err.detail, { expected: wrong, actual: digestOf(bytes) });
    t.is(await h.store.stat(wrong), null);
    t.is(await h.store.stat(digestOf(bytes)), null);
    await expectCode(t, h.store.resumeUpload(w.id), 'BLOB_UPLOAD_UNKNOWN');
  });

  contract('commit with a wrong size is SIZE_INVALID and keeps nothing', async (t, h) => {
    const bytes = randomBytes(5000);
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    await expectCode(t, w.commit(digestOf(bytes), bytes.length + 1), 'SIZE_INVALID');
    t.is(await h.store.stat(digestOf(bytes)), null);
    await expectCode(t, h.store.resumeUpload(w.id), 'BLOB_UPLOAD_UNKNOWN');
  });

  contract('an empty upload commits as the digest of zero bytes', async (t, h) => {
    const w = await h.store.createUpload();
    await w.append(Readable.from([]));
    const info = await w.commit(digestOf(''), 0);
    t.deepEqual(info, { digest: digestOf(''), size: 0 });
    sameBytes(t, await readAll(await h.store.read(info.digest)), Buffer.alloc(0));
    await h.store.delete(info.digest);
  });

  contract('sha512: a sha512 session, and a sha256 session committed under sha512', async (t, h) => {
    const bytes = randomBytes(3000);
    const d512 = digestOf(bytes, 'sha512');
    const w1 = await h.store.createUpload({ algorithm: 'sha512' });
    await w1.append(Readable.from([bytes]));
    t.deepEqual(await w1.commit(), { digest: d512, size: bytes.length });

    const w2 = await h.store.createUpload();
    await w2.append(Readable.from([bytes]));
    t.deepEqual(await w2.commit(d512), { digest: d512, size: bytes.length }, 'a second commit of an existing blob keeps one blob');
    sameBytes(t, await readAll(await h.store.read(d512)), bytes);
    t.deepEqual(await listInfos(h.store), [{ digest: d512, size: bytes.length }]);
    await h.store.delete(d512);
  });

  contract('chunks append in order; limits reject without moving the offset', async (t, h) => {
    const bytes = randomBytes(30_000);
    const w = await h.store.createUpload();
    t.is(await w.append(Readable.from([bytes.subarray(0, 10_000)]), { atOffset: 0, exactBytes: 10_000 }), 10_000);

    await expectCode(t, w.append(Readable.from([bytes.subarray(0, 10_000)]), { atOffset: 0 }), 'RANGE_INVALID');
    await expectCode(t, w.append(Readable.from([bytes.subarray(10_000, 20_001)]), { exactBytes: 10_000 }), 'SIZE_INVALID');
    await expectCode(t, w.append(Readable.from([bytes.subarray(10_000, 19_999)]), { exactBytes: 10_000 }), 'SIZE_INVALID');
    await expectCode(t, w.append(Readable.from([randomBytes(600)]), { maxBytes: 500 }), 'TOO_LARGE');
    const again = await h.store.resumeUpload(w.id);
    t.is(again.offset, 10_000, 'failed appends leave the durable offset where it was');

    t.is(await again.append(Readable.from([bytes.subarray(10_000, 20_000)]), { atOffset: 10_000, exactBytes: 10_000 }), 20_000);
    t.is(await again.append(Readable.from([bytes.subarray(20_000)]), { maxBytes: 10_000 }), 30_000);
    t.deepEqual(await again.commit(digestOf(bytes)), { digest: digestOf(bytes), size: bytes.length });
    await h.store.delete(digestOf(bytes));
  });

  contract('a source that fails mid-append is BLOB_UPLOAD_INVALID and the session carries on', async (t, h) => {
    const bytes = randomBytes(20_000);
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes.subarray(0, 5000)]));
    const failing = Readable.from(
      (async function* () {
        yield randomBytes(3000);
        yield randomBytes(3000);
        throw new Error('connection reset');
      })(),
    );
    await expectCode(t, w.append(failing), 'BLOB_UPLOAD_INVALID');
    t.is(w.offset, 5000);
    t.is((await h.store.resumeUpload(w.id)).offset, 5000);
    await w.append(Readable.from([bytes.subarray(5000)]));
    t.deepEqual(await w.commit(digestOf(bytes), bytes.length), { digest: digestOf(bytes), size: bytes.length });
    await h.store.delete(digestOf(bytes));
  });

  contract('listUploads says a session is in use while an append streams into it, and not after', async (t, h) => {
    const w = await h.store.createUpload();
    const source = new PassThrough();
    const appending = w.append(source);
    source.write(randomBytes(1000));
    await new Promise((r) => setTimeout(r, 100)); // the append holds the session now
    const during = (await collect(h.store.listUploads())).find((u) => u.id === w.id);
    t.true(during?.inUse, 'in use while the chunk streams');
    source.end(randomBytes(1000));
    await appending;
    const after = (await collect(h.store.listUploads())).find((u) => u.id === w.id);
    t.false(after?.inUse, 'idle once the append is done');
    await w.cancel();
  });

  contract('an upload resumes on a reopened store (restart) and on a second store alternately', async (t, h) => {
    const parts = [randomBytes(100_000), randomBytes(50_000), randomBytes(70_001), randomBytes(3)];
    const whole = Buffer.concat(parts);
    const a = await h.store.createUpload();
    await a.append(Readable.from([parts[0]!]));

    const other = await h.reopen();
    const b = await other.resumeUpload(a.id);
    t.is(b.offset, parts[0]!.length, 'the offset survives the reopen');
    await b.append(Readable.from([parts[1]!]), { atOffset: parts[0]!.length });
    t.deepEqual(
      (await collect(h.store.listUploads())).map((u) => u.id),
      [a.id],
    );

    // The first store's view is behind now; it must pick up the bytes the other one wrote.
    await expectCode(t, a.append(Readable.from([parts[2]!]), { atOffset: parts[0]!.length }), 'RANGE_INVALID');
    const a2 = await h.store.resumeUpload(a.id);
    t.is(a2.offset, parts[0]!.length + parts[1]!.length);
    await a2.append(Readable.from([parts[2]!]));
    await b.append(Readable.from([parts[3]!]));
    const info = await (await other.resumeUpload(a.id)).commit(digestOf(whole), whole.length);
    t.deepEqual(info, { digest: digestOf(whole), size: whole.length });
    sameBytes(t, await readAll(await h.store.read(info.digest)), whole);
    await h.store.delete(info.digest);
  });

  contract('concurrent appends to one session are serialized', async (t, h) => {
    const w = await h.store.createUpload();
    const chunks = Array.from({ length: 8 }, () => randomBytes(20_000));
    const results = await Promise.all(chunks.map((c) => w.append(Readable.from([c]), { exactBytes: c.length })));
    t.deepEqual(
      [...results].sort((x, y) => x - y),
      chunks.map((_, i) => (i + 1) * 20_000),
    );
    t.is((await h.store.resumeUpload(w.id)).offset, 160_000);
    // The order is whatever the lock gave; the data must be one whole chunk after another.
    const info = await w.commit();
    const stored = await readAll(await h.store.read(info.digest));
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) seen.add(stored.subarray(i * 20_000, (i + 1) * 20_000).toString('hex'));
    t.deepEqual(seen, new Set(chunks.map((c) => c.toString('hex'))));
    t.is(info.digest, digestOf(stored));
    await h.store.delete(info.digest);
  });

  contract('an append whose source stalled gives way to one queued behind it; one whose source still sends is waited for', async (t, h) => {
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    // slow but steady: 64 KiB every 400 ms, 3.2 s in all, while another append waits from 0.5 s
    const steady = await h.store.createUpload();
    const slow = new PassThrough();
    const slowAppend = steady.append(slow);
    const queuedAfterSteady = sleep(500).then(() => steady.append(Readable.from([randomBytes(1000)])));
    for (let i = 0; i < 8; i++) {
      slow.write(randomBytes(65_536));
      await sleep(400);
    }
    slow.end();
    t.is(await slowAppend, 8 * 65_536, 'the steady source is not cut off');
    t.is(await queuedAfterSteady, 8 * 65_536 + 1000, 'the queued append goes after it');
    await steady.cancel();

    // stalled: 10 bytes, then nothing
    const stalledUpload = await h.store.createUpload();
    const stalled = new PassThrough();
    const stalledAppend = stalledUpload.append(stalled);
    stalled.write(randomBytes(10));
    await sleep(300);
    const started = Date.now();
    const retry = await stalledUpload.append(Readable.from([randomBytes(2000)]));
    t.is(retry, 2000, 'the stalled bytes are dropped; the retry starts at the last durable offset');
    t.true(Date.now() - started < 5000, `the retry waited ${Date.now() - started} ms`);
    const err = await stalledAppend.then(() => null, (e: unknown) => e);
    t.true(isVolregError(err) && err.code === 'BLOB_UPLOAD_INVALID', String(err));
    await stalledUpload.cancel();
  });

  contract('two appends claiming the same offset: one wins, the other is RANGE_INVALID', async (t, h) => {
    const w = await h.store.createUpload();
    const results = await Promise.allSettled([
      w.append(Readable.from([randomBytes(1000)]), { atOffset: 0 }),
      w.append(Readable.from([randomBytes(1000)]), { atOffset: 0 }),
    ]);
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    t.true(isVolregError(rejected.reason) && rejected.reason.code === 'RANGE_INVALID');
    await w.cancel();
  });

  contract('concurrent commits of the same content all succeed with one blob', async (t, h) => {
    const bytes = randomBytes(200_000);
    const digest = digestOf(bytes);
    const writers: UploadWriter[] = [];
    for (let i = 0; i < 12; i++) {
      const w = await h.store.createUpload();
      await w.append(Readable.from([bytes]));
      writers.push(w);
    }
    const infos = await Promise.all(writers.map((w, i) => (i % 2 === 0 ? w.commit(digest, bytes.length) : w.commit())));
    for (const info of infos) t.deepEqual(info, { digest, size: bytes.length });
    t.deepEqual(await listInfos(h.store), [{ digest, size: bytes.length }]);
    t.deepEqual(await collect(h.store.listUploads()), []);
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);
    await h.store.delete(digest);
  });

  contract('ranged reads at the edges; ranges outside the blob are RANGE_INVALID', async (t, h) => {
    const bytes = randomBytes(1000);
    const { digest } = await put(h.store, bytes);
    const cases: Array<[number, number]> = [
      [0, 0],
      [0, 999],
      [999, 999],
      [1, 998],
      [500, 501],
    ];
    for (const [start, end] of cases) {
      sameBytes(t, await readAll(await h.store.read(digest, { start, end })), bytes.subarray(start, end + 1), `${start}-${end}`);
    }
    await expectCode(t, h.store.read(digest, { start: 0, end: 1000 }), 'RANGE_INVALID');
    await expectCode(t, h.store.read(digest, { start: 1000, end: 1000 }), 'RANGE_INVALID');
    await expectCode(t, h.store.read(digest, { start: 10, end: 9 }), 'RANGE_INVALID');
    await expectCode(t, h.store.read(digest, { start: -1, end: 9 }), 'RANGE_INVALID');
    await h.store.delete(digest);
  });

  contract('reads of a blob larger than a driver read chunk: whole, and ranges across chunk boundaries', async (t, h) => {
    const MiB = 1024 * 1024;
    const bytes = randomBytes(9 * MiB + 123);
    const { digest } = await put(h.store, bytes);
    sameBytes(t, await readAll(await h.store.read(digest)), bytes, 'whole');
    const cases: Array<[number, number]> = [
      [MiB - 1, 8 * MiB + 1],
      [4 * MiB - 10, 4 * MiB + 10],
      [2 * MiB, bytes.length - 1],
      [bytes.length - 5, bytes.length - 1],
    ];
    for (const [start, end] of cases) {
      sameBytes(t, await readAll(await h.store.read(digest, { start, end })), bytes.subarray(start, end + 1), `${start}-${end}`);
    }
    await h.store.delete(digest);
  });

  contract('openReader reads the same bytes as read into the caller\'s buffers: whole, ranges, any buffer size', async (t, h) => {
    const MiB = 1024 * 1024;
    const bytes = randomBytes(3 * MiB + 7);
    const { digest } = await put(h.store, bytes);
    const cases: Array<{ range?: { start: number; end: number }; bufSize: number }> = [
      { bufSize: MiB },
      { bufSize: 4096 },
      { bufSize: 5 * MiB },
      { range: { start: MiB - 1, end: 2 * MiB + 1 }, bufSize: 300_000 },
      { range: { start: bytes.length - 1, end: bytes.length - 1 }, bufSize: 10 },
    ];
    for (const { range, bufSize } of cases) {
      const reader = await h.store.openReader(digest, range);
      const want = range ? bytes.subarray(range.start, range.end + 1) : bytes;
      t.is(reader.length, want.length);
      // one buffer reused for every read, as a sender does
      const buf = Buffer.alloc(bufSize);
      const got: Buffer[] = [];
      for (let n = await reader.readInto(buf); n > 0; n = await reader.readInto(buf)) got.push(Buffer.from(buf.subarray(0, n)));
      t.is(await reader.readInto(buf), 0, 'stays at the end');
      await reader.close();
      await reader.close();
      sameBytes(t, Buffer.concat(got), want, `${range?.start ?? 'whole'} by ${bufSize}`);
    }
    await expectCode(t, h.store.openReader(digest, { start: 0, end: bytes.length }), 'RANGE_INVALID');
    await expectCode(t, h.store.openReader(digestOf('never stored')), 'BLOB_UNKNOWN');
    const empty = await put(h.store, Buffer.alloc(0));
    const reader = await h.store.openReader(empty.digest);
    t.is(reader.length, 0);
    t.is(await reader.readInto(Buffer.alloc(16)), 0);
    await reader.close();
    await h.store.delete(empty.digest);
    await h.store.delete(digest);
  });

  contract('a reader opened before a delete still reads every byte', async (t, h) => {
    const bytes = randomBytes(2 * 1024 * 1024 + 5);
    const { digest } = await put(h.store, bytes);
    const reader = await h.store.openReader(digest);
    t.true(await h.store.delete(digest));
    const buf = Buffer.alloc(bytes.length);
    let got = 0;
    for (let n = await reader.readInto(buf.subarray(got)); n > 0; n = await reader.readInto(buf.subarray(got))) got += n;
    await reader.close();
    t.is(got, bytes.length);
    sameBytes(t, buf, bytes);
  });

  contract('a read started before a delete still returns every byte', async (t, h) => {
    const bytes = randomBytes(3 * 1024 * 1024);
    const { digest } = await put(h.store, bytes);
    const stream = await h.store.read(digest);
    t.true(await h.store.delete(digest));
    sameBytes(t, await readAll(stream), bytes);
    t.is(await h.store.stat(digest), null);
  });

  contract('delete is idempotent', async (t, h) => {
    const { digest } = await put(h.store, randomBytes(10));
    t.true(await h.store.delete(digest));
    t.false(await h.store.delete(digest));
    t.false(await h.store.delete(digestOf('never stored')));
    t.is(await h.store.stat(digest), null);
  });

  contract('cancel is idempotent and removes the bytes', async (t, h) => {
    const w = await h.store.createUpload();
    await w.append(Readable.from([randomBytes(50_000)]));
    await w.cancel();
    await w.cancel();
    await expectCode(t, h.store.resumeUpload(w.id), 'BLOB_UPLOAD_UNKNOWN');
    await expectCode(t, w.append(Readable.from([randomBytes(10)])), 'BLOB_UPLOAD_UNKNOWN');
    await expectCode(t, w.commit(), 'BLOB_UPLOAD_UNKNOWN');
    const other = await h.reopen();
    const w2 = await h.store.createUpload();
    await (await other.resumeUpload(w2.id)).cancel();
    await w2.cancel();
    t.deepEqual(await collect(h.store.listUploads()), []);
  });

  contract('malformed or unknown upload ids are BLOB_UPLOAD_UNKNOWN', async (t, h) => {
    for (const id of ['', '..', '../../etc/passwd', 'a/b', '00000000-0000-0000-0000-000000000000', 'ABCDEF00-0000-4000-8000-000000000000', 'x'.repeat(300)]) {
      await expectCode(t, h.store.resumeUpload(id), 'BLOB_UPLOAD_UNKNOWN');
    }
  });

  contract('list yields every committed blob once; listUploads every open session', async (t, h) => {
    const blobs = [randomBytes(1), randomBytes(100), randomBytes(10_000)];
    const infos = [];
    for (const b of blobs) infos.push(await put(h.store, b));
    infos.push(await put(h.store, blobs[1]!));
    const listed = await listInfos(h.store);
    const byDigest = (x: { digest: string }, y: { digest: string }) => x.digest.localeCompare(y.digest);
    t.deepEqual(listed.sort(byDigest), blobs.map((b) => ({ digest: digestOf(b), size: b.length })).sort(byDigest));

    const before = Date.now();
    const u1 = await h.store.createUpload();
    const u2 = await h.store.createUpload();
    await u2.append(Readable.from([randomBytes(5)]));
    const uploads = await collect(h.store.listUploads());
    t.deepEqual(uploads.map((u) => u.id).sort(), [u1.id, u2.id].sort());
    for (const u of uploads) t.true(u.lastActivity.getTime() >= before - 2000 && u.lastActivity.getTime() <= Date.now() + 2000);
    await u1.cancel();
    await u2.cancel();
    for (const b of blobs) await h.store.delete(digestOf(b));
  });

  contract('a commit of an existing digest puts its verified bytes in place of a damaged blob', async (t, h) => {
    const bytes = randomBytes(50_000);
    const { digest } = await put(h.store, bytes);
    await h.damage(digest);
    t.not(createHash('sha256').update(await readAll(await h.store.read(digest))).digest('hex'), digest.slice(7), 'the damage took');
    await put(h.store, bytes);
    sameBytes(t, await readAll(await h.store.read(digest)), bytes, 'mended by the second commit');
    t.deepEqual(await listInfos(h.store), [{ digest, size: bytes.length }]);
    await h.store.delete(digest);
  });

  contract('quarantineIfDamaged moves damaged bytes out of the store and leaves intact ones', async (t, h) => {
    const bytes = randomBytes(70_000);
    const { digest } = await put(h.store, bytes);
    t.is(await h.store.quarantineIfDamaged(digest), null, 'intact: nothing moves');
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);
    t.is(await h.store.quarantineIfDamaged(digestOf('absent')), null, 'absent: nothing to move');

    await h.damage(digest);
    const damaged = await readAll(await h.store.read(digest));
    const place = await h.store.quarantineIfDamaged(digest);
    t.truthy(place, 'damaged: moved');
    t.is(await h.store.stat(digest), null, 'the blob is absent, so the next upload stores it again');
    t.deepEqual(await listInfos(h.store), []);
    await expectCode(t, h.store.read(digest), 'BLOB_UNKNOWN');

    await put(h.store, bytes);
    sameBytes(t, await readAll(await h.store.read(digest)), bytes, 'stored again by an upload');
    sameBytes(t, await h.takeQuarantined(place!), damaged, 'the damaged bytes are kept, as they were');
    await h.store.delete(digest);
  });

  contract('quarantineIfDamaged never takes bytes a commit put in place after the damage was read', async (t, h) => {
    const bytes = randomBytes(40_000);
    const { digest } = await put(h.store, bytes);
    await h.damage(digest);
    // the damage was seen (say by a verify), then a client sent the content again
    await put(h.store, bytes);
    t.is(await h.store.quarantineIfDamaged(digest), null);
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);
    await h.store.delete(digest);
  });

  contract('list and modified give the time of the last commit; re-committing refreshes it', async (t, h) => {
    const bytes = randomBytes(300);
    const before = Date.now();
    const { digest } = await put(h.store, bytes);
    const [listed] = await collect(h.store.list());
    t.is(listed?.digest, digest);
    const first = listed!.modified.getTime();
    // filesystem clocks may lag Date.now() by a tick
    t.true(first >= before - 1000 && first <= Date.now() + 1000, `modified ${first} outside [${before}, ${Date.now()}]`);
    t.is((await h.store.modified(digest))?.getTime(), first);
    t.is(await h.store.modified(digestOf('absent')), null);
    await new Promise((r) => setTimeout(r, 50));
    await put(h.store, bytes);
    const again = (await h.store.modified(digest))!.getTime();
    t.true(again > first, 'a commit of an existing digest refreshes its time');
    await h.store.delete(digest);
  });

  contract('guarded delete: unmodifiedSince keeps a newer blob; confirm decides while it is invisible', async (t, h) => {
    const bytes = randomBytes(500);
    const { digest } = await put(h.store, bytes);
    const past = new Date(Date.now() - 60_000);
    const future = new Date(Date.now() + 60_000);
    t.false(await h.store.delete(digest, { unmodifiedSince: past }), 'committed after the limit: kept');
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);

    let seenDuring: unknown = 'not asked';
    t.false(
      await h.store.delete(digest, {
        unmodifiedSince: future,
        confirm: async () => {
          seenDuring = await h.store.stat(digest);
          return false;
        },
      }),
      'confirm said no: kept',
    );
    t.is(seenDuring, null, 'invisible while confirm runs');
    sameBytes(t, await readAll(await h.store.read(digest)), bytes);

    await t.throwsAsync(h.store.delete(digest, { confirm: () => Promise.reject(new Error('db down')) }), { message: 'db down' });
    sameBytes(t, await readAll(await h.store.read(digest)), bytes, 'a failing confirm puts the blob back');

    // A commit of the same digest while confirm runs is not lost when confirm says yes.
    t.true(
      await h.store.delete(digest, {
        unmodifiedSince: future,
        confirm: async () => {
          await put(h.store, bytes);
          return true;
        },
      }),
    );
    sameBytes(t, await readAll(await h.store.read(digest)), bytes, 'the concurrent commit kept its blob');
    t.deepEqual(await listInfos(h.store), [{ digest, size: bytes.length }]);

    t.true(await h.store.delete(digest, { unmodifiedSince: future, confirm: async () => true }));
    t.is(await h.store.stat(digest), null);
    t.false(await h.store.delete(digest, { unmodifiedSince: future }), 'absent: false');
  });

  contract('a large streamed append keeps its bytes and digest', async (t, h) => {
    const seed = randomBytes(64 * 1024);
    const chunks = 256; // 16 MiB
    const expected = createHash('sha256');
    for (let i = 0; i < chunks; i++) expected.update(seed);
    const digest = `sha256:${expected.digest('hex')}` as Digest;
    const w = await h.store.createUpload();
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < chunks; i++) yield seed;
      })(),
    );
    await w.append(source);
    t.deepEqual(await w.commit(digest, chunks * seed.length), { digest, size: chunks * seed.length });
    const back = createHash('sha256');
    for await (const c of await h.store.read(digest)) back.update(c as Buffer);
    t.is(`sha256:${back.digest('hex')}`, digest);
    await h.store.delete(digest);
  });
}

async function put(store: BlobStore, bytes: Buffer): Promise<{ digest: Digest; size: number }> {
  const w = await store.createUpload();
  await w.append(Readable.from([bytes]));
  return w.commit(digestOf(bytes), bytes.length);
}

/** Buffer.equals: ava's deepEqual is far too slow on megabytes. */
function sameBytes(t: ExecutionContext, actual: Buffer, expected: Buffer, message?: string): void {
  t.is(actual.length, expected.length, message);
  t.true(actual.equals(expected), message ?? 'bytes differ');
}

/** list() without the times, for comparing with BlobInfo values. */
async function listInfos(store: BlobStore): Promise<Array<{ digest: Digest; size: number }>> {
  return (await collect(store.list())).map(({ digest, size }) => ({ digest, size }));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function expectCode(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode) {
  const err = await t.throwsAsync(p);
  t.true(isVolregError(err), `expected a VolregError ${code}, got ${String(err)}`);
  if (!isVolregError(err)) throw err;
  t.is(err.code, code);
  return err;
}
