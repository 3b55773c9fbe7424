import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, link, lstat, mkdir, mkdtemp, open, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import test from 'ava';
import { extract, type Header } from 'tar-stream';
import { FileChangedError, packDirectory } from '../../src/cli/archive/pack.ts';

/**
 * The packer on its own: what it makes of files that change while it reads them, of hard-linked
 * symlinks and of sub-second mtimes. The packer reads a file only as fast as its stream is
 * consumed, so a consumer that stops after the first megabyte holds it mid-file: the changes
 * below land while the file is being read, every time.
 */
let work = '';
let counter = 0;

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-pack-'));
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

const BIG = 16 * 1024 * 1024;

/** Packs a directory holding `big` (16 MiB), calling `change(path)` once 1 MiB of the tar has been consumed. */
async function packWhileChanging(change: (path: string) => Promise<void>): Promise<{ err: unknown; path: string }> {
  const dir = join(work, `changing-${++counter}`);
  await mkdir(dir);
  const path = join(dir, 'big');
  await writeFile(path, randomBytes(BIG));
  // an old mtime: a change made now differs from it whatever the clock's granularity
  await utimes(path, new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
  let consumed = 0;
  let changed = false;
  const slowReader = new Writable({
    write(chunk: Buffer, _enc, cb) {
      consumed += chunk.length;
      if (changed || consumed < 1024 * 1024) return cb();
      changed = true;
      change(path).then(() => cb(), cb);
    },
  });
  const err = await pipeline(packDirectory(dir), slowReader).then(
    () => null,
    (e: unknown) => e,
  );
  if (!changed) throw new Error('the file was never changed while it was read');
  return { err, path };
}

const changes: Array<[string, (path: string) => Promise<void>, RegExp]> = [
  ['grows', (path) => appendFile(path, 'more'), /it grew from 16777216 to 16777220 bytes/],
  ['shrinks below what was read', (path) => truncate(path, 1024), /it shrank below 16777216 bytes/],
  ['shrinks, but not below what was read,', (path) => truncate(path, BIG - 1), /it shrank below 16777216 bytes/],
  [
    'is rewritten in place (same size)',
    async (path) => {
      const file = await open(path, 'r+');
      await file.write(Buffer.alloc(1024 * 1024), 0, 1024 * 1024, 0);
      await file.close();
    },
    /it was modified/,
  ],
];

for (const [title, change, how] of changes) {
  test(`a file that ${title} while it is read fails the packing, naming it`, async (t) => {
    const { err, path } = await packWhileChanging(change);
    t.true(err instanceof FileChangedError, String(err));
    const message = (err as Error).message;
    t.true(message.startsWith(`${path} changed while it was being read (`), message);
    t.regex(message, how);
    t.regex(message, /; stop what writes to the volume, or back up a snapshot of it, and push again$/);
  });
}

/** The headers of a packed directory, in order. */
async function headersOf(dir: string): Promise<Header[]> {
  const headers: Header[] = [];
  const parser = extract();
  const reading = (async () => {
    for await (const entry of parser) {
      headers.push(entry.header);
      entry.resume();
    }
  })();
  await pipeline(packDirectory(dir), parser);
  await reading;
  return headers;
}

test('a file that does not change is packed whole', async (t) => {
  const dir = join(work, 'still');
  await mkdir(dir);
  await writeFile(join(dir, 'big'), randomBytes(BIG));
  const big = (await headersOf(dir)).find((h) => h.name === 'big');
  t.is(big?.size, BIG);
});

test('two names of one symlink are packed as a symlink and a link entry to it', async (t) => {
  const dir = join(work, 'linked-symlinks');
  await mkdir(dir);
  await writeFile(join(dir, 'x'), 'x');
  await symlink('x', join(dir, 's'));
  await link(join(dir, 's'), join(dir, 'h'));
  t.is((await lstat(join(dir, 'h'))).nlink, 2);
  const entries = (await headersOf(dir)).map((h) => [h.name, h.type, h.linkname ?? null]);
  t.deepEqual(entries, [
    ['./', 'directory', null],
    ['h', 'symlink', 'x'],
    ['s', 'link', 'h'],
    ['x', 'file', null],
  ]);
});

test('an mtime a hair before the next second is packed as its own second, not the next', async (t) => {
  const dir = join(work, 'subsecond');
  await mkdir(dir);
  await writeFile(join(dir, 'f'), 'f');
  // utimes takes a float of seconds, which can not say .999999999: touch can
  execFileSync('touch', ['-d', '2020-01-01 00:00:00.999999999 UTC', join(dir, 'f')]);
  t.is((await lstat(join(dir, 'f'), { bigint: true })).mtimeNs, 1_577_836_800_999_999_999n);
  const f = (await headersOf(dir)).find((h) => h.name === 'f');
  t.is(f?.mtime?.getTime(), 1_577_836_800_000);
});

/** The first `n` bytes of the tar of `dir`; the rest is never read (a sparse file of gigabytes is not read through). */
async function tarHead(dir: string, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  for await (const chunk of packDirectory(dir)) {
    chunks.push(chunk as Buffer);
    got += (chunk as Buffer).length;
    if (got >= n) break;
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/** The size field (offset 124, 12 bytes) and typeflag of the header block at `block`. */
function headerAt(tar: Buffer, block: number): { size: Buffer; type: string; name: string } {
  const h = tar.subarray(block * 512, block * 512 + 512);
  return { size: h.subarray(124, 136), type: String.fromCharCode(h[156]!), name: h.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '') };
}

test('a file of 8 GiB - 1 bytes has its size in the ustar field; one of 8 GiB has it in a pax record too', async (t) => {
  const eight = 8 * 1024 ** 3;
  const under = join(work, 'size-under');
  const over = join(work, 'size-over');
  await mkdir(under);
  await mkdir(over);
  await writeFile(join(under, 'f'), '');
  await truncate(join(under, 'f'), eight - 1);
  await writeFile(join(over, 'f'), '');
  await truncate(join(over, 'f'), eight);

  const ustar = headerAt(await tarHead(under, 1024), 1);
  t.is(ustar.type, '0');
  t.is(ustar.size.toString('latin1'), '77777777777 ');

  const head = await tarHead(over, 2048);
  const pax = headerAt(head, 1);
  t.is(pax.type, 'x', 'a pax header comes before the file');
  t.regex(head.subarray(1024, 1536).toString('latin1'), /^\d+ path=f\n(\d+ .*\n)*?\d+ size=8589934592\n/);
  t.is(headerAt(head, 3).type, '0');
  // GNU tar lists it with its size (and then finds the data cut short, as only the head is given)
  const listed = spawnSync('tar', ['-tvf', '-'], { input: head, encoding: 'utf8' });
  t.regex(listed.stdout, / 8589934592 .* f\n/);
});
