import { execFileSync } from 'node:child_process';
import { chown, link, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { NOBODY, runVolreg, type CliRun, type CliRunOptions } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The host agent's own inputs, hostile and generated, through the real binary against a real
 * server: --url / VOLREG_URL and credentials, lock files that are not files or not well-formed,
 * --volumes-root, push sources and pull targets that are not directories, tags files beside the
 * volumes that are not regular files, volume names, references of any characters, and
 * generated lock files (every form) whose outcome, volume by volume, is the one the README's
 * restore rules give.
 */
let server: TestServer;
let work = '';

function volreg(args: string[], opts: Omit<CliRunOptions, 'url' | 'cwd'> & { url?: string } = {}): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work, ...opts });
}

/** The refusal is said in one line of the command's own, never a stack trace. */
function oneLine(t: ExecutionContext, r: CliRun, command: string): void {
  const lines = r.stderr.trimEnd().split('\n');
  t.true(lines.length === 1 && lines[0]!.startsWith(`volreg ${command}: `), r.stderr);
  t.false(/\n\s+at /.test(r.stderr), r.stderr);
}

/** Volumes pushed once as `gen/<volume>:t1`, each holding a file `id` naming it. */
const POOL = ['a', 'b-1', 'Cx', 'd_2', 'e.3'];

test.before(async () => {
  server = await startTestServer({ label: 'cli-inputs' });
  work = await mkdtemp(join(tmpdir(), 'volreg-cli-inputs-'));
  const source = join(work, 'source');
  for (const v of POOL) {
    await mkdir(join(source, v), { recursive: true });
    await writeFile(join(source, v, 'id'), v);
  }
  const r = await volreg(['backup', '-q', '--tag', 't1', '--prefix', 'gen/', '--volumes-root', source, POOL.join(',')]);
  if (r.code !== 0) throw new Error(`backup: ${r.code} ${r.stderr}`);
});

test.after.always(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Does the registry hold any snapshot of this volume? */
async function holdsVolume(name: string): Promise<boolean> {
  const res = await fetch(`${server.url}/api/v1/volumes/${name}/tags`);
  return ((await res.json()) as { total: number }).total > 0;
}

async function volumeCount(): Promise<number> {
  const res = await fetch(`${server.url}/api/v1/volumes`);
  return ((await res.json()) as { total: number }).total;
}

test('a --url that is not an http(s) URL is bad usage (exit 2), and no message shows the password in it', async (t) => {
  for (const url of ['ftp://u:s3cret@127.0.0.1:1/', 'u:s3cret@host', 'http://u:s3cret@[::1', 'http://']) {
    const r = await volreg(['ls', '-q'], { url });
    t.is(r.code, 2, `${url}: ${r.stderr}`);
    oneLine(t, r, 'ls');
    t.regex(r.stderr, /--url \(VOLREG_URL\)/);
    t.false(r.stderr.includes('s3cret'), r.stderr);
  }
  // a registry that accepts no connection is named with its password masked
  const down = await volreg(['ls', '-q'], { url: 'http://op:s3cret@127.0.0.1:1/' });
  t.is(down.code, 1, down.stderr);
  t.regex(down.stderr, /http:\/\/op:\*\*\*@127\.0\.0\.1:1\//);
  t.false(down.stderr.includes('s3cret'), down.stderr);
});

test('a --url with a path the registry does not serve is a failure naming the URL (exit 1), not a missing snapshot (exit 3)', async (t) => {
  const target = join(work, 'wrong-path');
  const r = await volreg(['pull', '-q', 'gen/a:t1', target], { url: `${server.url}/registry/` });
  t.is(r.code, 1, r.stderr);
  oneLine(t, r, 'pull');
  t.regex(r.stderr, /VOLREG_URL/);
  await t.throwsAsync(readdir(target), { code: 'ENOENT' });
});

test('a --user holding ":" is bad usage: Basic credentials would split it there', async (t) => {
  const r = await volreg(['ls', '-q'], { env: { VOLREG_USER: 'ops:team', VOLREG_PASSWORD: 'pw' } });
  t.is(r.code, 2, r.stderr);
  oneLine(t, r, 'ls');
  t.regex(r.stderr, /VOLREG_USER/);
});

test('a lock file that is a fifo or a device is refused at once (exit 2), restoring nothing', async (t) => {
  const root = await mkdtemp(join(work, 'root-'));
  const fifo = join(work, 'lock.fifo');
  execFileSync('mkfifo', [fifo]);
  for (const lock of [fifo, '/dev/zero']) {
    const r = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
    t.is(r.code, 2, r.stderr);
    oneLine(t, r, 'restore');
    t.regex(r.stderr, /not a regular file/);
  }
  t.deepEqual(await readdir(root), []);
});

test('a lock file larger than any lock file is refused (exit 2) without reading it all', async (t) => {
  const root = await mkdtemp(join(work, 'root-'));
  const lock = join(work, 'huge.lock');
  await writeFile(lock, `downstream:\n  a: tag:t1\n${'#'.repeat(2 * 1024 * 1024)}\n`);
  const r = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
  t.is(r.code, 2, r.stderr);
  oneLine(t, r, 'restore');
  t.regex(r.stderr, /larger than/);
  t.deepEqual(await readdir(root), []);
});

test('a volume listed twice in a line-form lock file makes it malformed (exit 2), as a YAML key given twice does', async (t) => {
  const root = await mkdtemp(join(work, 'root-'));
  const lock = join(work, 'twice.lock');
  await writeFile(lock, 'a downstream tag:t1\nb-1 downstream tag:t1\na downstream tag:t2\n');
  const r = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
  t.is(r.code, 2, r.stderr);
  oneLine(t, r, 'restore');
  t.regex(r.stderr, /line 3: volume "a" is already listed on line 1/);
  t.deepEqual(await readdir(root), []);
});

test('a line-form lock file with CRLF line ends and comments restores as with LF', async (t) => {
  const root = await mkdtemp(join(work, 'root-'));
  const lock = join(work, 'crlf.lock');
  await writeFile(lock, '# volumes of this host\r\na downstream tag:t1  # pinned\r\n');
  const r = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
  t.is(r.code, 0, r.stderr);
  t.is(await readFile(join(root, 'a', 'id'), 'utf8'), 'a');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a t1\n');
});

test('a volume that is a file fails alone (exit 5), --force or not: the other volumes are restored', async (t) => {
  const root = await mkdtemp(join(work, 'root-'));
  await writeFile(join(root, 'a'), 'a file');
  const lock = join(work, 'file-volume.lock');
  await writeFile(lock, 'downstream:\n  a: tag:t1\n  b-1: tag:t1\n');
  const r = await volreg(['restore', '-q', '--force', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
  t.is(r.code, 5, r.stderr);
  t.regex(r.stderr, /^volreg restore: a: .*\/a is not a directory\n$/);
  t.is(await readFile(join(root, 'a'), 'utf8'), 'a file');
  t.is(await readFile(join(root, 'b-1', 'id'), 'utf8'), 'b-1');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'b-1 t1\n');
});

test('a --volumes-root that is a file is bad usage (exit 2) for backup and restore', async (t) => {
  const file = join(work, 'not-a-root');
  await writeFile(file, 'x');
  const lock = join(work, 'one.lock');
  await writeFile(lock, 'downstream:\n  a: tag:t1\n');
  const before = await volumeCount();
  for (const [command, args] of [
    ['restore', ['--lock', lock]],
    ['backup', ['--tag', 't2', 'a']],
  ] as const) {
    const r = await volreg([command, '-q', '--prefix', 'gen/', '--volumes-root', file, ...args]);
    t.is(r.code, 2, `${command}: ${r.stderr}`);
    oneLine(t, r, command);
    t.regex(r.stderr, /not-a-root is not a directory/);
  }
  t.is(await readFile(file, 'utf8'), 'x');
  t.is(await volumeCount(), before);
});

test('an empty VOLREG_* variable counts as unset; an empty --volumes-root is bad usage, never the current directory', async (t) => {
  const lock = join(work, 'empty-root.lock');
  await writeFile(lock, 'downstream:\n  a: tag:t1\n');
  const explicit = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', '']);
  t.is(explicit.code, 2, explicit.stderr);
  oneLine(t, explicit, 'restore');
  t.regex(explicit.stderr, /--volumes-root \(VOLREG_VOLUMES_ROOT\) is empty/);
  // unset: the default root, /volumes, where this volume does not exist
  const unset = await volreg(['backup', '-q', '--tag', 't3', '--prefix', 'gen/', 'no-such-volume'], { env: { VOLREG_VOLUMES_ROOT: '', VOLREG_TIMEOUT: '' } });
  t.is(unset.code, 5, unset.stderr);
  t.regex(unset.stderr, /\/volumes\/no-such-volume does not exist/);
  await t.throwsAsync(readFile(join(work, 'tags')), { code: 'ENOENT' });
  await t.throwsAsync(readdir(join(work, 'a')), { code: 'ENOENT' });
});

test('pull into a file, a path through a file or an empty path is bad usage (exit 2), writing nothing', async (t) => {
  const file = join(work, 'a-file');
  await writeFile(file, 'x');
  for (const target of [file, join(file, 'below'), '']) {
    const r = await volreg(['pull', '-q', 'gen/a:t1', target]);
    t.is(r.code, 2, `${target}: ${r.stderr}`);
    oneLine(t, r, 'pull');
  }
  t.is(await readFile(file, 'utf8'), 'x');
});

test('push of a directory that does not exist, or of a file, is bad usage (exit 2) in one line, nothing pushed', async (t) => {
  const file = join(work, 'push-source-file');
  await writeFile(file, 'x');
  for (const [source, said] of [
    [join(work, 'no-such-dir'), /no-such-dir does not exist$/],
    [join(file, 'below'), /below does not exist \(a part of its path is not a directory\)$/],
    [file, /push-source-file is not a directory \(to send an archive file: volreg push - <ref> < file\)$/],
  ] as const) {
    const r = await volreg(['push', '-q', source, 'push-source/x:t1']);
    t.is(r.code, 2, `${source}: ${r.stderr}`);
    oneLine(t, r, 'push');
    t.regex(r.stderr.trimEnd(), said);
  }
  t.false(await holdsVolume('push-source/x'));
});

test('backup takes only the volume names restore takes: a name that is not a Docker volume name is refused by both (exit 2) in the same words, before anything', async (t) => {
  const root = await mkdtemp(join(work, 'names-'));
  for (const v of ['ok', 'a/b']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'id'), v);
  }
  const backup = await volreg(['backup', '-q', '--tag', 't1', '--prefix', 'names/', '--volumes-root', root, 'ok,a/b,.hidden']);
  t.is(backup.code, 2, backup.stderr);
  oneLine(t, backup, 'backup');
  const said = /"a\/b": (not a valid Docker volume name [^;]*); "\.hidden": not a valid Docker volume name/.exec(backup.stderr);
  t.truthy(said, backup.stderr);
  t.false(await holdsVolume('names/ok'), 'nothing pushed, not even the volume named before them');

  const host = join(work, 'names-host');
  const lock = join(work, 'names.lock');
  await writeFile(lock, 'downstream:\n  ok: tag:t1\n  a/b: tag:t1\n');
  const restore = await volreg(['restore', '-q', '--lock', lock, '--prefix', 'gen/', '--volumes-root', host]);
  t.is(restore.code, 2, restore.stderr);
  oneLine(t, restore, 'restore');
  t.is(/ a\/b: (not a valid Docker volume name [^;]*)$/.exec(restore.stderr.trimEnd())?.[1], said?.[1], 'the same rule, in the same words');
  await t.throwsAsync(lstat(host), { code: 'ENOENT' }, 'nothing restored');
  t.deepEqual((await readdir(root)).sort(), ['a', 'ok'], 'no tags file written');
});

test('the tags file beside the volumes is read only as a regular file of at most 1 MiB: a symlink, a fifo or a larger file is refused (exit 2) in one line naming it, nothing pushed, restored or written through', async (t) => {
  const lock = join(work, 'tags-kinds.lock');
  await writeFile(lock, 'downstream:\n  a: tag:t1\n');
  const outside = join(work, 'outside-tags');
  await writeFile(outside, 'a t0\n');
  const kinds: Array<[string, (path: string) => Promise<unknown>, RegExp]> = [
    ['symlink', (path) => symlink(outside, path), /\/tags is a symlink, not a regular file \(a link there is never followed\): replace it with a regular file$/],
    ['fifo', async (path) => execFileSync('mkfifo', [path]), /\/tags is a fifo, not a regular file: the tags file of the volumes root goes there \(remove it\)$/],
    ['large', (path) => writeFile(path, `a t0\n${'#'.repeat(1024 * 1024)}\n`), /\/tags is larger than 1048576 bytes \(1048582\): not a tags file$/],
  ];
  for (const [kind, make, said] of kinds) {
    const root = await mkdtemp(join(work, `tags-${kind}-`));
    await mkdir(join(root, 'a'));
    await writeFile(join(root, 'a', 'mine'), 'kept');
    await make(join(root, 'tags'));
    for (const [command, args] of [
      ['backup', ['--tag', 't2', '--prefix', 'tags-kinds/', 'a']],
      ['restore', ['--force', '--lock', lock, '--prefix', 'gen/']],
    ] as const) {
      const r = await volreg([command, '-q', '--volumes-root', root, ...args]);
      t.is(r.code, 2, `${kind} ${command}: ${r.stderr}`);
      oneLine(t, r, command);
      t.regex(r.stderr.trimEnd(), said, `${kind} ${command}`);
    }
    t.deepEqual(await readdir(join(root, 'a')), ['mine'], `${kind}: the volume is left as it was`);
    t.deepEqual((await readdir(root)).sort(), ['a', 'tags'], `${kind}: nothing written beside it`);
    if (kind === 'symlink') t.true((await lstat(join(root, 'tags'))).isSymbolicLink());
  }
  t.is(await readFile(outside, 'utf8'), 'a t0\n', 'never written through the link');
  t.false(await holdsVolume('tags-kinds/a'), 'nothing pushed');
});

test('a link planted under the name the tags file is written to first is never written through, with the agent pid 1 as in a container', async (t) => {
  const root = await mkdtemp(join(work, 'tags-pid1-'));
  await mkdir(join(root, 'a'));
  await writeFile(join(root, 'a', 'id'), 'a');
  const victim = join(work, 'victim');
  await writeFile(victim, 'precious\n');
  for (const pid of [1, 2, 3]) await symlink(victim, join(root, `.tags.${pid}.tmp`));
  // gen/a holds the same content already: no new volume for the other tests' counts
  const r = await volreg(['backup', '-q', '--tag', 'pid1', '--prefix', 'gen/', '--volumes-root', root, 'a'], { prefix: ['unshare', '--pid', '--fork', '--mount-proc'] });
  t.is(r.code, 0, r.stderr);
  t.is(await readFile(victim, 'utf8'), 'precious\n');
  t.true((await lstat(join(root, 'tags'))).isFile());
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a pid1\n');
  t.true(await holdsVolume('gen/a'));
});

test('a volume directory that is a symlink (dangling too) is never followed: backup and restore fail that volume alone (exit 5) in one line naming the link, nothing read or written through it', async (t) => {
  const root = await mkdtemp(join(work, 'linked-volumes-'));
  const outside = join(work, 'linked-outside');
  const emptyOutside = join(work, 'linked-outside-empty');
  const nowhere = join(work, 'linked-nowhere');
  await mkdir(outside);
  await mkdir(emptyOutside);
  await writeFile(join(outside, 'secret'), 'host only');
  await mkdir(join(root, 'a'));
  await writeFile(join(root, 'a', 'id'), 'a');
  // what a container writing the volumes root can put in a volume's place
  await symlink(outside, join(root, 'b-1'));
  await symlink(join(nowhere, 'x'), join(root, 'd_2'));
  await symlink(emptyOutside, join(root, 'Cx'));
  const said = (command: string, volume: string, target: string): RegExp =>
    new RegExp(`^volreg ${command}: ${volume}: .*/${volume} is a symlink to "${target}", not a directory: a volume's directory is never reached through a link \\(put the volume's directory itself there\\)$`, 'm');

  // gen/ volumes exist already: a tag more on them changes no volume count of the other tests
  const backup = await volreg(['backup', '-q', '--tag', 'linked', '--prefix', 'gen/', '--volumes-root', root, 'a,b-1,d_2']);
  t.is(backup.code, 5, backup.stderr);
  t.is(backup.stderr.trimEnd().split('\n').length, 2, backup.stderr);
  t.regex(backup.stderr, said('backup', 'b-1', outside));
  t.regex(backup.stderr, said('backup', 'd_2', join(nowhere, 'x')));
  t.is((await fetch(`${server.url}/api/v1/volumes/gen/a/tags/linked`)).status, 200, 'the real volume is pushed');
  t.is((await fetch(`${server.url}/api/v1/volumes/gen/b-1/tags/linked`)).status, 404, 'nothing read through the link');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a linked\n');

  const lock = join(work, 'linked.lock');
  await writeFile(lock, 'downstream:\n  a: tag:t1\n  b-1: tag:t1\n  d_2: tag:t1\n  Cx: tag:t1\n');
  const restore = await volreg(['restore', '-q', '--force', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root]);
  t.is(restore.code, 5, restore.stderr);
  t.is(restore.stderr.trimEnd().split('\n').length, 3, restore.stderr);
  t.regex(restore.stderr, said('restore', 'b-1', outside));
  t.regex(restore.stderr, said('restore', 'd_2', join(nowhere, 'x')));
  t.regex(restore.stderr, said('restore', 'Cx', emptyOutside));
  t.is(await readFile(join(root, 'a', 'id'), 'utf8'), 'a', 'the real volume is restored');
  t.deepEqual(await readdir(outside), ['secret'], '--force replaced nothing through the link');
  t.deepEqual(await readdir(emptyOutside), [], 'nothing written into an empty directory through the link');
  await t.throwsAsync(lstat(nowhere), { code: 'ENOENT' }, 'a dangling link is not made real');
  for (const v of ['b-1', 'd_2', 'Cx']) t.true((await lstat(join(root, v))).isSymbolicLink(), v);
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a t1\n');
});

test('a temporary tags file a killed run left is removed by the next run writing the tags file once an hour old; a younger one, a link, a directory, another user\'s file or one with another name are left alone', async (t) => {
  const root = await mkdtemp(join(work, 'tags-leftovers-'));
  await mkdir(join(root, 'a'));
  await writeFile(join(root, 'a', 'id'), 'a');
  // killed (SIGKILL) as it renames the temporary file over `tags`: what a crash there leaves
  const renames = 'rename,renameat,renameat2';
  const strace = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', `trace=${renames}`, '-e', `inject=${renames}:signal=SIGKILL`];
  const killed = await volreg(['backup', '-q', '--tag', 'crash', '--prefix', 'gen/', '--volumes-root', root, 'a'], { prefix: strace });
  t.not(killed.code, 0, killed.stderr);
  const crashed = (await readdir(root)).filter((n) => /^\.tags\.[0-9a-f]{16}\.tmp$/.test(n));
  t.is(crashed.length, 1, `left: ${(await readdir(root)).join(' ')}`);
  t.is(await readFile(join(root, crashed[0]!), 'utf8'), 'a crash\n');

  const hoursAgo = new Date(Date.now() - 2 * 3600_000);
  await utimes(join(root, crashed[0]!), hoursAgo, hoursAgo);
  const victim = join(work, 'leftover-victim');
  await writeFile(victim, 'precious\n');
  const kept: Record<string, () => Promise<unknown>> = {
    // another run's, being written now
    '.tags.00000000000000f1.tmp': () => writeFile(join(root, '.tags.00000000000000f1.tmp'), 'a live\n'),
    '.tags.00000000000000f2.tmp': () => symlink(victim, join(root, '.tags.00000000000000f2.tmp')),
    '.tags.00000000000000f3.tmp': () => mkdir(join(root, '.tags.00000000000000f3.tmp')).then(() => writeFile(join(root, '.tags.00000000000000f3.tmp', 'x'), 'x')),
    '.tags.00000000000000f4.tmp': () => writeFile(join(root, '.tags.00000000000000f4.tmp'), 'x').then(() => chown(join(root, '.tags.00000000000000f4.tmp'), NOBODY, NOBODY)),
    '.tags.00000000000000f5.tmp': () => link(victim, join(root, '.tags.00000000000000f5.tmp')),
    '.tags.notours.tmp': () => writeFile(join(root, '.tags.notours.tmp'), 'x'),
  };
  for (const [name, make] of Object.entries(kept)) {
    await make();
    if (name !== '.tags.00000000000000f1.tmp') await lutimes(join(root, name), hoursAgo, hoursAgo);
  }
  const r = await volreg(['backup', '-q', '--tag', 'swept', '--prefix', 'gen/', '--volumes-root', root, 'a']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual((await readdir(root)).sort(), [...Object.keys(kept), '.tags.lock', 'a', 'tags'].sort());
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'a swept\n');
  t.is(await readFile(victim, 'utf8'), 'precious\n');
  t.deepEqual(await readdir(join(root, '.tags.00000000000000f3.tmp')), ['x']);
});

/** References of any characters: refused as bad usage (2) or missing (3), in one line, the target untouched. */
test('generated references: exit 2 or 3 in one line, nothing written', async (t) => {
  const part = fc.oneof(
    fc.constantFrom('gen/a', 'gen/zz', 'Gen/A', '', 'a//b', '-x', '%41', 'a..b', 'x'.repeat(300)),
    fc.string({ unit: 'binary', maxLength: 12 }).map((s) => s.replace(/\0/g, '')),
  );
  const sep = fc.constantFrom(':', '@', '::', '@@', ':@', '@sha256:', '@sha256:' + 'ab'.repeat(32), '');
  const tag = fc.oneof(fc.constantFrom('t1', 't9', '', 'T1', '.x', 'a'.repeat(129)), fc.string({ maxLength: 8 }).map((s) => s.replace(/\0/g, '')));
  await fc.assert(
    fc.asyncProperty(part, sep, tag, async (name, separator, rest) => {
      const ref = `${name}${separator}${rest}`;
      fc.pre(!ref.startsWith('-') && !/^gen\/a[:@]t1$/.test(ref) && ref !== 'gen/a:t1');
      const target = join(work, 'never');
      const r = await volreg(['pull', '-q', ref, target]);
      t.true(r.code === 2 || r.code === 3, `${JSON.stringify(ref)}: ${r.code} ${r.stderr}`);
      oneLine(t, r, 'pull');
      await t.throwsAsync(readdir(target), { code: 'ENOENT' });
    }),
    { numRuns: fuzzRuns(8), seed: fuzzSeed(5660) },
  );
});

type LockValue = 'ok' | 'missing' | 'none';
type DiskState = 'absent' | 'empty' | 'full' | 'full-locked' | 'file';
interface Case {
  volume: string;
  value: LockValue;
  disk: DiskState;
}

/** What the README's restore rules make of one volume. */
function expected(c: Case, force: boolean): 'restored' | 'up-to-date' | 'skipped' | 'failed' {
  if (c.value === 'none') return 'skipped';
  if (c.disk === 'file') return 'failed';
  const full = c.disk === 'full' || c.disk === 'full-locked';
  if (c.disk === 'full-locked' && c.value === 'ok') return 'up-to-date';
  if (c.value === 'missing') return 'failed';
  if (full && !force) return 'failed';
  return 'restored';
}

function lockText(cases: Case[], form: 'yaml' | 'yaml-object' | 'json' | 'lines', eol: string, bom: boolean): string {
  const tagOf = (v: LockValue): string | null => (v === 'ok' ? 't1' : v === 'missing' ? 't9' : null);
  let text: string;
  if (form === 'json') text = JSON.stringify({ downstream: Object.fromEntries(cases.map((c) => [c.volume, tagOf(c.value) && `tag:${tagOf(c.value)}`])), upstream: { other: {} } });
  else if (form === 'lines') text = ['# generated', ...cases.map((c) => `${c.volume}  downstream${tagOf(c.value) ? ` tag:${tagOf(c.value)}` : ''}`), 'other upstream'].join('\n');
  else {
    const value = (v: LockValue): string => (tagOf(v) === null ? '' : form === 'yaml' ? ` "tag:${tagOf(v)}"` : ` {tag: ${tagOf(v)}}`);
    text = ['downstream:', ...cases.map((c) => `  ${c.volume}:${value(c.value)}`), 'upstream:', '  other: {}'].join('\n');
  }
  return `${bom ? '\uFEFF' : ''}${text.replace(/\n/g, eol)}${eol}`;
}

test('generated lock files: each volume ends as the restore rules say, and the tags file names what it holds', async (t) => {
  const caseArb = fc.uniqueArray(
    fc.record({ volume: fc.constantFrom(...POOL), value: fc.constantFrom<LockValue>('ok', 'missing', 'none'), disk: fc.constantFrom<DiskState>('absent', 'empty', 'full', 'full-locked', 'file') }),
    { minLength: 1, maxLength: POOL.length, selector: (c) => c.volume },
  );
  await fc.assert(
    fc.asyncProperty(caseArb, fc.boolean(), fc.constantFrom('yaml', 'yaml-object', 'json', 'lines') as fc.Arbitrary<'yaml' | 'yaml-object' | 'json' | 'lines'>, fc.constantFrom('\n', '\r\n'), fc.boolean(), async (cases, force, form, eol, bom) => {
      const root = await mkdtemp(join(work, 'gen-'));
      const tags: string[] = [];
      for (const c of cases) {
        if (c.disk === 'absent') continue;
        if (c.disk === 'file') {
          await writeFile(join(root, c.volume), 'a file');
          continue;
        }
        await mkdir(join(root, c.volume));
        if (c.disk === 'empty') continue;
        await writeFile(join(root, c.volume, 'old'), 'old');
        if (c.disk === 'full-locked') tags.push(`${c.volume} t1\n`);
      }
      if (tags.length > 0) await writeFile(join(root, 'tags'), tags.join(''));
      const lock = join(root, '..', `${root.split('/').pop()}.lock`);
      await writeFile(lock, lockText(cases, form, eol, bom));
      const r = await volreg(['restore', '--json', '--lock', lock, '--prefix', 'gen/', '--volumes-root', root, ...(force ? ['--force'] : [])]);
      const report = JSON.parse(r.stdout) as { ok: boolean; volumes: Array<{ volume: string; status: string }> };
      const want = cases.map((c) => ({ volume: c.volume, status: expected(c, force) }));
      t.deepEqual(report.volumes.map((v) => ({ volume: v.volume, status: v.status })), want, `${form} ${JSON.stringify(cases)} force=${force}`);
      t.is(r.code, want.some((w) => w.status === 'failed') ? 5 : 0, r.stderr);
      const lines = await readFile(join(root, 'tags'), 'utf8').catch(() => '');
      for (const c of cases) {
        const status = expected(c, force);
        const entries = await readdir(join(root, c.volume)).catch(() => null);
        if (status === 'restored') {
          t.deepEqual(entries, ['id']);
          t.is(await readFile(join(root, c.volume, 'id'), 'utf8'), c.volume);
        } else if (c.disk === 'file') t.is(await readFile(join(root, c.volume), 'utf8'), 'a file');
        else if (c.disk === 'absent') t.true(entries === null || entries.length === 0, `${c.volume}: ${entries}`);
        else t.deepEqual(entries, c.disk === 'empty' ? [] : ['old']);
        t.is(lines.split('\n').includes(`${c.volume} t1`), status === 'restored' || c.disk === 'full-locked', `${c.volume} in tags: ${lines}`);
      }
    }),
    { numRuns: fuzzRuns(10), seed: fuzzSeed(5661) },
  );
});
