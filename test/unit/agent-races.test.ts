import { execFileSync } from 'node:child_process';
import { renameSync, symlinkSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import test from 'ava';
import { extract } from 'tar-stream';
import { packDirectory } from '../../src/cli/archive/pack.ts';
import { extractTree } from '../../src/cli/archive/safe-extract.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * The host agent against a container that writes its volume while the agent runs as root: the
 * container swaps a directory of the volume for a symlink to the host at the exact moment the
 * agent is inside it (through the agent's own progress callbacks, so every run is the race lost),
 * and the agent must neither read nor write nor change anything outside the volume.
 */
let work = '';
let counter = 0;

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-races-'));
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

/** `<work>/<n>-outside` (the host: a secret file and a home with a key) and an empty `<work>/<n>-volume`. */
async function hostAndVolume(): Promise<{ outside: string; volume: string }> {
  const n = ++counter;
  const outside = join(work, `${n}-outside`);
  await mkdir(join(outside, 'home'), { recursive: true });
  await writeFile(join(outside, 'secret'), 'host secret\n');
  await writeFile(join(outside, 'home', 'id_rsa'), 'host key\n');
  const volume = join(work, `${n}-volume`);
  await mkdir(volume);
  return { outside, volume };
}

/** What the container does: `dir` of the volume moved aside and a symlink to the host put in its place. */
function swapForSymlink(dir: string, to: string): void {
  renameSync(dir, `${dir}.moved`);
  symlinkSync(to, dir);
}

async function packedContents(dir: string, onFirstBytes: () => void): Promise<Map<string, string>> {
  const contents = new Map<string, string>();
  const parser = extract();
  const reading = (async () => {
    for await (const entry of parser) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      contents.set(entry.header.name, Buffer.concat(chunks).toString());
    }
  })();
  let swapped = false;
  const onFileBytes = (): void => {
    if (!swapped) onFirstBytes();
    swapped = true;
  };
  await pipeline(packDirectory(dir, { onFileBytes }), parser);
  await reading;
  return contents;
}

test('push: a directory swapped for a symlink to the host while it is walked archives the volume\'s entries, never the host\'s', async (t) => {
  const { outside, volume } = await hostAndVolume();
  // listed before the swap; read after it
  await mkdir(join(volume, 'a', 'home'), { recursive: true });
  await writeFile(join(volume, 'a', '0-first'), 'x');
  await writeFile(join(volume, 'a', 'secret'), 'volume file\n');
  const contents = await packedContents(volume, () => swapForSymlink(join(volume, 'a'), outside));
  t.is(contents.get('a/secret'), 'volume file\n');
  t.true(contents.has('a/home/'));
  t.false(contents.has('a/home/id_rsa'), 'the host directory was not listed');
  t.false([...contents.values()].some((v) => v.startsWith('host')), 'no byte of the host is in the snapshot');
});

test('push: a mount point in the volume is archived as an empty directory, its contents left out (GNU tar --one-file-system)', async (t) => {
  const { volume } = await hostAndVolume();
  const mounted = join(volume, 'cache');
  await mkdir(mounted);
  await writeFile(join(volume, 'kept'), 'kept\n');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mounted]);
  try {
    await writeFile(join(mounted, 'host-only'), 'mounted by the host\n');
    const warnings: string[] = [];
    const contents = new Map<string, string>();
    const parser = extract();
    const reading = (async () => {
      for await (const entry of parser) {
        contents.set(entry.header.name, '');
        entry.resume();
      }
    })();
    await pipeline(packDirectory(volume, { onWarning: (m) => warnings.push(m) }), parser);
    await reading;
    t.deepEqual([...contents.keys()].sort(), ['./', 'cache/', 'kept']);
    t.true(warnings.some((w) => w.startsWith('cache is on another filesystem')), warnings.join('\n'));
  } finally {
    execFileSync('umount', [mounted]);
  }
});

test('pull: a staged directory swapped for a symlink to the host while files are extracted into it gets no file outside', async (t) => {
  const { outside, volume } = await hostAndVolume();
  const tar = await buildTar([
    { name: 'd/', type: 'directory' },
    { name: 'd/0-first', body: 'first' },
    { name: 'd/planted', body: '* * * * * root evil\n' },
    { name: 'd/home/', type: 'directory' },
    { name: 'd/home/id_rsa', body: 'replaced key\n' },
  ]);
  let swapped = false;
  const onFileBytes = (): void => {
    if (!swapped) swapForSymlink(join(volume, 'd'), outside);
    swapped = true;
  };
  const tree = await extractTree(Readable.from(tar), volume, `${volume}.spill`, { onFileBytes });
  tree.directories.remove();
  t.deepEqual((await readdir(outside)).sort(), ['home', 'secret'], 'nothing was created on the host');
  t.is(await readFile(join(outside, 'home', 'id_rsa'), 'utf8'), 'host key\n');
  t.is(await readFile(join(volume, 'd.moved', 'planted'), 'utf8'), '* * * * * root evil\n', 'the entry went where the directory went, inside the volume');
});

test('pull: a restored directory swapped for a symlink to the host before its mode is applied leaves the host\'s mode alone', async (t) => {
  const { outside, volume } = await hostAndVolume();
  await chmod(outside, 0o700);
  const tar = await buildTar([
    { name: 'd/', type: 'directory', mode: 0o777 },
    { name: 'd/home/', type: 'directory', mode: 0o777 },
  ]);
  const tree = await extractTree(Readable.from(tar), volume, `${volume}.spill`);
  swapForSymlink(join(volume, 'd'), outside);
  const warnings: string[] = [];
  await tree.directories.applyBelowRoot(volume, { onWarning: (m: string) => warnings.push(m) });
  tree.directories.remove();
  t.is((await stat(outside)).mode & 0o7777, 0o700);
  t.is((await stat(join(outside, 'home'))).mode & 0o7777, 0o755);
  t.true((await lstat(join(volume, 'd'))).isSymbolicLink());
  t.true(warnings.some((w) => w.includes('d')), warnings.join('\n'));
});

test('pull: a spill file swapped for a symlink to the host is never written or read through', async (t) => {
  const { outside, volume } = await hostAndVolume();
  const spill = `${volume}.spill`;
  const tar = await buildTar([
    { name: 'd/', type: 'directory', mode: 0o750 },
    { name: 'd/file', body: 'data' },
    { name: 'd/link', type: 'symlink', linkname: 'file' },
  ]);
  let planted = false;
  const onFileBytes = (): void => {
    // the records wait in memory until the end: the files are made then, where these now are
    if (!planted) for (const file of ['directories-1', 'symlinks']) symlinkSync(join(outside, 'secret'), join(spill, file));
    planted = true;
  };
  await t.throwsAsync(extractTree(Readable.from(tar), volume, spill, { onFileBytes }), { code: 'ELOOP' });
  t.is(await readFile(join(outside, 'secret'), 'utf8'), 'host secret\n', 'the host file got no record');
  await t.throwsAsync(lstat(spill), { code: 'ENOENT' }, 'the spill files went with the failure');
});

test('pull: a spill record naming a path out of the tree (written there by the volume\'s writers) changes nothing outside', async (t) => {
  const { outside, volume } = await hostAndVolume();
  await chmod(outside, 0o700);
  const spill = `${volume}.spill`;
  const tree = await extractTree(Readable.from(await buildTar([{ name: 'd/', type: 'directory', mode: 0o777 }])), volume, spill);
  const name = Buffer.from(`../${outside.slice(outside.lastIndexOf('/') + 1)}`);
  const record = Buffer.alloc(4 + 32 + name.length);
  record.writeUInt32LE(32 + name.length, 0);
  record.writeDoubleLE(0o777, 4);
  record.writeDoubleLE(0, 12);
  record.writeDoubleLE(0, 20);
  record.writeDoubleLE(0, 28);
  name.copy(record, 36);
  await writeFile(join(spill, 'directories-1'), record, { flag: 'a' });
  try {
    await t.throwsAsync(tree.directories.applyBelowRoot(volume), { message: /a spill file of the pull holds "\.\.\/.*", not a directory it extracted/ });
  } finally {
    tree.directories.remove();
  }
  t.is((await stat(outside)).mode & 0o7777, 0o700);
  t.not((await stat(outside)).mtimeMs, 0, 'nor its mtime');
});
