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

test('a restore killed during the switch-over has forgotten the old tag: a later restore to it does not call the volume up to date', async (t) => {
  const v0 = join(work, 'src-v0');
  const v1 = join(work, 'src-v1');
  await manyFiles(v0, 'old');
  await manyFiles(v1, 'new');
  t.is((await volreg(['push', '-q', v0, 'interrupted/vol:v0'])).code, 0);
  t.is((await volreg(['push', '-q', v1, 'interrupted/vol:v1'])).code, 0);
  const lock0 = join(work, 'v0.lock');
  const lock1 = join(work, 'v1.lock');
  await writeFile(lock0, 'vol downstream tag:v0\n');
  await writeFile(lock1, 'vol downstream tag:v1\n');
  const root = join(work, 'volumes');
  const volume = join(root, 'vol');
  const restore = (lock: string, ...more: string[]): Promise<CliRun> =>
    volreg(['restore', '--lock', lock, '--volumes-root', root, '--prefix', 'interrupted/', ...more]);

  let caught = false;
  for (let attempt = 0; attempt < 5 && !caught; attempt++) {
    await rm(root, { recursive: true, force: true });
    await mkdir(root);
    t.is((await restore(lock0)).code, 0);
    t.is(await readFile(join(root, 'tags'), 'utf8'), 'vol v0\n');
    const child = spawn(process.execPath, [VOLREG_BIN, 'restore', '--force', '-q', '--lock', lock1, '--volumes-root', root, '--prefix', 'interrupted/'], {
      env: { ...process.env, VOLREG_URL: server.url },
      stdio: 'ignore',
    });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    // The switch-over has begun once the old contents have a place aside; the restore ends (and
    // records v1) after that place is gone. Polled between turns of the event loop, which serves
    // the registry (the test server runs in this process).
    try {
      const deadline = Date.now() + 60_000;
      let aside: string | null = null;
      while (Date.now() < deadline && aside === null && readFileSync(join(root, 'tags'), 'utf8') !== 'vol v1\n') {
        aside = asideDir(volume);
        if (aside === null) await new Promise((resolve) => setImmediate(resolve));
      }
      if (aside !== null) {
        child.kill('SIGSTOP');
        // stopped with the switch-over under way (not yet cleaned up): what a kill -9 leaves
        if (existsSync(aside)) {
          caught = true;
          t.is(readFileSync(join(root, 'tags'), 'utf8'), '', 'the volume being replaced has no tag in the tags file');
        }
      }
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
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
