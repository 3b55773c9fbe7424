import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import test from 'ava';
import { packDirectory } from '../../src/cli/archive/pack.ts';
import { compressor } from '../../src/cli/archive/compress.ts';
import { extractTar, extractTree, UnsafeArchiveError } from '../../src/cli/archive/safe-extract.ts';
import { NameHashSet } from '../../src/domain/volumes/name-hash-set.ts';
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
  { title: 'hard link to a directory', entries: [{ name: 'd/', type: 'directory' }, { name: 'hl', type: 'link', linkname: 'd' }] },
  {
    title: 'file replacing a directory that is not empty',
    entries: [
      { name: 'd/', type: 'directory' },
      { name: 'd/kept', body: 'x' },
      { name: 'd', body: 'x' },
    ],
  },
  {
    title: 'write through a symlink that replaced a directory already used as a parent',
    entries: [
      { name: 'd/', type: 'directory' },
      { name: 'd/sub/', type: 'directory' },
      { name: 'e/', type: 'directory' },
      { name: 'd/sub', body: 'replaced' },
      { name: 'd/sub', type: 'symlink', linkname: '../e' },
      { name: 'd/sub/pwned', body: 'x' },
    ],
  },
  { title: 'a file entry named like a directory that carries data', entries: [{ name: 'f/', body: 'data tar reads as headers' }] },
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

test('keepOutsideSymlinks: a symlink that replaced a directory already used as a parent is not written through', async (t) => {
  const { target, outside } = await arena();
  const tar = await buildTar([
    { name: 'd/', type: 'directory' },
    { name: 'd/sub/', type: 'directory' },
    { name: 'd/sub', body: 'replaced' },
    { name: 'd/sub', type: 'symlink', linkname: outside },
    { name: 'd/sub/pwned', body: 'x' },
  ]);
  const err = await t.throwsAsync(extractTar(Readable.from(tar), target, { keepOutsideSymlinks: true }), { instanceOf: UnsafeArchiveError });
  t.regex(err!.message, /parent d\/sub is a symlink/);
  t.deepEqual(await readdir(outside), ['secret']);
});

test('the same name twice: the later entry wins, an empty directory included (as tar -x); the directory\'s mode is not applied to what replaced it', async (t) => {
  const { target } = await arena();
  const tar = await buildTar([
    { name: 'd/', type: 'directory', mode: 0o700 },
    { name: 'd', body: 'now a file', mode: 0o640 },
    { name: 'e/', type: 'directory' },
    { name: 'e/inner/', type: 'directory', mode: 0o500 },
    { name: 'e/inner', type: 'symlink', linkname: '../d' },
    { name: 'e/', type: 'directory', mode: 0o750 },
  ]);
  await extractTar(Readable.from(tar), target);
  const d = await lstat(join(target, 'd'));
  t.true(d.isFile());
  t.is(d.mode & 0o7777, 0o640);
  t.is(await readFile(join(target, 'd'), 'utf8'), 'now a file');
  t.is(await readlink(join(target, 'e/inner')), '../d');
  t.is((await lstat(join(target, 'e'))).mode & 0o7777, 0o750, 'the later entry of a directory gives its mode');
});

test('a hard link may name a fifo extracted before it (bsdtar and busybox tar write a fifo\'s second name so)', async (t) => {
  const { target } = await arena();
  const tar = await buildTar([
    { name: 'p', type: 'fifo', mode: 0o600 },
    { name: 'q', type: 'link', linkname: 'p' },
    { name: 'r', type: 'link', linkname: 'q' },
  ]);
  await extractTar(Readable.from(tar), target);
  const [p, q, r] = await Promise.all(['p', 'q', 'r'].map((n) => lstat(join(target, n))));
  t.true(p!.isFIFO());
  t.is(q!.ino, p!.ino);
  t.is(r!.ino, p!.ino);
});

test('a file entry whose name ends in "/" is a directory, as tar -x makes it', async (t) => {
  const { target } = await arena();
  const tar = await buildTar([
    { name: 'f/', body: '', mode: 0o750 },
    { name: 'f/inner', body: 'in' },
  ]);
  await extractTar(Readable.from(tar), target);
  t.true((await lstat(join(target, 'f'))).isDirectory());
  t.is((await lstat(join(target, 'f'))).mode & 0o7777, 0o750);
  t.is(await readFile(join(target, 'f/inner'), 'utf8'), 'in');
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

test('every symlink is resolved against the extracted tree: links through links that leave it are refused in any order', async (t) => {
  const escapes: HostileEntry[][] = [
    [
      { name: 'y', type: 'symlink', linkname: '.' },
      { name: 'l', type: 'symlink', linkname: `${'y/'.repeat(10)}${'../'.repeat(10)}etc` },
    ],
    [
      { name: 'l', type: 'symlink', linkname: 'y/y/../../etc' },
      { name: 'y', type: 'symlink', linkname: '.' },
    ],
    // `missing` does not exist, but a later innocent mkdir would make `missing/..` the root
    [
      { name: 'y', type: 'symlink', linkname: '.' },
      { name: 'l', type: 'symlink', linkname: 'missing/../y/..' },
    ],
    [
      { name: 'deep/er/', type: 'directory' },
      { name: 'deep/er/top', type: 'symlink', linkname: '../..' },
      { name: 'deep/er/l', type: 'symlink', linkname: 'top/x/../..' },
    ],
    [{ name: 'self', type: 'symlink', linkname: 'self' }],
  ];
  for (const entries of escapes) {
    const { target, parent } = await arena();
    const before = await snapshotDir(parent);
    const err = await t.throwsAsync(extractTar(Readable.from(await buildTar(entries)), target), { instanceOf: UnsafeArchiveError });
    t.regex(err?.message ?? '', /leaves the target directory through the links|does not resolve within 40 links/);
    // the staging dir itself is the caller's to throw away; nothing outside it changed
    t.deepEqual((await snapshotDir(parent)).filter((p) => !p.startsWith('target')), before.filter((p) => !p.startsWith('target')));
  }
  const inside: HostileEntry[] = [
    { name: 'y', type: 'symlink', linkname: '.' },
    { name: 'd/', type: 'directory' },
    { name: 'd/f', body: 'f' },
    { name: 'a', type: 'symlink', linkname: 'y/y/d/../d/f' },
    { name: 'd/up', type: 'symlink', linkname: '..' },
    { name: 'd/b', type: 'symlink', linkname: 'up/d/up/y/d' },
    { name: 'dangling', type: 'symlink', linkname: 'nothere/yet' },
    { name: 'file-then-up', type: 'symlink', linkname: 'd/f/..' },
  ];
  const { target } = await arena();
  await extractTar(Readable.from(await buildTar(inside)), target);
  t.is(await readFile(join(target, 'a'), 'utf8'), 'f');
  t.is(await readFile(join(target, 'd/b/f'), 'utf8'), 'f');
});

test('entries that can not be restored exactly are refused, not skipped', async (t) => {
  const sparse = join(work, 'sparse-src');
  await mkdir(sparse);
  execFileSync('truncate', ['-s', '4M', join(sparse, 'holes.img')]);
  await writeFile(join(sparse, 'holes.img'), 'tail', { flag: 'a' });
  const latin1 = join(work, 'latin1-src');
  await mkdir(latin1);
  await writeFile(Buffer.from([...Buffer.from(`${latin1}/caf`), 0xe9]), 'e9');
  for (const [title, tar, reason] of [
    ['GNU sparse', execFileSync('tar', ['-C', sparse, '--format=gnu', '-cSf', '-', '.']), /entry type is not supported.*re-create the archive without -S/],
    ['pax sparse', execFileSync('tar', ['-C', sparse, '--format=posix', '-cSf', '-', '.']), /sparse files \(tar -S\) are not supported/],
    ['Latin-1 name', execFileSync('tar', ['-C', latin1, '-cf', '-', '.']), /"\.\/caf\uFFFD": it can not be restored exactly: its name is not valid UTF-8/],
    ['U+FFFD link target', await buildTar([{ name: 'l', type: 'symlink', linkname: 'caf\uFFFD' }]), /its name is not valid UTF-8/],
    ['a 256-byte name component', await buildTar([{ name: `d/${'é'.repeat(128)}`, body: 'x' }]), /longer than 255 bytes/],
    ['an extended attribute (tar --xattrs)', await buildTar([{ name: 'noted', body: 'x', pax: { 'SCHILY.xattr.user.note': 'n' } }]), /"noted".*extended attributes.*SCHILY\.xattr\.user\.note/],
    ['a libarchive extended attribute', await buildTar([{ name: 'noted', body: 'x', pax: { 'LIBARCHIVE.xattr.user.note': 'bg==' } }]), /LIBARCHIVE\.xattr\.user\.note/],
    ['an SELinux label (tar --selinux)', await buildTar([{ name: 'labelled', body: 'x', pax: { 'RHT.security.selinux': 'system_u:object_r:etc_t:s0' } }]), /RHT\.security\.selinux/],
  ] as const) {
    const { target } = await arena();
    const warnings: string[] = [];
    const err = await t.throwsAsync(extractTar(Readable.from(tar), target, { onWarning: (m) => warnings.push(m) }), { instanceOf: UnsafeArchiveError }, title);
    t.regex(err?.message ?? '', reason, title);
    t.deepEqual(warnings, [], title);
  }
});

test('names holding a backslash or a drive-letter prefix are ordinary names', async (t) => {
  const { target } = await arena();
  await extractTar(Readable.from(await buildTar([{ name: 'C:/x', body: 'c' }, { name: 'a\\b', body: 'ab' }, { name: '..\\x', body: 'dx' }])), target);
  t.deepEqual((await readdir(target)).sort(), ['..\\x', 'C:', 'a\\b']);
  t.is(await readFile(join(target, 'a\\b'), 'utf8'), 'ab');
});

test('packing fails with a clear error (never an unhandled one) on a name that is not UTF-8; a file that vanished is left out with a warning', async (t) => {
  const dir = join(work, 'pack-bad');
  await mkdir(join(dir, 'sub'), { recursive: true });
  await writeFile(Buffer.from([...Buffer.from(`${dir}/sub/caf`), 0xe9, ...Buffer.from('\\x')]), 'x');
  const err = await t.throwsAsync(pipeline(packDirectory(dir), createWriteStream(join(work, 'pack-bad.tar'))));
  t.is(err?.name, 'UnarchivableNameError');
  t.is(err?.message, `cannot archive ${dir}/sub/caf\\xe9\\\\x: its name is not valid UTF-8 (bad bytes shown as \\xNN; rename it, e.g. with convmv)`);

  const gone = join(work, 'pack-gone');
  await mkdir(gone);
  await writeFile(join(gone, 'a'), Buffer.alloc(4 * 1024 * 1024));
  await writeFile(join(gone, 'b'), 'b');
  const warnings: string[] = [];
  const stream = packDirectory(gone, { onWarning: (m) => warnings.push(m) });
  let removed = false;
  await t.notThrowsAsync(
    pipeline(stream, async function* (source) {
      for await (const chunk of source) {
        if (!removed) {
          removed = true;
          await rm(join(gone, 'b'));
        }
        yield chunk as Buffer;
      }
    }, createWriteStream(join(work, 'pack-gone.tar'))),
  );
  t.deepEqual(warnings, ['skipping b: it was removed while the volume was being read']);
  const listing = execFileSync('tar', ['-tf', join(work, 'pack-gone.tar')]).toString();
  t.is(listing, './\na\n');
});

test("GNU tar's hard link to a symlink is restored as one more name of that symlink (one inode, as tar -x makes it)", async (t) => {
  const src = join(work, 'linked-symlink-src');
  await mkdir(src);
  await writeFile(join(src, 'x'), 'x');
  await symlink('x', join(src, 's'));
  await link(join(src, 's'), join(src, 'h'));
  await symlink('../x', join(src, 'down'));
  for (const format of ['gnu', 'posix']) {
    const tar = execFileSync('tar', ['-C', src, `--format=${format}`, '-cf', '-', 'x', 's', 'h']);
    const listing = execFileSync('tar', ['-tvf', '-'], { input: tar }).toString();
    t.regex(listing, /h link to s|s link to h/, 'GNU tar wrote a link entry');
    const { target } = await arena();
    await extractTar(Readable.from(tar), target);
    const [s, h] = await Promise.all([lstat(join(target, 's')), lstat(join(target, 'h'))]);
    t.true(s.isSymbolicLink() && h.isSymbolicLink(), format);
    t.is(s.ino, h.ino, format);
    t.is(await readlink(join(target, 'h')), 'x');
    t.is(await readFile(join(target, 'h'), 'utf8'), 'x');
  }
});

test('a hard link to a symlink is checked as a symlink at its own place: the same target may leave from there', async (t) => {
  const cases: Array<[HostileEntry[], RegExp]> = [
    [
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/ok', type: 'symlink', linkname: '../x' },
        { name: 'hl', type: 'link', linkname: 'd/ok' },
      ],
      /"hl": symlink target "\.\.\/x" leaves the target directory \(--keep-outside-symlinks creates it/,
    ],
    [
      [
        { name: 'y', type: 'symlink', linkname: '.' },
        { name: 'd/y/', type: 'directory' },
        // from d, y/.. is d; from the root it is the root's parent
        { name: 'd/ok', type: 'symlink', linkname: 'y/..' },
        { name: 'hl', type: 'link', linkname: 'd/ok' },
      ],
      /"hl": symlink target "y\/\.\." leaves the target directory through the links it passes/,
    ],
  ];
  for (const [entries, reason] of cases) {
    const { target, outside } = await arena();
    const err = await t.throwsAsync(extractTar(Readable.from(await buildTar(entries)), target), { instanceOf: UnsafeArchiveError });
    t.regex(err?.message ?? '', reason);
    t.deepEqual(await readdir(outside), ['secret']);
  }
});

test("GNU tar's mtimes before 1970 (base-256 in its default format) are restored exactly", async (t) => {
  const src = join(work, 'old-mtimes-src');
  await mkdir(join(src, 'dir1950'), { recursive: true });
  const times: Array<[string, number]> = [
    ['f1960', Date.UTC(1960, 0, 1) / 1000],
    ['fminus1', -1],
    ['fminus2', -2],
    ['dir1950', Date.UTC(1950, 5, 1) / 1000],
  ];
  for (const [name, seconds] of times) {
    if (!name.startsWith('dir')) await writeFile(join(src, name), name);
    execFileSync('touch', ['-d', `@${seconds}`, join(src, name)]);
  }
  for (const format of ['gnu', 'posix']) {
    const { target } = await arena();
    await extractTar(Readable.from(execFileSync('tar', ['-C', src, `--format=${format}`, '-cf', '-', '.'])), target);
    for (const [name, seconds] of times) t.is((await lstat(join(target, name))).mtimeMs / 1000, seconds, `${format} ${name}`);
  }
});

test.serial('a tree 2,000 directories deep extracts in time linear in its depth (each entry checks its parent once)', async (t) => {
  const { target } = await arena();
  const entries: HostileEntry[] = [];
  let path = '';
  for (let i = 0; i < 2000; i++) {
    path += 'd/';
    entries.push({ name: path, type: 'directory' });
  }
  entries.push({ name: `${path}leaf`, body: 'bottom' });
  const tar = await buildTar(entries);
  const cpu = process.cpuUsage();
  const result = await extractTar(Readable.from([tar]), target);
  const { user } = process.cpuUsage(cpu);
  t.is(result.entries, 2001);
  t.is(await readFile(join(target, `${path}leaf`), 'utf8'), 'bottom');
  // serial: the process's CPU is measured, which the file's other tests would add to. Checking
  // every level of every entry's path took about 5 s of CPU here (2,000 x 2,000 lookups
  // of paths up to 4,000 bytes); once per entry, well under one
  t.true(user < 2_500_000, `extraction took ${Math.round(user / 1000)} ms of CPU`);
});

/**
 * Two names whose 64-bit hashes (name-hash-set.ts) are equal, found by a cycle search over
 * five-character names: the hash is not keyed, so an archive's author can find such pairs too.
 * Their hashing states are equal, so the same text after them keeps them equal (`A/x`, `B/x`).
 */
const COLLIDING: readonly [string, string] = ['\u84F3\u6AC3\u66BD\u510E\u4E1A', '\u6C7B\u5A96\u79B7\u625B\u4E18'];

test('the two colliding names of these tests do hash alike', (t) => {
  const names = new NameHashSet();
  names.add(`${COLLIDING[0]}/secret`);
  t.not(COLLIDING[0], COLLIDING[1]);
  t.true(names.has(`${COLLIDING[1]}/secret`));
});

test('a hard link naming what only hashes like an extracted file is refused: never through a symlink, never to a name not made', async (t) => {
  const [made, never] = COLLIDING;
  // `never` is a symlink out of the target (kept with keepOutsideSymlinks): `never/secret`
  // hashes like `made/secret`, and is the outside secret on the disk
  const { target, outside } = await arena();
  const through = await buildTar([
    { name: `${made}/`, type: 'directory' },
    { name: `${made}/secret`, body: 'inside' },
    { name: never, type: 'symlink', linkname: outside },
    { name: 'hl', type: 'link', linkname: `${never}/secret` },
  ]);
  const err = await t.throwsAsync(extractTar(Readable.from(through), target, { keepOutsideSymlinks: true }), { instanceOf: UnsafeArchiveError });
  t.regex(err!.message, /"hl": hard link to something that is not a file, symlink, fifo or device extracted from this archive/);
  t.is((await stat(join(outside, 'secret'))).nlink, 1, 'the outside file got no second name');
  t.is(await readFile(join(outside, 'secret'), 'utf8'), 'untouched');

  const { target: second } = await arena();
  const missing = await buildTar([
    { name: made, body: 'made' },
    { name: 'hl', type: 'link', linkname: never },
  ]);
  const err2 = await t.throwsAsync(extractTar(Readable.from(missing), second), { instanceOf: UnsafeArchiveError });
  t.regex(err2!.message, /"hl": hard link to something that is not a file/);
});

test('names that hash alike never make a valid archive refused: each is linked to as itself', async (t) => {
  const [a, b] = COLLIDING;
  const { target } = await arena();
  await extractTar(
    Readable.from(
      await buildTar([
        { name: a, body: 'a' },
        { name: b, body: 'b' },
        { name: 'to-a', type: 'link', linkname: a },
        { name: 'to-b', type: 'link', linkname: b },
      ]),
    ),
    target,
  );
  t.is(await readFile(join(target, 'to-a'), 'utf8'), 'a');
  t.is(await readFile(join(target, 'to-b'), 'utf8'), 'b');
  t.is((await stat(join(target, 'to-b'))).ino, (await stat(join(target, b))).ino);
});

test('a refused extraction removes its spill files; a target that is not empty is refused before anything is read', async (t) => {
  const { target, parent } = await arena();
  const spill = join(parent, 'spill');
  // the refusal comes from the symlinks' check at the end, which reads them back from the spill
  // file: everything spilled is on the disk by then
  const entries: HostileEntry[] = [{ name: 'd/', type: 'directory' }];
  for (let i = 0; i < 600; i++) {
    entries.push({ name: `d/${String(i).padStart(4, '0')}`.padEnd(250, 's'), type: 'symlink', linkname: '.' });
    entries.push({ name: `d/${String(i).padStart(4, '0')}`.padEnd(250, 'd') + '/', type: 'directory' });
  }
  entries.push({ name: 'y', type: 'symlink', linkname: '.' }, { name: 'l', type: 'symlink', linkname: 'y/y/../../etc' });
  const err = await t.throwsAsync(extractTree(Readable.from([await buildTar(entries)]), target, spill), { instanceOf: UnsafeArchiveError });
  t.regex(err!.message, /"l".*leaves the target directory through the links/);
  await t.throwsAsync(lstat(spill), { code: 'ENOENT' });

  const { target: full } = await arena();
  await writeFile(join(full, 'already'), 'here');
  const err2 = await t.throwsAsync(extractTar(Readable.from(await buildTar([{ name: 'f', body: 'x' }])), full));
  t.regex(err2!.message, /is not empty: an archive is extracted into an empty staging directory/);
  t.deepEqual(await readdir(full), ['already']);
});
