import { lstat, mkdir, mkdtemp, open as openFile, readFile, readdir, rename, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import test from 'ava';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import { FsBlobStore } from '../../src/storage/fs-driver.ts';
import { blobAsidePath, blobPath, uploadDataPath, uploadLockPath, uploadStatePath } from '../../src/storage/paths.ts';
import { blobStoreContract } from '../contract/blob-store-contract.ts';

async function files(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isDirectory()) out.push(relative(root, join(entry.parentPath, entry.name)));
  }
  return out.sort();
}

async function harness(lockWaitMs = 2000) {
  const root = await mkdtemp(join(tmpdir(), 'volreg-fs-store-'));
  const opened: FsBlobStore[] = [];
  const open = async (): Promise<FsBlobStore> => {
    const s = await FsBlobStore.open({ root, lockWaitMs });
    opened.push(s);
    return s;
  };
  const store = await open();
  return {
    root,
    store,
    reopen: open,
    leftovers: () => files(root),
    damage: async (digest: Digest) => {
      const fh = await openFile(blobPath(root, digest), 'r+');
      try {
        const at = Math.floor((await fh.stat()).size / 2);
        const byte = Buffer.alloc(1);
        await fh.read(byte, 0, 1, at);
        byte[0] = byte[0]! ^ 0x20;
        await fh.write(byte, 0, 1, at);
      } finally {
        await fh.close();
      }
    },
    takeQuarantined: async (place: string) => {
      const bytes = await readFile(join(root, place));
      await rm(join(root, 'quarantine'), { recursive: true });
      return bytes;
    },
    close: async () => {
      for (const s of opened) s.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

blobStoreContract(test, 'fs', () => harness());

// Driver-specific behaviour: the on-disk layout and crash leftovers.

test('fs store: committed blobs live at blobs/<alg>/<2 hex>/<hex>, sessions under uploads/<id>', async (t) => {
  const h = await harness();
  try {
    const bytes = randomBytes(100);
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    t.deepEqual(await files(h.root), [`uploads/${w.id}/data`, `uploads/${w.id}/state.json`]);
    const { digest } = await w.commit();
    const hex = digest.slice('sha256:'.length);
    t.deepEqual(await files(h.root), [`blobs/sha256/${hex.slice(0, 2)}/${hex}`]);
    t.is(blobPath(h.root, digest), join(h.root, 'blobs', 'sha256', hex.slice(0, 2), hex));
    await h.store.delete(digest);
  } finally {
    await h.close();
  }
});

test('fs store: a blob is as new as its commit, however long ago its bytes were written (a resumed upload)', async (t) => {
  const h = await harness();
  try {
    const w = await h.store.createUpload();
    await w.append(Readable.from([randomBytes(2000)]));
    // the last bytes arrived two hours ago; the upload is finished now
    const then = new Date(Date.now() - 2 * 3600_000);
    await utimes(uploadDataPath(h.root, w.id), then, then);
    const before = Date.now();
    const { digest } = await w.commit();
    const modified = await h.store.modified(digest);
    t.truthy(modified);
    // a grace period of garbage collection counts from the commit, not from the last write
    t.true(modified!.getTime() >= before - 1000, `modified ${modified!.toISOString()}`);
    t.true((await stat(blobPath(h.root, digest))).mtimeMs >= before - 1000);
  } finally {
    await h.close();
  }
});

test('fs store: bytes past the durable offset (a crash mid-append) are dropped on resume', async (t) => {
  const h = await harness();
  try {
    const good = randomBytes(1000);
    const w = await h.store.createUpload();
    await w.append(Readable.from([good]));
    // What a kill -9 during the next append leaves: extra bytes in data, offset unchanged.
    await writeFile(uploadDataPath(h.root, w.id), randomBytes(777), { flag: 'a' });
    t.is((await stat(uploadDataPath(h.root, w.id))).size, 1777);

    const restarted = await h.reopen();
    const r = await restarted.resumeUpload(w.id);
    t.is(r.offset, 1000);
    const tail = randomBytes(24);
    await r.append(Readable.from([tail]));
    const whole = Buffer.concat([good, tail]);
    t.deepEqual(await r.commit(digestOf(whole)), { digest: digestOf(whole), size: 1024 });

    // And a commit straight after such a crash takes only [0, offset).
    const w2 = await h.store.createUpload();
    await w2.append(Readable.from([good]));
    await writeFile(uploadDataPath(h.root, w2.id), randomBytes(5), { flag: 'a' });
    t.deepEqual(await (await (await h.reopen()).resumeUpload(w2.id)).commit(), { digest: digestOf(good), size: 1000 });

    await h.store.delete(digestOf(whole));
    await h.store.delete(digestOf(good));
  } finally {
    await h.close();
  }
});

test('fs store: a session whose data lost its tail in a machine crash goes on from what the disk kept', async (t) => {
  const h = await harness();
  try {
    const first = randomBytes(4096);
    const second = randomBytes(4096);
    const w = await h.store.createUpload();
    await w.append(Readable.from([first]));
    await w.append(Readable.from([second]));
    // Appends do not wait for the disk: after a power cut the offset can be ahead of the data.
    await truncate(uploadDataPath(h.root, w.id), 5000);

    const restarted = await h.reopen();
    const r = await restarted.resumeUpload(w.id);
    t.is(r.offset, 5000, 'the offset is what the data file holds');
    const rest = second.subarray(5000 - 4096);
    t.is(await r.append(Readable.from([rest])), 8192);
    const whole = Buffer.concat([first, second]);
    t.deepEqual(await r.commit(digestOf(whole)), { digest: digestOf(whole), size: 8192 });
    t.deepEqual(await restarted.stat(digestOf(whole)), { digest: digestOf(whole), size: 8192 });
  } finally {
    await h.close();
  }
});

test('fs store: an unreadable session state means the session is gone (BLOB_UPLOAD_UNKNOWN), not a crash', async (t) => {
  const h = await harness();
  try {
    const w = await h.store.createUpload();
    await w.append(Readable.from([randomBytes(100)]));
    await writeFile(uploadStatePath(h.root, w.id), '');
    const restarted = await h.reopen();
    await t.throwsAsync(restarted.resumeUpload(w.id), { message: /unreadable/ });
    const err = await restarted.resumeUpload(w.id).catch((e: unknown) => e);
    t.is((err as { code?: string }).code, 'BLOB_UPLOAD_UNKNOWN');
  } finally {
    await h.close();
  }
});

test('fs store: a lock left by a dead process is broken; a live one makes the request wait', async (t) => {
  const h = await harness();
  try {
    const w = await h.store.createUpload();
    // pid 2^22+1 is above Linux's pid_max default, so it is not running.
    await writeFile(uploadLockPath(h.root, w.id), JSON.stringify({ host: hostname(), pid: 4194305, instance: 'gone' }));
    t.is(await w.append(Readable.from([Buffer.from('abc')])), 3);

    // A lock held by a live process (this one, through another open store) is waited for.
    const other = await h.reopen();
    const slow = Readable.from(
      (async function* () {
        yield Buffer.from('d');
        await new Promise((r) => setTimeout(r, 300));
        yield Buffer.from('e');
      })(),
    );
    const started = Date.now();
    const [first, second] = await Promise.all([
      (await other.resumeUpload(w.id)).append(slow),
      new Promise((r) => setTimeout(r, 50)).then(() => w.append(Readable.from([Buffer.from('f')]))),
    ]);
    t.is(first, 5);
    t.is(second, 6);
    t.true(Date.now() - started >= 300);
    await w.cancel();
  } finally {
    await h.close();
  }
});

test('fs store: a session busy in another process for too long is BLOB_UPLOAD_INVALID', async (t) => {
  const h = await harness(300);
  try {
    const w = await h.store.createUpload();
    // A live pid on this host (our parent) holding the lock: never stale.
    await writeFile(uploadLockPath(h.root, w.id), JSON.stringify({ host: hostname(), pid: process.ppid, instance: 'x' }));
    const err = await t.throwsAsync(w.append(Readable.from([Buffer.from('abc')])));
    t.is((err as { code?: string }).code, 'BLOB_UPLOAD_INVALID');
    await rm(uploadLockPath(h.root, w.id));
    // a dead pid of this host name but of another pid namespace (a container sharing the name) is not looked up
    await writeFile(uploadLockPath(h.root, w.id), JSON.stringify({ host: hostname(), pidNamespace: 'pid:[1]', pid: 4194305, instance: 'x' }));
    const elsewhere = await t.throwsAsync(w.append(Readable.from([Buffer.from('abc')])));
    t.is((elsewhere as { code?: string }).code, 'BLOB_UPLOAD_INVALID');
    await rm(uploadLockPath(h.root, w.id));
    await w.cancel();
  } finally {
    await h.close();
  }
});

test('fs store: hash state lost with its worker is recomputed from the data file', async (t) => {
  const h = await harness();
  try {
    const parts = [randomBytes(300_000), randomBytes(200_001)];
    const w = await h.store.createUpload();
    await w.append(Readable.from([parts[0]!]));
    // Stop the store's hash worker, as a crash of that thread would.
    (h.store as unknown as { hasher: { close(): void } }).hasher.close();
    await w.append(Readable.from([parts[1]!]));
    const whole = Buffer.concat(parts);
    t.deepEqual(await w.commit(digestOf(whole)), { digest: digestOf(whole), size: whole.length });
    await h.store.delete(digestOf(whole));
  } finally {
    await h.close();
  }
});

test('fs store: an idle store (and its hash worker) does not keep the process alive', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-fs-exit-'));
  try {
    const driver = new URL('../../src/storage/fs-driver.ts', import.meta.url).href;
    const script = `
      const { Readable } = await import('node:stream');
      const { FsBlobStore } = await import(${JSON.stringify(driver)});
      const s = await FsBlobStore.open({ root: ${JSON.stringify(root)} });
      const w = await s.createUpload();
      await w.append(Readable.from([Buffer.from('abc')]));
      const info = await w.commit();
      await s.delete(info.digest);
      await s.createUpload();
      console.log('done');`;
    const { execFile } = await import('node:child_process');
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { timeout: 20_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      );
    });
    t.is(result.stdout.trim(), 'done', result.stderr);
    t.is(result.code, 0, 'the process exited by itself');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('fs store: a blob left aside by a crash mid-delete is put back by list() once stale', async (t) => {
  const h = await harness();
  const eager = await FsBlobStore.open({ root: h.root, asideStaleMs: 0 });
  try {
    const bytes = randomBytes(100);
    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    const { digest } = await w.commit();
    const aside = blobAsidePath(h.root, digest, '00000000-0000-4000-8000-000000000001');
    await rename(blobPath(h.root, digest), aside);
    const listed = async (s: FsBlobStore) => {
      const out: string[] = [];
      for await (const b of s.list()) out.push(b.digest);
      return out;
    };
    // fresh: a guarded delete may still be deciding, so list() leaves it alone
    t.deepEqual(await listed(h.store), []);
    t.deepEqual(await files(h.root), [relative(h.root, aside)]);
    await new Promise((r) => setTimeout(r, 20));
    t.deepEqual(await listed(eager), [], 'put back, listed by the next listing');
    t.deepEqual(await listed(eager), [digest]);
    t.deepEqual(await files(h.root), [relative(h.root, blobPath(h.root, digest))]);
    t.true(await h.store.delete(digest));
  } finally {
    eager.close();
    await h.close();
  }
});

test('fs store: the free-space reserve refuses a session, a declared length and a stream past it, keeping nothing new', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-fs-store-'));
  const roomy = await FsBlobStore.open({ root });
  const w = await roomy.createUpload();
  await w.append(Readable.from([randomBytes(1000)]));
  const before = await files(root);
  try {
    // the real disk, with a reserve larger than any disk: nothing may start
    const full = await FsBlobStore.open({ root, minFreeBytes: Number.MAX_SAFE_INTEGER });
    const refused = await t.throwsAsync(full.createUpload());
    t.is((refused as { code?: string }).code, 'STORAGE_FULL');
    const resumed = await full.resumeUpload(w.id);
    const declared = await t.throwsAsync(resumed.append(Readable.from([randomBytes(10)]), { atOffset: 1000, exactBytes: 10 }));
    t.is((declared as { code?: string }).code, 'STORAGE_FULL');
    t.is((await full.resumeUpload(w.id)).offset, 1000, 'the session is where it was');
    full.close();

    // a disk of 64 MiB beyond a 1 GiB reserve, filled by what the session writes (measured from
    // its data file): other tests freeing or filling the real disk meanwhile change nothing
    const reserve = 1024 ** 3;
    const dataFile = uploadDataPath(root, w.id);
    const disk = async (): Promise<number> => reserve + 64 * 1024 * 1024 - (await stat(dataFile)).size;
    const tight = await FsBlobStore.open({ root, minFreeBytes: reserve, freeBytes: disk });
    let sent = 0;
    const stream = Readable.from((function* () {
      for (let i = 0; i < 512; i++) {
        sent += 1024 * 1024;
        yield randomBytes(1024 * 1024);
      }
    })());
    const stopped = await t.throwsAsync((await tight.resumeUpload(w.id)).append(stream));
    t.is((stopped as { code?: string }).code, 'STORAGE_FULL');
    t.true(sent < 128 * 1024 * 1024, `stopped after ${sent} bytes, within a few checks of the line`);
    t.is((await tight.resumeUpload(w.id)).offset, 1000, 'the refused bytes were not kept');
    t.is((await stat(dataFile)).size, 1000);
    t.deepEqual(await files(root), before);
    tight.close();
  } finally {
    roomy.close();
    await rm(root, { recursive: true, force: true });
  }
});

/** A store and a directory outside it (what a symlink in blobs/ points at), both removed after `fn`. */
async function withOutside(fn: (h: Awaited<ReturnType<typeof harness>>, outside: string) => Promise<void>): Promise<void> {
  const h = await harness();
  const outside = await mkdtemp(join(tmpdir(), 'volreg-outside-'));
  try {
    await fn(h, outside);
  } finally {
    await rm(outside, { recursive: true, force: true });
    await h.close();
  }
}

async function listed(store: FsBlobStore): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const b of store.list()) out.push(b);
  return out;
}

test('fs store: a symlink at a blob path is no blob (never followed, even to the right bytes); a commit replaces it, leaving its target alone', (t) =>
  withOutside(async (h, outside) => {
    const bytes = randomBytes(4000);
    const digest = digestOf(bytes);
    const target = join(outside, 'secret');
    await writeFile(target, bytes);
    await mkdir(dirname(blobPath(h.root, digest)), { recursive: true });
    await symlink(target, blobPath(h.root, digest));
    t.is(await h.store.stat(digest), null);
    t.is(await h.store.modified(digest), null);
    t.deepEqual(await listed(h.store), []);
    await t.throwsAsync(h.store.read(digest), { message: /blob unknown/i });
    await t.throwsAsync(h.store.openReader(digest), { message: /blob unknown/i });

    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    await w.commit(digest, bytes.length);
    t.false((await lstat(blobPath(h.root, digest))).isSymbolicLink(), 'the commit put a file in its place');
    t.true((await readFile(target)).equals(bytes), 'the target is untouched');
    t.deepEqual(await h.store.stat(digest), { digest, size: bytes.length });
    await h.store.delete(digest);
  }));

test('fs store: a symlink in place of a two-hex directory is not followed: its files are no blobs, never listed (so never collected), and a commit into it is refused', (t) =>
  withOutside(async (h, outside) => {
    const bytes = randomBytes(3000);
    const digest = digestOf(bytes);
    const hex = digest.slice('sha256:'.length);
    await writeFile(join(outside, hex), bytes);
    await mkdir(join(h.root, 'blobs', 'sha256'), { recursive: true });
    await symlink(outside, join(h.root, 'blobs', 'sha256', hex.slice(0, 2)));
    t.is(await h.store.stat(digest), null);
    await t.throwsAsync(h.store.read(digest), { message: /blob unknown/i });
    t.deepEqual(await listed(h.store), []);

    const w = await h.store.createUpload();
    await w.append(Readable.from([bytes]));
    await t.throwsAsync(w.commit(digest, bytes.length), { message: /blobs\/sha256\/[0-9a-f]{2} is not a directory volreg made/ });
    await t.throwsAsync(h.store.ping(), { message: /not a directory volreg made/ }, 'not ready until a commit succeeds');
    t.deepEqual(await readdir(outside), [hex], 'nothing written outside');
    t.true((await readFile(join(outside, hex))).equals(bytes));
    await rm(join(h.root, 'blobs', 'sha256', hex.slice(0, 2)));
    await w.commit(digest, bytes.length);
    await h.store.ping();
    t.deepEqual(await h.store.stat(digest), { digest, size: bytes.length });
    await h.store.delete(digest);
  }));
