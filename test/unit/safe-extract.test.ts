import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import test from 'ava';
import { packDirectory } from '../../src/cli/archive/pack.ts';
import { compressor } from '../../src/cli/archive/compress.ts';
import { extractTar, UnsafeArchiveError } from '../../src/cli/archive/safe-extract.ts';
import { decompressedTar } from '../../src/domain/volumes/decompress.ts';
import { buildTar, describeTree, makeSampleTree, type HostileEntry } from '../helpers/tree.ts';

let work = '';
let source = '';
let counter = 0;

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-extract-'));
  source = join(work, 'source');
  await mkdir(source);
  await makeSampleTree(source);
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A fresh target inside its own parent, with an `outside` directory beside it holding a secret. */
async function arena(): Promise<{ target: string; outside: string; parent: string }> {
  const parent = join(work, `arena-${++counter}`);
  const target = join(parent, 'target');
  const outside = join(parent, 'outside');
  await mkdir(target, { recursive: true });
  await mkdir(outside);
  await writeFile(join(outside, 'secret'), 'untouched');
  return { target, outside, parent };
}

async function snapshotDir(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

test('pack then extract keeps contents, modes, mtimes, symlinks, hard links, empty and unicode names', async (t) => {
  const { target } = await arena();
  const result = await extractTar(packDirectory(source), target);
  t.deepEqual(await describeTree(target), await describeTree(source));
  t.true(result.files >= 6);
  const a = await stat(join(target, 'run.sh'));
  const b = await stat(join(target, 'a/hardlink-to-run'));
  t.is(a.ino, b.ino, 'hard link restored as a link');
  t.is((await lstat(join(target, 'a/link-to-deep'))).isSymbolicLink(), true);
});

for (const compression of ['gzip', 'zstd'] as const) {
  test(`packed ${compression} stream is read by GNU tar, and GNU tar's archive extracts the same`, async (t) => {
    const file = join(work, `packed-${compression}.tar`);
    await pipeline(packDirectory(source), compressor(compression), createWriteStream(file));
    const fromGnu = await arena();
    execFileSync('tar', ['-C', fromGnu.target, compression === 'gzip' ? '-xzf' : '--zstd', ...(compression === 'zstd' ? ['-xf'] : []), file]);
    t.deepEqual(await describeTree(fromGnu.target), await describeTree(source));

    const gnuFile = join(work, `gnu-${compression}.tar`);
    execFileSync('tar', ['-C', source, compression === 'gzip' ? '-czf' : '--zstd', ...(compression === 'zstd' ? ['-cf'] : []), gnuFile, '.']);
    const ours = await arena();
    const { compression: detected, tar } = await decompressedTar(createReadStream(gnuFile));
    t.is(detected, compression);
    await extractTar(tar, ours.target);
    t.deepEqual(await describeTree(ours.target), await describeTree(source));
  });
}

const hostile: Array<{ title: string; entries: HostileEntry[]; outsideName?: string }> = [
  { title: 'dot-dot path', entries: [{ name: '../outside/pwned', body: 'x' }] },
  { title: 'nested dot-dot path', entries: [{ name: 'a/../../outside/pwned', body: 'x' }] },
  { title: 'absolute path', entries: [{ name: '/ABS/outside/pwned', body: 'x' }] },
  {
    title: 'symlink escape then write through it',
    entries: [
      { name: 'esc', type: 'symlink', linkname: '../outside' },
      { name: 'esc/pwned', body: 'x' },
    ],
  },
  { title: 'absolute symlink', entries: [{ name: 'abs', type: 'symlink', linkname: '/etc' }] },
  {
    title: 'write through an inside symlink to a directory',
    entries: [
      { name: 'sub/', type: 'directory' },
      { name: 'l', type: 'symlink', linkname: 'sub' },
      { name: 'l/pwned', body: 'x' },
    ],
  },
  { title: 'hard link escape', entries: [{ name: 'hl', type: 'link', linkname: '../outside/secret' }] },
  { title: 'hard link to a file not in the archive', entries: [{ name: 'hl', type: 'link', linkname: 'nothere' }] },
  {
    title: 'hard link to a symlink',
    entries: [
      { name: 'ok', type: 'symlink', linkname: 'x' },
      { name: 'hl', type: 'link', linkname: 'ok' },
    ],
  },
  {
    title: 'file replacing a directory',
    entries: [
      { name: 'd/', type: 'directory' },
      { name: 'd', body: 'x' },
    ],
  },
  { title: 'device without --allow-devices', entries: [{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }] },
];

for (const c of hostile) {
  test(`hostile tar refused: ${c.title}`, async (t) => {
    const { target, outside, parent } = await arena();
    // the absolute case points into this arena's outside dir
    const entries = c.entries.map((e) => ({ ...e, name: e.name.replace('/ABS/outside', outside) }));
    const before = await snapshotDir(parent);
    const err = await t.throwsAsync(extractTar(Readable.from(await buildTar(entries)), target));
    t.true(err instanceof UnsafeArchiveError, String(err));
    t.is(await readFile(join(outside, 'secret'), 'utf8'), 'untouched');
    const after = (await snapshotDir(parent)).filter((p) => !p.startsWith('target/') && p !== 'target');
    t.deepEqual(after, before.filter((p) => !p.startsWith('target/') && p !== 'target'));
  });
}

test('a later entry may replace an earlier file or symlink of the same name, never write through it', async (t) => {
  const { target, outside } = await arena();
  const tar = await buildTar([
    { name: 'x', type: 'symlink', linkname: 'y' },
    { name: 'x', body: 'second' },
    { name: 'y', body: 'first' },
    { name: 'y', body: 'replaced' },
  ]);
  await extractTar(Readable.from(tar), target);
  t.is(await readFile(join(target, 'x'), 'utf8'), 'second');
  t.is(await readFile(join(target, 'y'), 'utf8'), 'replaced');
  t.false((await lstat(join(target, 'x'))).isSymbolicLink());
  t.is(await readFile(join(outside, 'secret'), 'utf8'), 'untouched');
});

test('keepOutsideSymlinks creates the link but still never writes through it', async (t) => {
  const { target, outside } = await arena();
  await extractTar(Readable.from(await buildTar([{ name: 'zone', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' }])), target, {
    keepOutsideSymlinks: true,
  });
  t.true((await lstat(join(target, 'zone'))).isSymbolicLink());
  const tar = await buildTar([
    { name: 'esc', type: 'symlink', linkname: outside },
    { name: 'esc/pwned', body: 'x' },
  ]);
  const { target: t2 } = await arena();
  await t.throwsAsync(extractTar(Readable.from(tar), t2, { keepOutsideSymlinks: true }), { instanceOf: UnsafeArchiveError });
  t.deepEqual(await readdir(outside), ['secret']);
});

test('device files are created only with allowDevices (and only root can)', async (t) => {
  const tar = await buildTar([{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 }]);
  const { target } = await arena();
  if (process.getuid?.() === 0) {
    await extractTar(Readable.from(tar), target, { allowDevices: true });
    const st = await lstat(join(target, 'null'));
    t.true(st.isCharacterDevice());
    t.is(st.rdev, (1 << 8) | 3);
  } else {
    await t.throwsAsync(extractTar(Readable.from(tar), target, { allowDevices: true }));
  }
});
