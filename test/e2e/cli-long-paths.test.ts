import { execFile } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { describeDeepTree, diskBytesAt, makeDeepTree } from '../helpers/deep-tree.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Volumes whose paths are longer than PATH_MAX (4,095 bytes, the volume's own path included):
 * what `push` archives (or GNU tar, which handles such paths too), `pull` and `restore --force`
 * bring back exactly, through the real binary against a real server, every attribute compared.
 */
let server: TestServer;
let work = '';

function volreg(args: string[]): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work });
}

const sh = promisify(execFile);

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-long-paths' });
  work = await mkdtemp(join(tmpdir(), 'volreg-long-paths-'));
});

test.after.always(async () => {
  await server?.close();
  // GNU rm walks by descriptor; Node's rm gives up on paths past PATH_MAX
  if (work !== '') await sh('rm', ['-rf', work]);
});

/** `base` and components of at most 200 bytes below it: a path of exactly `bytes` bytes. */
function pathOfLength(base: string, bytes: number): string {
  let path = base;
  while (path.length < bytes) path += `/${'p'.repeat(Math.min(200, bytes - path.length - 1))}`;
  return path;
}

for (const pathBytes of [6_000, 20_000]) {
  test(`push then pull (and pull --sparse) restore a tree with paths of ${pathBytes} bytes exactly`, async (t) => {
    assertRoot(t, 'the tree holds files of other owners');
    const src = join(work, `src-${pathBytes}`);
    const made = makeDeepTree(src, pathBytes);
    t.true(made.longestPath >= pathBytes);
    const push = await volreg(['push', src, `deep/p${pathBytes}:v1`]);
    t.is(push.code, 0, push.stderr);
    const want = describeDeepTree(src);

    const out = join(work, `out-${pathBytes}`);
    const pull = await volreg(['pull', `deep/p${pathBytes}:v1`, out]);
    t.is(pull.code, 0, pull.stderr.slice(0, 2000));
    t.deepEqual(describeDeepTree(out), want);

    const sparse = join(work, `sparse-${pathBytes}`);
    const pullSparse = await volreg(['pull', '--sparse', `deep/p${pathBytes}:v1`, sparse]);
    t.is(pullSparse.code, 0, pullSparse.stderr.slice(0, 2000));
    t.deepEqual(describeDeepTree(sparse), want);
    const bottom = Object.keys(want).find((rel) => rel.endsWith('/sparse.img'))!.slice(0, -'/sparse.img'.length);
    t.true(diskBytesAt(sparse, bottom, 'sparse.img') < 64 * 1024, 'the 1 MiB hole is a hole again');
    t.true(diskBytesAt(out, bottom, 'sparse.img') >= 1024 * 1024, 'without --sparse the zeros are written');
  });
}

test('restore --force replaces a volume holding paths past 4,095 bytes (read-only directories among them) with a snapshot of such paths', async (t) => {
  assertRoot(t, 'the tree holds files of other owners');
  const src = join(work, 'restore-src');
  makeDeepTree(src, 9_000);
  const push = await volreg(['push', src, 'site/deep:release-1']);
  t.is(push.code, 0, push.stderr);

  const volumes = join(work, 'volumes');
  // the volume as it is now: deep contents of its own, to be moved aside and removed
  makeDeepTree(join(volumes, 'deep'), 12_000);
  const lock = join(work, 'volumes.dvm.lock');
  await writeFile(lock, ['downstream:', '  deep: tag:release-1', ''].join('\n'));
  const restore = await volreg(['restore', '--lock', lock, '--volumes-root', volumes, '--prefix', 'site/', '--force']);
  t.is(restore.code, 0, restore.stderr.slice(0, 2000));
  t.regex(restore.stdout, /deep: restored release-1/);
  t.deepEqual(describeDeepTree(join(volumes, 'deep')), describeDeepTree(src), 'the snapshot exactly, nothing of the old contents, no work directory left');
});

test('a GNU tar archive of paths past 4,095 bytes, uploaded with curl, pulls exactly', async (t) => {
  assertRoot(t, 'the tree holds files of other owners');
  const src = join(work, 'gnu-src');
  makeDeepTree(src, 8_000);
  await sh('bash', ['-o', 'pipefail', '-c', `tar -C '${src}' -czf - . | curl -fsS -o /dev/null -T - '${server.url}/api/v1/volumes/deep/gnu/tags/v1'`]);
  const out = join(work, 'gnu-out');
  const pull = await volreg(['pull', 'deep/gnu:v1', out]);
  t.is(pull.code, 0, pull.stderr.slice(0, 2000));
  t.deepEqual(describeDeepTree(out), describeDeepTree(src));
  t.false((await readdir(out)).some((n) => n.startsWith('.volreg-')));
});

test('pull --force into a volume whose own path is 3,950 bytes switches names of 255 bytes over (paths past 4,095 bytes at the top)', async (t) => {
  const src = join(work, 'wide-src');
  const names = ['a', 'b'].map((c) => c.repeat(255));
  for (const n of names) {
    await mkdir(join(src, n), { recursive: true });
    await writeFile(join(src, n, 'f'), `${n[0]}\n`);
  }
  const push = await volreg(['push', src, 'deep/wide:v1']);
  t.is(push.code, 0, push.stderr);
  // the volume's own path: room for short names of its entries, not for a name of 255 bytes
  const target = pathOfLength(join(work, 'long-volume'), 3_950);
  await mkdir(target, { recursive: true });
  // old contents, to be moved aside: made through the target's descriptor, as their path is too long
  const targetFd = openSync(target, 'r');
  try {
    mkdirSync(`/proc/self/fd/${targetFd}/${'o'.repeat(255)}`);
  } finally {
    closeSync(targetFd);
  }
  const pull = await volreg(['pull', '--force', 'deep/wide:v1', target]);
  t.is(pull.code, 0, pull.stderr.slice(0, 2000));
  t.deepEqual(describeDeepTree(target), describeDeepTree(src));
});

test('pull and restore --force of a chain 1,200 directories deep hold a few hundred descriptors, not one per level (ulimit -n 900)', async (t) => {
  const src = join(work, 'chain-src');
  // short names: the paths stay under PATH_MAX, the depth alone is what is measured
  const bottom = join(src, ...Array.from({ length: 1_200 }, () => 'd'));
  await mkdir(bottom, { recursive: true });
  await writeFile(join(bottom, 'leaf'), 'bottom\n');
  await symlink('leaf', join(bottom, 'to-leaf')); // resolved through every level above it
  const push = await volreg(['push', src, 'site/chain:v1']);
  t.is(push.code, 0, push.stderr);
  const limited = { prefix: ['bash', '-c', 'ulimit -n 900 && exec "$0" "$@"'] };

  const out = join(work, 'chain-out');
  const pull = await runVolreg(['pull', 'site/chain:v1', out], { url: server.url, cwd: work, ...limited });
  t.is(pull.code, 0, pull.stderr.slice(0, 2000));
  t.deepEqual(describeDeepTree(out), describeDeepTree(src));

  // the volume's old contents as deep: moved aside and removed
  const volumes = join(work, 'chain-volumes');
  await mkdir(join(volumes, 'chain', ...Array.from({ length: 1_200 }, () => 'o')), { recursive: true });
  const lock = join(work, 'chain.dvm.lock');
  await writeFile(lock, ['downstream:', '  chain: tag:v1', ''].join('\n'));
  const restore = await runVolreg(['restore', '--lock', lock, '--volumes-root', volumes, '--prefix', 'site/', '--force'], { url: server.url, cwd: work, ...limited });
  t.is(restore.code, 0, restore.stderr.slice(0, 2000));
  t.deepEqual(describeDeepTree(join(volumes, 'chain')), describeDeepTree(src));
});
