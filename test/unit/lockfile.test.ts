import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { decideRestore, LockFileError, parseLockFile, repositoryClash, volumeRepository } from '../../src/cli/lockfile.ts';
import { readTagsFile, updateTagsFile, VolumeDirError, withVolumeDir } from '../../src/cli/volumes-root.ts';

let dir = '';
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'volreg-lock-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('YAML lock file: tagged, untagged and invalid downstream volumes; upstream ignored', (t) => {
  const entries = parseLockFile(`
downstream:
  app-data: tag:v1.4
  db_data: "tag:2024-05-01"
  cache:
  weird: latest
  bad/name: tag:x
  badtag: "tag:-nope"
upstream:
  uploads: {}
`);
  t.deepEqual(entries, [
    { volume: 'app-data', tag: 'v1.4', problem: null },
    { volume: 'db_data', tag: '2024-05-01', problem: null },
    { volume: 'cache', tag: null, problem: null },
    { volume: 'weird', tag: null, problem: 'unknown lock option "latest" (expected "tag:<tag>")' },
    { volume: 'bad/name', tag: null, problem: 'not a valid Docker volume name (a letter or digit, then letters, digits, "_", "." or "-")' },
    { volume: 'badtag', tag: null, problem: 'invalid tag "-nope"' },
  ]);
});

test('JSON and the classic line form give the same entries', (t) => {
  const json = parseLockFile(JSON.stringify({ downstream: { a: 'tag:one', b: null, c: { tag: 'three' } } }));
  const lines = parseLockFile('# comment\na  downstream  tag:one\nb downstream\nup upstream tag:zzz\nc downstream tag:three\n');
  t.deepEqual(json, lines);
  t.deepEqual(
    json.map((e) => [e.volume, e.tag]),
    [
      ['a', 'one'],
      ['b', null],
      ['c', 'three'],
    ],
  );
});

test('malformed lock files are refused as a whole', (t) => {
  t.throws(() => parseLockFile('downstream: [a, b]'), { instanceOf: LockFileError });
  t.throws(() => parseLockFile('volumes:\n  a: tag:x\n'), { instanceOf: LockFileError, message: /unknown key/ });
  t.throws(() => parseLockFile('a sideways tag:x'), { instanceOf: LockFileError, message: /line 1/ });
  t.deepEqual(parseLockFile(''), []);
});

test('a YAML lock file with a syntax error is reported as YAML, with the position', (t) => {
  t.throws(() => parseLockFile('downstream:\n\tapp-data: tag:v1\n'), { instanceOf: LockFileError, message: /^not valid YAML: Tabs are not allowed as indentation at line 2, column 1/ });
  t.throws(() => parseLockFile('downstream:\n  app-data: "tag:v1\n'), { instanceOf: LockFileError, message: /^not valid YAML: .*quote at line 3/ });
  // the line form's own errors stay as they were
  t.throws(() => parseLockFile('app-data downstream tag:v1 extra\n'), { instanceOf: LockFileError, message: /^line 1: expected/ });
});

test('restore decisions follow the docker-volume-manager rules', async (t) => {
  const empty = join(dir, 'empty');
  const full = join(dir, 'full');
  await mkdir(empty);
  await mkdir(full);
  await writeFile(join(full, 'data'), 'x');
  const missing = join(dir, 'missing');
  t.deepEqual(await decideRestore({ volume: 'v', tag: null, problem: null }, full, undefined, false), { action: 'skip', reason: 'not locked to a tag' });
  t.is((await decideRestore({ volume: 'v', tag: null, problem: 'bad' }, empty, undefined, true)).action, 'error');
  t.deepEqual(await decideRestore({ volume: 'v', tag: 't1', problem: null }, empty, undefined, false), { action: 'restore', tag: 't1', replace: false });
  t.deepEqual(await decideRestore({ volume: 'v', tag: 't1', problem: null }, missing, undefined, false), { action: 'restore', tag: 't1', replace: false });
  t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, full, undefined, false)).action, 'error');
  t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, full, 't0', false)).action, 'error');
  t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, full, 't1', false)).action, 'up-to-date');
  // up to date with --force too: --force replaces volumes holding something else, not what the lock asks for
  t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, full, 't1', true)).action, 'up-to-date');
  t.deepEqual(await decideRestore({ volume: 'v', tag: 't1', problem: null }, full, undefined, true), { action: 'restore', tag: 't1', replace: true });
  // volreg's own leftovers (mkdtemp's `.volreg-XXXXXX` holding download and/or root) do not make a volume non-empty
  const leftovers = join(dir, 'leftovers');
  await mkdir(join(leftovers, '.volreg-a1B2c3', 'root'), { recursive: true });
  await writeFile(join(leftovers, '.volreg-a1B2c3', 'download'), 'partial');
  await mkdir(join(leftovers, '.volreg-Zz9yX8'));
  t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, leftovers, undefined, false)).action, 'restore');
  // ... anything else named .volreg-* is the user's: the volume is not empty
  const userEntries: Array<[string, (d: string) => Promise<unknown>]> = [
    ['.volreg-userdata', (d) => mkdir(join(d, '.volreg-userdata'))],
    ['.volreg-abc123 (a file)', (d) => writeFile(join(d, '.volreg-abc123'), 'x')],
    ['.volreg-abc123 (other contents)', (d) => mkdir(join(d, '.volreg-abc123', 'photos'), { recursive: true })],
  ];
  for (const [i, [name, make]] of userEntries.entries()) {
    const user = join(dir, `user-${i}`);
    await mkdir(user);
    await make(user);
    t.is((await decideRestore({ volume: 'v', tag: 't1', problem: null }, user, undefined, false)).action, 'error', name);
  }
});

test('tags file lines are updated in place, others kept', async (t) => {
  const root = join(dir, 'root');
  await mkdir(root);
  t.is((await readTagsFile(root)).size, 0);
  await updateTagsFile(root, new Map([['a', 'v1'], ['b', 'v1']]));
  await updateTagsFile(root, new Map([['b', 'v2']]));
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a v1\nb v2\n');
  t.deepEqual([...(await readTagsFile(root))], [['a', 'v1'], ['b', 'v2']]);
});

test('a volume directory is held as opened: a symlink put in its place afterwards leads nowhere else; one there before, or a file, is refused', async (t) => {
  const root = join(dir, 'held');
  const outside = join(dir, 'held-outside');
  await mkdir(join(root, 'v'), { recursive: true });
  await mkdir(outside);
  const seen = await withVolumeDir(root, 'v', { create: false }, async (volume) => {
    await rename(join(root, 'v'), join(root, 'v-moved'));
    await symlink(outside, join(root, 'v'));
    await writeFile(join(volume!, 'f'), 'x');
    return volume;
  });
  t.regex(seen!, /^\/proc\/self\/fd\/\d+$/);
  t.is(await readFile(join(root, 'v-moved', 'f'), 'utf8'), 'x');
  t.deepEqual(await readdir(outside), []);
  // now a link stands there: refused, never opened
  await t.throwsAsync(withVolumeDir(root, 'v', { create: true }, async () => t.fail()), { instanceOf: VolumeDirError, message: /\/v is a symlink to ".*held-outside"/ });
  await writeFile(join(root, 'file'), 'x');
  await t.throwsAsync(withVolumeDir(root, 'file', { create: true }, async () => t.fail()), { instanceOf: VolumeDirError, message: /\/file is not a directory$/ });
  t.is(await withVolumeDir(root, 'missing', { create: false }, async (volume) => volume), null);
  await withVolumeDir(root, 'made', { create: true }, async (volume) => writeFile(join(volume!, 'g'), 'y'));
  t.true((await lstat(join(root, 'made'))).isDirectory());
  t.is(await readFile(join(root, 'made', 'g'), 'utf8'), 'y');
  // an error thrown inside names the volume's path, not the descriptor's
  const err = await t.throwsAsync(withVolumeDir(root, 'made', { create: false }, (volume) => readFile(join(volume!, 'absent'))));
  t.is(err?.message, `ENOENT: no such file or directory, open '${join(root, 'made', 'absent')}'`);
});

test('volume repositories are the prefix plus the lower-cased volume name', (t) => {
  t.is(volumeRepository('backups/host1/', 'App_Data'), 'backups/host1/app_data');
  t.is(volumeRepository('', 'db'), 'db');
});

test('volumes whose repositories clash are named, with what to do', (t) => {
  t.is(repositoryClash('p/', ['app', 'db', 'app']), null, 'the same volume twice is no clash');
  const msg = repositoryClash('p/', ['Data', 'app', 'data', 'DATA', 'X', 'x']);
  t.regex(msg ?? '', /^"Data" and "data" and "DATA" both map to the repository "p\/data"; "X" and "x" both map to the repository "p\/x" .*separate runs with different --prefix/);
});
