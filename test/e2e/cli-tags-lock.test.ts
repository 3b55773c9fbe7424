import { spawn, execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { runVolreg, type CliRun, type CliRunOptions } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Several runs of `backup` and `restore` in one volumes root at once (cron's nightly backup
 * still running when the next starts, a restore by hand meanwhile): the tags file lock
 * (`.tags.lock`) keeps every run's lines, a killed run leaves no lock that blocks the next, a run
 * waits for the lock only so long, and nothing at the lock's name is followed.
 */
let server: TestServer;
let work = '';

function volreg(args: string[], opts: Omit<CliRunOptions, 'url' | 'cwd'> = {}): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work, ...opts });
}

function oneLine(t: ExecutionContext, r: CliRun, command: string): void {
  const lines = r.stderr.trimEnd().split('\n');
  t.true(lines.length === 1 && lines[0]!.startsWith(`volreg ${command}: `), r.stderr);
  t.false(/\n\s+at /.test(r.stderr), r.stderr);
}

async function volumesRoot(prefix: string, volumes: string[]): Promise<string> {
  const root = await mkdtemp(join(work, prefix));
  for (const v of volumes) {
    await mkdir(join(root, v));
    await writeFile(join(root, v, 'id'), v);
  }
  return root;
}

async function tagsLines(root: string): Promise<string[]> {
  return (await readFile(join(root, 'tags'), 'utf8')).split('\n').filter((l) => l !== '').sort();
}

test.before(async () => {
  server = await startTestServer({ label: 'cli-tags-lock' });
  work = await mkdtemp(join(tmpdir(), 'volreg-cli-tags-lock-'));
});

test.after.always(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

test('backups of different volumes run at once in one volumes root keep every line of the tags file', async (t) => {
  // each volume's line is written as soon as it is pushed: many small read-modify-writes that overlap
  const runs = 4;
  const perRun = 10;
  const sets = Array.from({ length: runs }, (_, r) => Array.from({ length: perRun }, (_, v) => `r${r}-v${v}`));
  const root = await volumesRoot('concurrent-', sets.flat());
  for (const round of ['n1', 'n2']) {
    const results = await Promise.all(sets.map((set) => volreg(['backup', '-q', '--tag', round, '--prefix', 'lock/', '--volumes-root', root, set.join(',')])));
    for (const r of results) t.is(r.code, 0, r.stderr);
    t.deepEqual(await tagsLines(root), sets.flat().map((v) => `${v} ${round}`).sort(), `round ${round}`);
  }
});

test('a run killed while it holds the tags lock blocks no later run; a run held out longer than --tags-lock-timeout stops in one line (exit 1), its line not written', async (t) => {
  const root = await volumesRoot('killed-', ['a', 'b']);
  // SIGKILL as it renames the new tags file over the old: the lock is held at that moment
  const renames = 'rename,renameat,renameat2';
  const strace = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', `trace=${renames}`, '-e', `inject=${renames}:signal=SIGKILL`];
  const killed = await volreg(['backup', '-q', '--tag', 'k1', '--prefix', 'lock/', '--volumes-root', root, 'a'], { prefix: strace });
  t.not(killed.code, 0, killed.stderr);
  t.true((await lstat(join(root, '.tags.lock'))).isFile(), 'the killed run held the lock file');
  const next = await volreg(['backup', '-q', '--tag', 'k2', '--prefix', 'lock/', '--volumes-root', root, '--tags-lock-timeout', '1', 'a,b']);
  t.is(next.code, 0, next.stderr);
  t.deepEqual(await tagsLines(root), ['a k2', 'b k2']);

  // another run holding the lock (as backup takes it) for longer than the wait
  const holder = spawn('flock', ['--exclusive', join(root, '.tags.lock'), 'sleep', '60'], { stdio: 'ignore' });
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    await rm(join(root, 'b'), { recursive: true });
    await mkdir(join(root, 'b'));
    const lockFile = join(work, 'killed.lock');
    await writeFile(lockFile, 'downstream:\n  b: tag:k2\n');
    const held = await Promise.all([
      volreg(['backup', '-q', '--tag', 'k3', '--prefix', 'lock/', '--volumes-root', root, '--tags-lock-timeout', '1', 'a,b']),
      volreg(['restore', '-q', '--lock', lockFile, '--prefix', 'lock/', '--volumes-root', root], { env: { VOLREG_TAGS_LOCK_TIMEOUT: '1' } }),
    ]);
    for (const [r, command] of [[held[0], 'backup'], [held[1], 'restore']] as const) {
      t.is(r.code, 1, `${command}: ${r.stderr}`);
      oneLine(t, r, command);
      t.regex(r.stderr, /another backup or restore in .* held its tags file lock \(.*\/\.tags\.lock\) for more than 1 s \(--tags-lock-timeout, VOLREG_TAGS_LOCK_TIMEOUT\): the tags file line of [ab] was not changed; stopped/, command);
    }
    t.deepEqual(await tagsLines(root), ['a k2', 'b k2'], 'no line written while another run held the lock');

    // a stopped run still says what it did before the stop: a is up to date, b is where it stopped, c not tried
    await writeFile(lockFile, 'downstream:\n  a: tag:k2\n  b: tag:k2\n  c: tag:k2\n');
    const said = await Promise.all([
      volreg(['restore', '--json', '--lock', lockFile, '--prefix', 'lock/', '--volumes-root', root, '--tags-lock-timeout', '1']),
      volreg(['restore', '--lock', lockFile, '--prefix', 'lock/', '--volumes-root', root, '--tags-lock-timeout', '1']),
      volreg(['backup', '--json', '--tag', 'k4', '--prefix', 'lock/', '--volumes-root', root, '--tags-lock-timeout', '1', 'a,b']),
    ]);
    for (const r of said) t.is(r.code, 1, r.stderr);
    const restored = JSON.parse(said[0].stdout) as { ok: boolean; stopped: boolean; volumes: Array<{ volume: string; status: string; message: string }> };
    t.false(restored.ok);
    t.true(restored.stopped);
    t.deepEqual(restored.volumes.map((v) => [v.volume, v.status]), [['a', 'up-to-date'], ['b', 'failed']]);
    t.regex(restored.volumes[1]!.message, /held its tags file lock .*: the tags file line of b was not changed; stopped/);
    t.regex(said[1].stdout, /^a: up-to-date k2 /m, 'the human report lists what was done before the stop');
    t.regex(said[1].stderr, /^volreg restore: b: another backup or restore in .* held its tags file lock/m);
    const backedUp = JSON.parse(said[2].stdout) as { ok: boolean; stopped: boolean; volumes: Array<{ volume: string; ok: boolean; error: string }> };
    t.true(backedUp.stopped);
    t.deepEqual(backedUp.volumes.map((v) => [v.volume, v.ok]), [['a', false]], 'b is not tried: it would wait as long again');
    t.regex(backedUp.volumes[0]!.error, /the tags file line of a was not changed; stopped/);
    t.deepEqual(await tagsLines(root), ['a k2', 'b k2']);
  } finally {
    holder.kill('SIGKILL');
  }
});

test('nothing at the tags lock\'s name is followed: a symlink (dangling too) or a fifo there is refused (exit 2) in one line, nothing pushed or written through it', async (t) => {
  const victim = join(work, 'lock-victim');
  await writeFile(victim, 'precious\n');
  const nowhere = join(work, 'lock-nowhere');
  const kinds: Array<[string, (path: string) => Promise<unknown>, RegExp]> = [
    ['symlink', (path) => symlink(victim, path), /\/\.tags\.lock is a symlink, not a regular file \(a link there is never followed\): the tags file lock of the volumes root goes there \(remove it\)$/],
    ['dangling', (path) => symlink(nowhere, path), /\/\.tags\.lock is a symlink, not a regular file/],
    ['fifo', async (path) => execFileSync('mkfifo', [path]), /\/\.tags\.lock is not a regular file: the tags file lock of the volumes root goes there \(remove it\)$/],
  ];
  for (const [kind, make, said] of kinds) {
    const root = await volumesRoot(`lock-${kind}-`, ['a']);
    await make(join(root, '.tags.lock'));
    const r = await volreg(['backup', '-q', '--tag', 'l1', '--prefix', `lock-${kind}/`, '--volumes-root', root, 'a']);
    t.is(r.code, 2, `${kind}: ${r.stderr}`);
    oneLine(t, r, 'backup');
    t.regex(r.stderr.trimEnd(), said, kind);
    t.deepEqual((await readdir(root)).sort(), ['.tags.lock', 'a'], `${kind}: nothing written beside it`);
    const res = await fetch(`${server.url}/api/v1/volumes/lock-${kind}/a/tags`);
    t.is(((await res.json()) as { total: number }).total, 0, `${kind}: nothing pushed`);
  }
  t.is(await readFile(victim, 'utf8'), 'precious\n', 'never written through the link');
  await t.throwsAsync(lstat(nowhere), { code: 'ENOENT' }, 'never created through the dangling link');
});
