import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';
import { buildTar, describeTree, type HostileEntry } from '../helpers/tree.ts';
import { NOBODY, runVolreg, type CliRun, type CliRunOptions } from '../helpers/cli-run.ts';

/**
 * The host agent refusing what it can not restore exactly or safely, through the real binary
 * against a real server: links through links, names that are not UTF-8, sparse entries, targets
 * holding a user's `.volreg-*`, volumes whose repositories clash; and backing up what restore
 * can read back (backslashes), or failing cleanly when it can not (names that are not UTF-8).
 * Pulls as a user who is not root (read-only directories, a switch-over that fails) run the CLI
 * as nobody.
 */
let server: TestServer;
let work = '';

/** The CLI against this file's server, from its work directory (`asNobody`: as nobody:nogroup, NOBODY). */
function volreg(args: string[], opts: Omit<CliRunOptions, 'url' | 'cwd'> = {}): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work, ...opts });
}

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Is there a snapshot `<name>:<tag>`? */
async function exists(name: string, tag: string): Promise<boolean> {
  const res = await fetch(`${server.url}/api/v1/volumes/${name}/tags/${tag}`);
  await res.arrayBuffer();
  if (res.status !== 200 && res.status !== 404) throw new Error(`GET ${name}:${tag}: ${res.status}`);
  return res.status === 200;
}

async function v2(path: string, init: RequestInit): Promise<Response> {
  const res = await fetch(`${server.url}${path}`, init);
  if (res.status >= 300) throw new Error(`${init.method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/**
 * Stores a tar as the snapshot `<repo>:<tag>` through /v2, as any OCI client may (and as
 * snapshots stored before the server refused such archives are): a blob upload is never
 * inspected, so this is how a restore meets archives the /api/v1 push would not take.
 */
async function storeRaw(repo: string, tag: string, tar: Buffer): Promise<void> {
  const config = Buffer.from('{}');
  for (const blob of [tar, config]) {
    await v2(`/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: new Uint8Array(blob) });
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.volreg.volume.v1',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(tar), size: tar.length }],
  });
  await v2(`/v2/${repo}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest });
}

/** A fresh parent dir holding `target` (the pull target) and `outside` (must stay empty). */
async function arena(name: string): Promise<{ parent: string; target: string; outside: string }> {
  const parent = join(work, name);
  await mkdir(join(parent, 'outside'), { recursive: true });
  return { parent, target: join(parent, 'target'), outside: join(parent, 'outside') };
}

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-safety' });
  work = await mkdtemp(join(tmpdir(), 'volreg-cli-safety-'));
  // nobody must be able to reach its targets in here (mkdtemp made it 0700)
  await chmod(work, 0o711);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

// ---- 1. symlinks through symlinks -----------------------------------------------------------

/** 25 directories of 200 bytes: the path of what is below them is past PATH_MAX (4,095 bytes) */
const DEEP_LEVELS = 25;
const DEEP = Array.from({ length: DEEP_LEVELS }, (_, i) => `${i}`.padEnd(200, 'd')).join('/');

const chains: Array<{ title: string; entries: HostileEntry[] }> = [
  {
    title: 'y -> . then l -> y/y/.../../etc',
    entries: [
      { name: 'y', type: 'symlink', linkname: '.' },
      { name: 'l', type: 'symlink', linkname: `${'y/'.repeat(10)}${'../'.repeat(10)}etc` },
    ],
  },
  {
    title: 'the same links in the other order (l first, when y does not exist yet)',
    entries: [
      { name: 'l', type: 'symlink', linkname: 'y/y/../../etc' },
      { name: 'y', type: 'symlink', linkname: '.' },
    ],
  },
  {
    title: 'a link in a subdirectory climbing through a link to its parent',
    entries: [
      { name: 'd/', type: 'directory' },
      { name: 'd/l', type: 'symlink', linkname: 'up/../../etc' },
      { name: 'd/up', type: 'symlink', linkname: '..' },
    ],
  },
  {
    title: 'a link whose target is a link leaving the root only through a third one',
    entries: [
      { name: 'a', type: 'symlink', linkname: 'b/..' },
      { name: 'b', type: 'symlink', linkname: 'c' },
      { name: 'c', type: 'symlink', linkname: '.' },
    ],
  },
  {
    // each link looked up past PATH_MAX (4,095 bytes) as any other, never taken for missing
    title: 'y -> . then l -> y/y/../...: climbing out from a directory 5,000 bytes deep',
    entries: [
      { name: `${DEEP}/y`, type: 'symlink', linkname: '.' },
      { name: `${DEEP}/l`, type: 'symlink', linkname: `y/y/${'../'.repeat(DEEP_LEVELS + 1)}etc` },
    ],
  },
  {
    title: 'a loop (refused: it can not be resolved)',
    entries: [
      { name: 'p', type: 'symlink', linkname: 'q' },
      { name: 'q', type: 'symlink', linkname: 'p' },
    ],
  },
];

for (const [i, c] of chains.entries()) {
  test(`pull refuses a symlink that leaves the target through other links: ${c.title}`, async (t) => {
    const { target, outside } = await arena(`chain-${i}`);
    await storeRaw('safety/chain', `c${i}`, await buildTar(c.entries));
    const pull = await volreg(['pull', `safety/chain:c${i}`, target]);
    t.is(pull.code, 4, pull.stderr);
    t.regex(pull.stderr, /refusing archive entry .*(leaves the target directory|does not resolve)/);
    t.deepEqual(await readdir(target), [], 'nothing moved into the target, no staging left');
    t.deepEqual(await readdir(outside), []);
  });
}

test('links through links that stay inside, and dangling ones inside, are restored', async (t) => {
  const src = join(work, 'inside-links');
  await mkdir(join(src, 'sub/deeper'), { recursive: true });
  await writeFile(join(src, 'sub/deeper/file'), 'x');
  await symlink('.', join(src, 'self'));
  await symlink('self/self/sub/deeper/../deeper/file', join(src, 'via-self'));
  await symlink('..', join(src, 'sub/up'));
  await symlink('up/sub/up/sub/deeper', join(src, 'sub/around'));
  await symlink('not-there/yet', join(src, 'dangling'));
  await symlink('sub/deeper/file/..', join(src, 'through-a-file'));
  const push = await volreg(['push', src, 'safety/inside:v1']);
  t.is(push.code, 0, push.stderr);
  const out = join(work, 'inside-out');
  const pull = await volreg(['pull', 'safety/inside:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(src));
  t.is(await readFile(join(out, 'via-self'), 'utf8'), 'x');
  t.is(await readlink(join(out, 'dangling')), 'not-there/yet');
});

test('a symlink whose target has a component longer than a name can be (300 bytes) is restored: it dangles inside', async (t) => {
  const src = join(work, 'long-component');
  await mkdir(src);
  await symlink('y'.repeat(300), join(src, 'l'));
  await symlink(`sub/${'z'.repeat(300)}/../../x`, join(src, 'via'));
  const push = await volreg(['push', src, 'safety/long-component:v1']);
  t.is(push.code, 0, push.stderr);
  const out = join(work, 'long-component-out');
  const pull = await volreg(['pull', 'safety/long-component:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(src));
  t.is(await readlink(join(out, 'l')), 'y'.repeat(300));
});

test('--keep-outside-symlinks still creates links through links as they are', async (t) => {
  const { target } = await arena('chain-kept');
  await storeRaw('safety/chain', 'kept', await buildTar(chains[0]!.entries));
  const pull = await volreg(['pull', '--keep-outside-symlinks', 'safety/chain:kept', target]);
  t.is(pull.code, 0, pull.stderr);
  t.is(await readlink(join(target, 'y')), '.');
});

// ---- 2. names that are not UTF-8 ----------------------------------------------------------

/** A directory holding `caf\xe9` and `caf\xe8` (Latin-1 "café", "cafè") and a good file. */
async function latin1Dir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'good.txt'), 'good');
  for (const last of [0xe9, 0xe8]) await writeFile(Buffer.concat([Buffer.from(`${dir}/caf`), Buffer.from([last])]), String(last));
}

test('pull refuses an archive whose names are not UTF-8 (two would become one file)', async (t) => {
  const src = join(work, 'latin1-src');
  await latin1Dir(src);
  await storeRaw('safety/latin1', 'gnu', execFileSync('tar', ['-C', src, '--format=gnu', '-cf', '-', '.']));
  await storeRaw('safety/latin1', 'pax', execFileSync('tar', ['-C', src, '--format=posix', '-cf', '-', '.']));
  for (const tag of ['gnu', 'pax']) {
    const { target } = await arena(`latin1-${tag}`);
    const pull = await volreg(['pull', `safety/latin1:${tag}`, target]);
    t.is(pull.code, 4, `${tag}: ${pull.stderr}`);
    t.regex(pull.stderr, /refusing archive entry "\.\/caf\uFFFD": it can not be restored exactly: its name is not valid UTF-8/);
    t.deepEqual(await readdir(target), []);
  }
});

test('pull --force over a volume holding names that are not UTF-8 (at its top and below) replaces them all, nothing kept', async (t) => {
  const src = join(work, 'latin1-replacement');
  await mkdir(src);
  await writeFile(join(src, 'new.txt'), 'new');
  const push = await volreg(['push', src, 'safety/latin1-replacement:v1']);
  t.is(push.code, 0, push.stderr);
  const { target } = await arena('latin1-old-contents');
  await latin1Dir(target);
  await latin1Dir(join(target, 'nested'));
  const pull = await volreg(['pull', '--force', 'safety/latin1-replacement:v1', target]);
  t.is(pull.code, 0, pull.stderr);
  t.is(pull.stderr, '', 'no old contents kept');
  t.deepEqual(await readdir(target), ['new.txt']);
});

test('push of a directory holding a name that is not UTF-8 fails cleanly, naming it; nothing is stored', async (t) => {
  const src = join(work, 'latin1-push');
  await latin1Dir(join(src, 'nested'));
  const push = await volreg(['push', src, 'safety/latin1-push:v1']);
  t.is(push.code, 4, push.stderr);
  t.regex(push.stderr, /^volreg push: cannot archive .*\/nested\/caf\\xe[89]: its name is not valid UTF-8/);
  t.notRegex(push.stderr, /\n\s+at /, 'no stack trace');
  t.is(push.stderr.trim().split('\n').length, 1, push.stderr);
  t.false(await exists('safety/latin1-push', 'v1'), 'no snapshot');
  for (const compression of ['zstd', 'none']) {
    const again = await volreg(['push', '--compression', compression, src, 'safety/latin1-push:v1']);
    t.is(again.code, 4, again.stderr);
    t.regex(again.stderr, /not valid UTF-8/);
  }
});

test('push of a symlink whose target is not UTF-8 fails cleanly', async (t) => {
  const src = join(work, 'latin1-link');
  await mkdir(src);
  await symlink(Buffer.from([0x63, 0x61, 0x66, 0xe9]), join(src, 'link'));
  const push = await volreg(['push', src, 'safety/latin1-link:v1']);
  t.is(push.code, 4, push.stderr);
  t.regex(push.stderr, /cannot archive the symlink .*\/link -> caf\\xe9: its target is not valid UTF-8/);
});

test('backup: a volume that can not be archived fails alone; the others are pushed and recorded (exit 5)', async (t) => {
  const root = join(work, 'latin1-volumes');
  await latin1Dir(join(root, 'bad'));
  for (const v of ['good1', 'good2']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'data'), v);
  }
  const backup = await volreg(['backup', '--tag', 'n1', '--volumes-root', root, '--prefix', 'safety/', 'good1,bad,good2']);
  t.is(backup.code, 5, backup.stderr);
  t.regex(backup.stderr, /^volreg backup: bad: cannot archive .*caf\\xe[89]: its name is not valid UTF-8/m);
  t.notRegex(backup.stderr, /\n\s+at /, 'no stack trace');
  t.regex(backup.stdout, /^good1: pushed safety\/good1:n1/m);
  t.regex(backup.stdout, /^good2: pushed safety\/good2:n1/m);
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'good1 n1\ngood2 n1\n');
  t.false(await exists('safety/bad', 'n1'));
  t.true(await exists('safety/good2', 'n1'));
});

// ---- 3. backslashes are ordinary characters --------------------------------------------------

test('names holding a backslash (or looking like a drive letter) are backed up and restored', async (t) => {
  const src = join(work, 'backslash');
  await mkdir(join(src, 'C:'), { recursive: true });
  await writeFile(join(src, 'back\\slash'), 'b');
  await writeFile(join(src, 'C:\\x'), 'c');
  await writeFile(join(src, 'C:', 'y'), 'y');
  await mkdir(join(src, 'dir\\with'));
  await writeFile(join(src, 'dir\\with', '..\\not-a-parent'), 'n');
  await symlink('back\\slash', join(src, 'link\\to'));
  const push = await volreg(['push', src, 'safety/backslash:v1']);
  t.is(push.code, 0, push.stderr);
  const out = join(work, 'backslash-out');
  const pull = await volreg(['pull', 'safety/backslash:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(src));
  // and a tar made by GNU tar (the curl recipe) too
  const tar = execFileSync('tar', ['-C', src, '-cf', '-', '.']);
  await storeRaw('safety/backslash', 'gnutar', tar);
  const out2 = join(work, 'backslash-out2');
  const pull2 = await volreg(['pull', 'safety/backslash:gnutar', out2]);
  t.is(pull2.code, 0, pull2.stderr);
  t.deepEqual(await describeTree(out2), await describeTree(src));
});

// ---- 4. sparse files ----------------------------------------------------------------------

test('pull refuses GNU sparse entries (tar -S, GNU and pax formats) instead of skipping or mangling them', async (t) => {
  const src = join(work, 'sparse');
  await mkdir(src);
  await writeFile(join(src, 'plain.txt'), 'plain');
  execFileSync('truncate', ['-s', '10M', join(src, 'sp.img')]);
  await writeFile(join(src, 'sp.img'), 'data after a hole\n', { flag: 'a' });
  for (const [tag, args] of [
    ['gnu', ['--format=gnu', '-S']],
    ['pax', ['--format=posix', '-S']],
    ['pax-1.0', ['--format=posix', '-S', '--sparse-version=1.0']],
    ['pax-0.0', ['--format=posix', '-S', '--sparse-version=0.0']],
  ] as const) {
    await storeRaw('safety/sparse', tag, execFileSync('tar', ['-C', src, ...args, '-cf', '-', '.']));
    const { target } = await arena(`sparse-${tag}`);
    const pull = await volreg(['pull', `safety/sparse:${tag}`, target]);
    t.is(pull.code, 4, `${tag}: ${pull.stderr}`);
    t.regex(pull.stderr, /refusing archive entry .*sp\.img.*: it can not be restored exactly: .*sparse.* (re-)?create the archive without -S/, tag);
    t.deepEqual(await readdir(target), [], tag);
  }
});

test('pull refuses an entry type it does not know (a directory of an incremental archive, tar -g) rather than skip it', async (t) => {
  const src = join(work, 'incremental');
  await mkdir(join(src, 'empty-dir'), { recursive: true });
  await writeFile(join(src, 'f'), 'f');
  // GNU 'D' entries: skipping them loses the directories' modes, and empty directories altogether
  await storeRaw('safety/incremental', 'v1', execFileSync('tar', ['-C', src, '--format=gnu', '-g', join(work, 'incremental.snar'), '-cf', '-', '.']));
  const { target } = await arena('incremental');
  const pull = await volreg(['pull', 'safety/incremental:v1', target]);
  t.is(pull.code, 4, pull.stderr);
  t.regex(pull.stderr, /refusing archive entry "\.\/": it can not be restored exactly: its entry type is not supported.*without -S \(nor -g/);
  t.deepEqual(await readdir(target), []);
});

// ---- 5. a user's .volreg-* is not volreg's leftover --------------------------------------------

test('pull and restore treat a user .volreg-* entry as content (no --force: refused, kept); a real leftover staging dir does not count', async (t) => {
  const src = join(work, 'userdata-src');
  await mkdir(src);
  await writeFile(join(src, 'new'), 'new');
  t.is((await volreg(['push', src, 'safety/userdata:v1'])).code, 0);

  const target = join(work, 'userdata-target');
  for (const name of ['.volreg-userdata', '.volreg-AbC123']) {
    await mkdir(join(target, name), { recursive: true });
    await writeFile(join(target, name, 'precious'), 'keep me');
    const pull = await volreg(['pull', 'safety/userdata:v1', target]);
    t.is(pull.code, 6, `${name}: ${pull.stderr}`);
    t.regex(pull.stderr, /not empty/);
    t.is(await readFile(join(target, name, 'precious'), 'utf8'), 'keep me');
    await rm(join(target, name), { recursive: true });
  }

  // restore: the same rule for a volume
  const root = join(work, 'userdata-volumes');
  await mkdir(join(root, 'userdata', '.volreg-userdata'), { recursive: true });
  await writeFile(join(root, 'userdata', '.volreg-userdata', 'precious'), 'keep me');
  const lock = join(work, 'userdata.lock');
  await writeFile(lock, 'userdata downstream tag:v1\n');
  const restore = await volreg(['restore', '--lock', lock, '--volumes-root', root, '--prefix', 'safety/', '--json']);
  t.is(restore.code, 5, restore.stderr);
  t.regex(restore.stderr, /userdata: volume is not empty/);
  t.deepEqual(await readdir(join(root, 'userdata')), ['.volreg-userdata']);

  // what an interrupted pull leaves (.volreg-XXXXXX holding download and/or root) does not count
  const leftover = join(work, 'leftover-target');
  await mkdir(join(leftover, '.volreg-x1Y2z3', 'root'), { recursive: true });
  await writeFile(join(leftover, '.volreg-x1Y2z3', 'download'), 'partial');
  const pull = await volreg(['pull', 'safety/userdata:v1', leftover]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await readdir(leftover), ['new']);
});

test('push leaves out the partial download and extraction an interrupted pull left, and keeps old contents one moved aside, with warnings', async (t) => {
  const src = join(work, 'leftover-src');
  // what a pull stopped while downloading or extracting leaves
  await mkdir(join(src, '.volreg-Dl0aD1', 'root', 'half'), { recursive: true });
  await writeFile(join(src, '.volreg-Dl0aD1', 'download'), randomBytes(256 * 1024));
  await writeFile(join(src, '.volreg-Dl0aD1', 'root', 'half', 'f'), 'partial');
  // ...and one stopped during its switch-over: old contents moved aside
  await mkdir(join(src, '.volreg-Sw1tch', 'old'), { recursive: true });
  await writeFile(join(src, '.volreg-Sw1tch', 'old', 'moved-aside'), 'the volume\'s data');
  // names alike that are not such leftovers are content as any other
  await mkdir(join(src, '.volreg-data'), { recursive: true });
  await writeFile(join(src, '.volreg-data', 'download'), 'mine');
  await mkdir(join(src, '.volreg-Us3rDr'), { recursive: true });
  await writeFile(join(src, '.volreg-Us3rDr', 'notes'), 'mine too');
  await writeFile(join(src, 'data'), 'data');

  const push = await volreg(['push', src, 'safety/leftover-push:v1']);
  t.is(push.code, 0, push.stderr);
  t.regex(push.stderr, /warning: skipping \.volreg-Dl0aD1: the partial download and extraction of an interrupted pull/);
  t.regex(push.stderr, /warning: \.volreg-Sw1tch holds contents an interrupted pull moved aside \(in \.volreg-Sw1tch\/old\): archived/);
  const out = join(work, 'leftover-push-out');
  const pull = await volreg(['pull', 'safety/leftover-push:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual((await readdir(out)).sort(), ['.volreg-Sw1tch', '.volreg-Us3rDr', '.volreg-data', 'data']);
  t.is(await readFile(join(out, '.volreg-Sw1tch', 'old', 'moved-aside'), 'utf8'), "the volume's data");
  t.is(await readFile(join(out, '.volreg-data', 'download'), 'utf8'), 'mine');
});

// ---- 6. volumes whose repositories clash --------------------------------------------------------

test('backup and restore refuse volumes that map to the same repository (Data and data), before anything', async (t) => {
  const root = join(work, 'case-volumes');
  for (const v of ['Data', 'data', 'other']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'f'), v);
  }
  const backup = await volreg(['backup', '--tag', 't1', '--volumes-root', root, '--prefix', 'safety/case-', 'other,Data,data']);
  t.is(backup.code, 2, backup.stderr);
  t.regex(backup.stderr, /"Data" and "data" both map to the repository "safety\/case-data".*separate runs with different --prefix/);
  t.false(await exists('safety/case-other', 't1'), 'nothing pushed, not even the volume before them');
  t.false(await exists('safety/case-data', 't1'));
  await t.throwsAsync(lstat(join(root, 'tags')));

  t.is((await volreg(['backup', '--tag', 't1', '--volumes-root', root, '--prefix', 'safety/case-', 'data'])).code, 0);
  const host = join(work, 'case-host');
  const lock = join(work, 'case.lock');
  await writeFile(lock, ['downstream:', '  other: tag:t1', '  Data: tag:t1', '  data: tag:t1', ''].join('\n'));
  const restore = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'safety/case-']);
  t.is(restore.code, 2, restore.stderr);
  t.regex(restore.stderr, /"Data" and "data" both map to the repository "safety\/case-data"/);
  await t.throwsAsync(lstat(host), undefined, 'nothing restored');
});

test('a volume named tags (the name of the tags file beside the volumes) is refused by backup and restore, before anything', async (t) => {
  const root = join(work, 'tags-volume');
  for (const v of ['tags', 'other']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'f'), v);
  }
  const backup = await volreg(['backup', '--tag', 't1', '--volumes-root', root, '--prefix', 'safety/tv-', 'other,tags']);
  t.is(backup.code, 2, backup.stderr);
  t.regex(backup.stderr, /a volume named "tags" can not be handled: the tags file of the volumes root has that name/);
  t.false(await exists('safety/tv-other', 't1'), 'nothing pushed, not even the other volume');
  t.true((await lstat(join(root, 'tags'))).isDirectory(), 'the volume is left as it was');
  // nor any other volume of that root: its tags file can not be written
  const other = await volreg(['backup', '--tag', 't1', '--volumes-root', root, '--prefix', 'safety/tv-', 'other']);
  t.is(other.code, 2, other.stderr);
  t.regex(other.stderr, /tags is a directory: the tags file of the volumes root goes there/);
  t.false(await exists('safety/tv-other', 't1'));

  await rm(join(root, 'tags'), { recursive: true });
  t.is((await volreg(['backup', '--tag', 't1', '--volumes-root', root, '--prefix', 'safety/tv-', 'other'])).code, 0);
  const host = join(work, 'tags-volume-host');
  const lock = join(work, 'tags-volume.lock');
  await writeFile(lock, ['downstream:', '  other: tag:t1', '  tags: tag:t1', ''].join('\n'));
  const restore = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'safety/tv-']);
  t.is(restore.code, 2, restore.stderr);
  t.regex(restore.stderr, /tags: a volume named "tags" can not be handled/);
  await t.throwsAsync(lstat(host), undefined, 'nothing restored');
});

// ---- lower priority: a missing lock file; an interrupted pull -----------------------------------

test('restore with a lock file that does not exist is a usage error (exit 2) with a clear message', async (t) => {
  const restore = await volreg(['restore', '--lock', join(work, 'no-such.lock'), '--volumes-root', join(work, 'nowhere')]);
  t.is(restore.code, 2);
  t.regex(restore.stderr, /^volreg restore: lock file .*no-such\.lock does not exist\n$/);
});

test('an interrupted pull (SIGTERM, SIGINT) removes its staging directory and leaves the target as it was', async (t) => {
  const src = join(work, 'big');
  await mkdir(src);
  // incompressible and large enough that the pull is still downloading or extracting when signalled
  const big = Buffer.alloc(32 * 1024 * 1024);
  let x = 0x2545f491;
  for (let i = 0; i < big.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    big.writeInt32LE(x | 0, i);
  }
  for (const n of ['a', 'b']) await writeFile(join(src, n), big);
  t.is((await volreg(['push', '--compression', 'none', src, 'safety/big:v1'])).code, 0);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const target = join(work, `interrupted-${signal}`);
    await mkdir(target);
    await writeFile(join(target, 'old'), 'old');
    const child = spawn(process.execPath, [VOLREG_BIN, 'pull', '--force', 'safety/big:v1', target], { env: { ...process.env, VOLREG_URL: server.url }, stdio: 'ignore' });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, sig) => resolve({ code, signal: sig })));
    // wait for the staging directory to appear (the pull has begun)
    for (let i = 0; i < 2000 && !(await readdir(target)).some((n) => n.startsWith('.volreg-')); i++) await new Promise((r) => setTimeout(r, 5));
    t.true((await readdir(target)).some((n) => n.startsWith('.volreg-')), 'the pull started');
    child.kill(signal);
    const end = await exited;
    t.true(end.signal === signal || end.code === 128 + (signal === 'SIGINT' ? 2 : 15), JSON.stringify(end));
    const after = (await readdir(target)).sort();
    t.deepEqual(after.filter((n) => n.startsWith('.volreg-')), [], `${signal}: staging removed`);
    // (a signal during the switch-over waits for it: then the new contents are complete)
    t.true(JSON.stringify(after) === '["old"]' || JSON.stringify(after) === '["a","b"]', `${signal}: ${JSON.stringify(after)}`);
  }
});

test('a restore stopped during its second volume has recorded the first in the tags file', async (t) => {
  const small = join(work, 'stopped-small');
  const big = join(work, 'stopped-big');
  await mkdir(small);
  await mkdir(big);
  await writeFile(join(small, 'f'), 'small volume');
  // incompressible and large enough that its pull is still going when signalled
  await writeFile(join(big, 'f'), randomBytes(48 * 1024 * 1024));
  t.is((await volreg(['push', small, 'safety/stopped-a:v2'])).code, 0);
  t.is((await volreg(['push', '--compression', 'none', big, 'safety/stopped-b:v2'])).code, 0);
  const root = join(work, 'stopped-volumes');
  await mkdir(join(root, 'stopped-b'), { recursive: true });
  const lock = join(work, 'stopped.lock');
  await writeFile(lock, 'stopped-a downstream tag:v2\nstopped-b downstream tag:v2\n');
  const child = spawn(process.execPath, [VOLREG_BIN, 'restore', '--lock', lock, '--volumes-root', root, '--prefix', 'safety/', '--quiet'], {
    env: { ...process.env, VOLREG_URL: server.url },
    stdio: 'ignore',
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, sig) => resolve({ code, signal: sig })));
  // the second volume's pull has begun once its staging directory is there
  const staging = async (): Promise<boolean> => (await readdir(join(root, 'stopped-b'))).some((n) => n.startsWith('.volreg-'));
  for (let i = 0; i < 2000 && !(await staging()); i++) await new Promise((r) => setTimeout(r, 5));
  t.true(await staging(), 'the second pull started');
  child.kill('SIGTERM');
  const end = await exited;
  t.true(end.signal === 'SIGTERM' || end.code === 143, JSON.stringify(end));
  t.is(await readFile(join(root, 'stopped-a', 'f'), 'utf8'), 'small volume');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'stopped-a v2\n', 'the restored volume is recorded, the stopped one is not');
  t.deepEqual(await readdir(join(root, 'stopped-b')), [], 'the stopped volume is as it was');
});

test('a snapshot of two tars one after the other (stored through /v2) is exit 4 on pull, as GNU tar reads only the first; nothing is written', async (t) => {
  const both = Buffer.concat([await buildTar([{ name: 'first.txt', body: 'first' }]), await buildTar([{ name: 'second.txt', body: 'second' }])]);
  t.is(execFileSync('tar', ['-tf', '-'], { input: both, encoding: 'utf8' }), 'first.txt\n');
  await storeRaw('safety/concatenated', 'v1', both);
  const { target } = await arena('concatenated');
  const pull = await volreg(['pull', 'safety/concatenated:v1', target]);
  t.is(pull.code, 4, pull.stderr);
  t.regex(pull.stderr, /^volreg pull: the snapshot is not a readable tar archive: data after the end-of-archive marker/);
  t.deepEqual(await readdir(target), []);
});

test('pull refuses pax mtime, uid or gid records that are not valid (stored through /v2), writing nothing', async (t) => {
  for (const [tag, pax, reason] of [
    ['time', { mtime: 'yesterday' }, /pax record mtime=yesterday is not valid/],
    ['owner', { uid: '12abc' }, /pax record uid=12abc is not valid/],
  ] as const) {
    await storeRaw('safety/bad-pax', tag, await buildTar([{ name: 'fine', body: 'f' }, { name: 'bad', body: 'b', pax }]));
    const { target } = await arena(`bad-pax-${tag}`);
    const pull = await volreg(['pull', `safety/bad-pax:${tag}`, target]);
    t.is(pull.code, 4, `${tag}: ${pull.stderr}`);
    t.regex(pull.stderr, /refusing archive entry "bad": it can not be restored exactly: /, tag);
    t.regex(pull.stderr, reason, tag);
    t.deepEqual(await readdir(target), [], tag);
  }
});

test('a snapshot that is not a readable tar (stored through /v2, never inspected) is exit 4 on pull, and nothing is written', async (t) => {
  const good = await buildTar([{ name: 'a.txt', body: 'a'.repeat(5000) }, { name: 'b.txt', body: 'b' }]);
  const cases: Array<[string, Buffer]> = [
    ['garbage', Buffer.from('this is not a tar archive, only text that goes on for a while\n'.repeat(30))],
    ['truncated', good.subarray(0, 1200)],
    ['bad-checksum', Buffer.concat([Buffer.from(good.subarray(0, 148)), Buffer.from('9999999\0'), good.subarray(156)])],
    ['gzip-garbage', execFileSync('gzip', ['-c'], { input: Buffer.from('gzip of plain text, not a tar') })],
    ['gzip-cut', execFileSync('gzip', ['-c'], { input: good }).subarray(0, 40)],
    ['empty', Buffer.alloc(0)],
  ];
  for (const [tag, bytes] of cases) {
    await storeRaw('safety/corrupt', tag, bytes);
    const { target } = await arena(`corrupt-${tag}`);
    const pull = await volreg(['pull', `safety/corrupt:${tag}`, target]);
    t.is(pull.code, 4, `${tag}: ${pull.stderr}`);
    t.regex(pull.stderr, /^volreg pull: the snapshot is not a readable tar archive: /, tag);
    t.deepEqual(await readdir(target).catch(() => []), [], `${tag}: nothing written`);
  }
});

// ---- 7. read-only directories and an all-or-nothing switch-over, as a user who is not root --------

const OLD = new Date('2011-11-11T11:11:11Z');

/** A directory for a pull as nobody: `files` written into it, then all of it given to nobody. */
async function nobodysTarget(name: string, files: Record<string, string> = {}): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true });
  for (const [rel, body] of Object.entries(files)) {
    await mkdir(join(dir, rel, '..'), { recursive: true });
    await writeFile(join(dir, rel), body);
  }
  execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, dir]);
  return dir;
}

/** Sets a tree's mtimes (deepest first) to OLD, so "as it was" and "as archived" compare them too. */
async function ageTree(dir: string): Promise<void> {
  for (const rel of (await readdir(dir, { recursive: true })).map(String).sort().reverse()) await utimes(join(dir, rel), OLD, OLD);
}

const readOnlyTrees: Array<{ title: string; make: (src: string) => Promise<void> }> = [
  {
    title: 'a top-level directory 555 holding files',
    make: async (src) => {
      await mkdir(join(src, 'ro/sub'), { recursive: true });
      await writeFile(join(src, 'ro/file'), 'f');
      await writeFile(join(src, 'ro/sub/g'), 'g');
      await ageTree(src);
      await chmod(join(src, 'ro/sub'), 0o555);
      await chmod(join(src, 'ro'), 0o555);
    },
  },
  {
    title: "the root's own entry (./) 555",
    make: async (src) => {
      await mkdir(join(src, 'd'));
      await writeFile(join(src, 'd/file'), 'f');
      await ageTree(src);
      await chmod(src, 0o555);
    },
  },
  {
    title: 'a nested directory 000 holding a file',
    make: async (src) => {
      await mkdir(join(src, 'a/locked'), { recursive: true });
      await writeFile(join(src, 'a/locked/secret'), 's');
      await ageTree(src);
      await chmod(join(src, 'a/locked'), 0o000);
    },
  },
];

for (const [i, c] of readOnlyTrees.entries()) {
  test(`as non-root, pull --force restores ${c.title}, over old contents holding read-only directories`, async (t) => {
    assertRoot(t);
    const src = join(work, `read-only-${i}`);
    await mkdir(src);
    await c.make(src);
    execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, src]); // nobody's own files: no word of owners
    await utimes(src, OLD, OLD);
    const push = await volreg(['push', src, `safety/read-only:v${i}`]);
    t.is(push.code, 0, push.stderr);

    const target = await nobodysTarget(`read-only-${i}-target`, { 'old-ro/file': 'old', 'old/deep/file': 'old', plain: 'old' });
    await chmod(join(target, 'old-ro'), 0o555);
    await chmod(join(target, 'old/deep'), 0o000);
    const pull = await volreg(['pull', '--force', `safety/read-only:v${i}`, target], { asNobody: true });
    t.is(pull.code, 0, pull.stderr);
    t.is(pull.stderr, '', 'no warning: the old contents were removed');
    t.deepEqual(await describeTree(target), await describeTree(src), 'the archived tree, no old contents, no work directory');
    const [got, want] = await Promise.all([lstat(target), lstat(src)]);
    t.is(got.mode & 0o7777, want.mode & 0o7777, 'root mode');
    t.is(got.mtimeMs, OLD.getTime(), 'root mtime');
  });
}

test('as non-root, pull of a snapshot root made: modes, fifos and read-only directories restored, the owners not restored said once; a device refused with why, the target left as it was; pulled again, the same', async (t) => {
  assertRoot(t);
  const src = join(work, 'root-made-src');
  await mkdir(join(src, 'ro'), { recursive: true });
  await mkdir(join(src, 'sticky'));
  await writeFile(join(src, 'ro/inner'), 'r');
  await writeFile(join(src, 'sticky/t'), 't');
  await writeFile(join(src, 'suid'), 's');
  await writeFile(join(src, 'sgid'), 'g');
  await writeFile(join(src, 'zero'), 'z');
  await writeFile(join(src, 'theirs'), 'x');
  execFileSync('mkfifo', [join(src, 'fifo')]);
  await chmod(join(src, 'suid'), 0o4755);
  await chmod(join(src, 'sgid'), 0o2755);
  await chmod(join(src, 'zero'), 0o000);
  await chmod(join(src, 'sticky'), 0o1777);
  execFileSync('chown', ['123:456', join(src, 'theirs')]);
  await chmod(join(src, 'ro'), 0o555);
  await ageTree(src);
  t.is((await volreg(['push', src, 'safety/root-made:v1'])).code, 0);
  await storeRaw('safety/root-made', 'dev', await buildTar([{ name: 'file', body: 'f' }, { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }]));

  const target = await nobodysTarget('root-made-target');
  const pull = await volreg(['pull', 'safety/root-made:v1', target], { asNobody: true });
  t.is(pull.code, 0, pull.stderr);
  t.regex(pull.stderr, new RegExp(`^volreg pull: warning: owners are not restored: this runs as uid ${NOBODY}, not root, and 10 entries of other owners \\("[^"]+": \\d+:\\d+, \\.\\.\\.\\) are now ${NOBODY}:${NOBODY}, 2 with a setuid or setgid bit kept; restore as root to keep owners\n$`));
  const restored = await describeTree(target);
  t.deepEqual(restored, await describeTree(src), 'every entry, mode (setuid, setgid, sticky, 000, 555) and mtime');
  for (const name of ['suid', 'theirs', 'ro/inner', 'fifo']) t.deepEqual([(await lstat(join(target, name))).uid, (await lstat(join(target, name))).gid], [NOBODY, NOBODY], name);

  const device = await volreg(['pull', '--force', '--allow-devices', 'safety/root-made:dev', target], { asNobody: true });
  t.is(device.code, 4, device.stderr);
  t.is(device.stderr, `volreg pull: refusing archive entry "null": a device file can only be created by root (this runs as uid ${NOBODY})\n`);
  t.deepEqual(await describeTree(target), restored, 'the target as it was, no work directory left');

  const again = await volreg(['pull', '--force', 'safety/root-made:v1', target], { asNobody: true });
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await describeTree(target), restored);
});

test('as non-root, a target it may not write into is refused before the download, saying so (pull: exit 1, restore: exit 5)', async (t) => {
  assertRoot(t);
  const src = join(work, 'unwritable-src');
  await mkdir(src);
  await writeFile(join(src, 'f'), 'f');
  t.is((await volreg(['push', src, 'safety/unwritable:v1'])).code, 0);
  const roots = join(work, 'unwritable-volumes');
  await mkdir(join(roots, 'unwritable'), { recursive: true }); // root's, 755
  execFileSync('chown', [`${NOBODY}:${NOBODY}`, roots]);
  const target = join(roots, 'unwritable');
  for (const dir of [target, join(target, 'new')]) {
    const pull = await volreg(['pull', 'safety/unwritable:v1', dir], { asNobody: true });
    t.is(pull.code, 1, pull.stderr);
    t.is(pull.stderr, `volreg pull: cannot write into ${dir} (EACCES): restore as a user who may write there (its owner, or root)\n`);
  }
  const lock = join(roots, 'lock.yaml');
  await writeFile(lock, 'downstream:\n  unwritable: tag:v1\n');
  const restore = await volreg(['restore', '--lock', lock, '--volumes-root', roots, '--prefix', 'safety/'], { asNobody: true });
  t.is(restore.code, 5, restore.stderr);
  t.regex(restore.stderr, new RegExp(`^volreg restore: unwritable: cannot write into ${target} \\(EACCES\\): restore as a user who may write there`, 'm'));
  t.deepEqual(await readdir(target), []);
});

test('as root of a user namespace that maps only root (a rootless container), pull restores a tree of other owners: those it may not map stay root\'s, said once; nothing half-done', async (t) => {
  assertRoot(t, 'it sets owners, and maps root alone into a user namespace');
  const src = join(work, 'userns-src');
  await mkdir(join(src, 'dir'), { recursive: true });
  await writeFile(join(src, 'dir/theirs'), 'x');
  await writeFile(join(src, 'mine'), 'm');
  execFileSync('chown', ['-R', '123:456', join(src, 'dir')]);
  await chmod(join(src, 'dir'), 0o750);
  await ageTree(src);
  t.is((await volreg(['push', src, 'safety/userns:v1'])).code, 0);
  const target = join(work, 'userns-target');
  await mkdir(target);
  const pull = await volreg(['pull', 'safety/userns:v1', target], { prefix: ['unshare', '-r'] });
  t.is(pull.code, 0, pull.stderr);
  t.is(
    pull.stderr,
    'volreg pull: warning: owners of 2 entries are not restored: this user namespace does not map their ids ("dir/": 123:456, ...; see /proc/self/uid_map), so they are 0:0; restore outside the container, or map those ids, to keep them\n',
  );
  t.deepEqual(await describeTree(target), await describeTree(src), 'every entry, with its mode and mtime');
  t.deepEqual([(await lstat(join(target, 'dir/theirs'))).uid, (await lstat(join(target, 'dir'))).uid], [0, 0]);
});

test('as non-root, a switch-over that fails halfway puts the old contents back as they were and reports its own error', async (t) => {
  assertRoot(t);
  const src = join(work, 'switch-src');
  await mkdir(src);
  await writeFile(join(src, 'a'), 'new');
  await writeFile(join(src, 'new'), 'new');
  execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, src]);
  t.is((await volreg(['push', src, 'safety/switch:v1'])).code, 0);

  // moved aside in name order: a, b (read-only: moved with u+w), then m, root's, which nobody can not move
  const target = await nobodysTarget('switch-target', { a: 'old a', 'b/file': 'old b', z: 'old z' });
  await mkdir(join(target, 'm'));
  await writeFile(join(target, 'm/file'), 'root owns this');
  await ageTree(target);
  await chmod(join(target, 'b'), 0o555);
  const before = await describeTree(target);
  const pull = await volreg(['pull', '--force', 'safety/switch:v1', target], { asNobody: true });
  t.is(pull.code, 1, pull.stderr);
  t.regex(pull.stderr, /^volreg pull: EACCES: permission denied, rename '[^']*\/switch-target\/m' -> '[^']*\/\.volreg-[A-Za-z0-9]{6}\/old\/m'\n$/);
  t.deepEqual(await describeTree(target), before, 'every entry back, with its mode and mtime; no work directory left');
  t.is((await lstat(join(target, 'm'))).uid, 0);
});

test('as non-root, old contents that can not be removed after a complete switch-over are kept in the work directory with a warning; the pull succeeds', async (t) => {
  assertRoot(t);
  const src = join(work, 'unremovable-src');
  await mkdir(src);
  await writeFile(join(src, 'new'), 'new');
  execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, src]);
  t.is((await volreg(['push', src, 'safety/unremovable:v1'])).code, 0);

  // nobody can move u aside (its own), but not empty u/r (root's)
  const target = await nobodysTarget('unremovable-target', { 'u/mine': 'mine' });
  await mkdir(join(target, 'u/r'));
  await writeFile(join(target, 'u/r/file'), 'root owns this');
  const pull = await volreg(['pull', '--force', 'safety/unremovable:v1', target], { asNobody: true });
  t.is(pull.code, 0, pull.stderr);
  t.regex(pull.stderr, /^volreg pull: warning: kept [^\n]*\/unremovable-target\/\.volreg-[A-Za-z0-9]{6}\/old: old contents of the target that could not be removed \(EACCES: [^\n]*\); remove it by hand\n$/);
  const names = await readdir(target);
  const leftover = names.find((n) => n.startsWith('.volreg-'))!;
  t.deepEqual(names.filter((n) => n !== leftover), ['new']);
  t.deepEqual(await readdir(join(target, leftover)), ['old']);
  t.is(await readFile(join(target, leftover, 'old/u/r/file'), 'utf8'), 'root owns this');
  // such a leftover is volreg's own: it does not make the target "not empty", and a pull removes it
  await rm(join(target, 'new'));
  const again = await volreg(['pull', 'safety/unremovable:v1', target]);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await readdir(target), ['new']);
});

test('an archive without a root entry (./) leaves the target directory its own mode and owner', async (t) => {
  assertRoot(t);
  const src = join(work, 'no-root-src');
  await mkdir(src);
  await writeFile(join(src, 'file'), 'f');
  await storeRaw('safety/no-root', 'v1', execFileSync('tar', ['-C', src, '-cf', '-', 'file']));
  const target = await nobodysTarget('no-root-target');
  await chmod(target, 0o700);
  const pull = await volreg(['pull', 'safety/no-root:v1', target]);
  t.is(pull.code, 0, pull.stderr);
  const st = await lstat(target);
  t.is(st.mode & 0o7777, 0o700);
  t.deepEqual([st.uid, st.gid], [NOBODY, NOBODY]);
  t.is(await readFile(join(target, 'file'), 'utf8'), 'f');
});

test('devices and fifos with a setuid, setgid or sticky bit come back with their whole mode (mknod -m and mkfifo -m take only permission bits)', async (t) => {
  assertRoot(t);
  const src = join(work, 'special-modes-src');
  await mkdir(src);
  const made: Array<[string, number]> = [['null-suid', 0o4644], ['zero-sticky', 0o1666], ['fifo-sgid', 0o2640]];
  execFileSync('mknod', [join(src, 'null-suid'), 'c', '1', '3']);
  execFileSync('mknod', [join(src, 'zero-sticky'), 'c', '1', '5']);
  execFileSync('mkfifo', [join(src, 'fifo-sgid')]);
  for (const [name, mode] of made) await chmod(join(src, name), mode);
  t.is((await volreg(['push', src, 'safety/special-modes:v1'])).code, 0);

  const { target } = await arena('special-modes');
  const pull = await volreg(['pull', '--allow-devices', 'safety/special-modes:v1', target]);
  t.is(pull.code, 0, pull.stderr);
  for (const [name, mode] of made) t.is((await lstat(join(target, name))).mode & 0o7777, mode, name);
  t.deepEqual(await describeTree(target), await describeTree(src));
});
