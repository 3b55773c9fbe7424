import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';
import { describeTree } from '../helpers/tree.ts';

/**
 * A restore killed while it switches a volume's contents over leaves old and new contents mixed.
 * The tags file must not then still name the old tag, or a later restore to that tag would call
 * the half-replaced volume up to date.
 */
let server: TestServer;
let work = '';

const volreg = (args: string[]): Promise<CliRun> => runVolreg(args, { url: server.url, cwd: work });

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-restore-interrupted' });
  work = await mkdtemp(join(tmpdir(), 'volreg-restore-interrupted-'));
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** Many small files: the switch-over moves each, so it lasts long enough to be caught in the middle. */
async function manyFiles(dir: string, content: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < 3000; i++) await writeFile(join(dir, `f${i}`), `${content} ${i}\n`);
}

/** The path of the switch-over's `old` directory in a volume, once there is one. */
function asideDir(volume: string): string | null {
  for (const n of readdirSync(volume)) {
    if (n.startsWith('.volreg-') && existsSync(join(volume, n, 'old'))) return join(volume, n, 'old');
  }
  return null;
}

/**
 * Starts a forced restore to `lock` and calls `during` once its switch-over has begun (the old
 * contents have a place aside), then waits for it to end. Polled between turns of the event
 * loop, which serves the registry (the test server runs in this process). Returns whether the
 * switch-over was caught, and how the restore ended.
 */
async function restoreCaughtMidSwitch(
  root: string,
  lock: string,
  during: (child: ReturnType<typeof spawn>, aside: string) => boolean,
): Promise<{ caught: boolean; signal: NodeJS.Signals | null }> {
  const volume = join(root, 'vol');
  const child = spawn(process.execPath, [VOLREG_BIN, 'restore', '--force', '-q', '--lock', lock, '--volumes-root', root, '--prefix', 'interrupted/'], {
    env: { ...process.env, VOLREG_URL: server.url },
    stdio: 'ignore',
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  let caught = false;
  try {
    const deadline = Date.now() + 60_000;
    let aside: string | null = null;
    while (Date.now() < deadline && aside === null && child.exitCode === null && child.signalCode === null) {
      aside = asideDir(volume);
      if (aside === null) await new Promise((resolve) => setImmediate(resolve));
    }
    if (aside !== null) caught = during(child, aside);
  } finally {
    if (child.exitCode === null && child.signalCode === null && !caught) child.kill('SIGKILL');
  }
  const signal = await exited;
  return { caught, signal };
}

/** Both snapshots pushed (once) and a lock file for each. */
async function pushBoth(): Promise<{ v0: string; v1: string; lock0: string; lock1: string }> {
  const v0 = join(work, 'src-v0');
  const v1 = join(work, 'src-v1');
  const lock0 = join(work, 'v0.lock');
  const lock1 = join(work, 'v1.lock');
  if (!existsSync(v0)) {
    await manyFiles(v0, 'old');
    await manyFiles(v1, 'new');
    for (const [dir, ref] of [[v0, 'interrupted/vol:v0'], [v1, 'interrupted/vol:v1']]) {
      const pushed = await volreg(['push', '-q', dir!, ref!]);
      if (pushed.code !== 0) throw new Error(`push of ${ref} failed: ${pushed.stderr}`);
    }
    await writeFile(lock0, 'vol downstream tag:v0\n');
    await writeFile(lock1, 'vol downstream tag:v1\n');
  }
  return { v0, v1, lock0, lock1 };
}

test.serial('a restore killed during the switch-over has forgotten the old tag: a later restore to it does not call the volume up to date', async (t) => {
  const { v0, lock0, lock1 } = await pushBoth();
  const root = join(work, 'volumes-killed');
  const volume = join(root, 'vol');
  const restore = (lock: string, ...more: string[]): Promise<CliRun> =>
    volreg(['restore', '--lock', lock, '--volumes-root', root, '--prefix', 'interrupted/', ...more]);

  let caught = false;
  for (let attempt = 0; attempt < 5 && !caught; attempt++) {
    await rm(root, { recursive: true, force: true });
    await mkdir(root);
    t.is((await restore(lock0)).code, 0);
    t.is(await readFile(join(root, 'tags'), 'utf8'), 'vol v0\n');
    ({ caught } = await restoreCaughtMidSwitch(root, lock1, (child, aside) => {
      child.kill('SIGSTOP');
      // stopped with the switch-over under way (not yet cleaned up): what a kill -9 leaves
      if (!existsSync(aside)) return false;
      t.is(readFileSync(join(root, 'tags'), 'utf8'), '', 'the volume being replaced has no tag in the tags file');
      child.kill('SIGKILL');
      return true;
    }));
  }
  t.true(caught, 'a restore was stopped during its switch-over');

  const again = await restore(lock0);
  t.is(again.code, 5, again.stdout + again.stderr);
  t.regex(again.stderr, /vol: volume is not empty \(use --force to replace it\)/);
  t.notRegex(again.stdout, /up-to-date/);

  const forced = await restore(lock0, '--force');
  t.is(forced.code, 0, forced.stderr);
  t.deepEqual(await describeTree(volume), await describeTree(v0), 'the volume holds the whole snapshot again');
  t.deepEqual((await readdir(volume)).filter((n) => n.startsWith('.volreg-')), [], 'the killed restore left nothing behind');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'vol v0\n');
});

test.serial('a restore sent SIGTERM during the switch-over finishes it and records the new tag: the next restore calls the volume up to date', async (t) => {
  const { v1, lock0, lock1 } = await pushBoth();
  const root = join(work, 'volumes-terminated');
  const volume = join(root, 'vol');
  const restore = (lock: string, ...more: string[]): Promise<CliRun> =>
    volreg(['restore', '--lock', lock, '--volumes-root', root, '--prefix', 'interrupted/', ...more]);

  let outcome = { caught: false, signal: null as NodeJS.Signals | null };
  for (let attempt = 0; attempt < 5 && !outcome.caught; attempt++) {
    await rm(root, { recursive: true, force: true });
    await mkdir(root);
    t.is((await restore(lock0)).code, 0);
    outcome = await restoreCaughtMidSwitch(root, lock1, (child) => child.kill('SIGTERM'));
  }
  t.true(outcome.caught, 'a restore was sent SIGTERM during its switch-over');
  t.is(outcome.signal, 'SIGTERM', 'the restore still ends by the signal');
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'vol v1\n', 'the tags file names the tag the volume now holds');
  t.deepEqual(await describeTree(volume), await describeTree(v1), 'the volume holds the whole new snapshot');
  t.deepEqual((await readdir(volume)).filter((n) => n.startsWith('.volreg-')), [], 'nothing was left behind');

  const again = await restore(lock1);
  t.is(again.code, 0, again.stdout + again.stderr);
  t.regex(again.stdout, /^vol: up-to-date v1 \(the volume already holds it\)$/m);
});
