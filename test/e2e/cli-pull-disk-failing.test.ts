import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * `volreg pull` into a target whose disk fails to write back what the pull wrote: the page cache
 * took every byte, only fsync hears the disk's EIO (strace makes the CLI's fsync calls fail). A
 * pull must not report success, nor remove the old contents, for files the disk may not hold.
 */
let server: TestServer;
let work = '';

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-pull-disk-failing' });
  work = await mkdtemp(join(tmpdir(), 'volreg-pull-failing-'));
  const source = join(work, 'source');
  await mkdir(join(source, 'sub'), { recursive: true });
  await writeFile(join(source, 'new.txt'), 'new contents\n');
  await writeFile(join(source, 'sub', 'data.bin'), Buffer.alloc(300_000, 7));
  const pushed = await runVolreg(['push', source, 'failing/vol:v1'], { url: server.url, cwd: work });
  if (pushed.code !== 0) throw new Error(`push failed: ${pushed.stderr}`);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** `volreg pull --force` under strace failing the fsync calls on `paths` (all of them when none) with EIO. */
function pullFailingFsync(target: string, paths: string[] = []): Promise<CliRun> {
  const prefix = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=fsync', '-e', 'inject=fsync:error=EIO', ...paths.flatMap((p) => ['-P', p])];
  return runVolreg(['pull', '--force', 'failing/vol:v1', target], { url: server.url, cwd: work, prefix });
}

async function oldContents(name: string): Promise<string> {
  const target = join(work, name);
  await mkdir(target, { recursive: true });
  await writeFile(join(target, 'old.txt'), 'old contents\n');
  return target;
}

test('files the disk failed to sync: exit 1 saying so, the target keeps its old contents, a pull once the disk is well restores', async (t) => {
  assertRoot(t, 'strace runs the CLI');
  const target = await oldContents('synced-files');
  const failed = await pullFailingFsync(target);
  t.is(failed.code, 1, failed.stderr);
  t.regex(failed.stderr, /the target's disk failed to store the restored files \(EIO: .*fsync\); nothing in .* was changed/);
  t.notRegex(failed.stdout, /pulled/);
  t.deepEqual(await readdir(target), ['old.txt'], 'old contents only, no work directory left');
  t.is(await readFile(join(target, 'old.txt'), 'utf8'), 'old contents\n');

  const pulled = await runVolreg(['pull', '--force', 'failing/vol:v1', target], { url: server.url, cwd: work });
  t.is(pulled.code, 0, pulled.stderr);
  t.deepEqual((await readdir(target)).sort(), ['new.txt', 'sub']);
});

test("the target directory's own sync failing after the switch-over: exit 1, the old contents kept beside the new ones and named", async (t) => {
  assertRoot(t, 'strace runs the CLI');
  const target = await oldContents('synced-target');
  const failed = await pullFailingFsync(target, [target]);
  t.is(failed.code, 1, failed.stderr);
  const kept = /the new contents were moved into .*, the old ones are kept in (\S+)\n/.exec(failed.stderr);
  t.truthy(kept, failed.stderr);
  t.is(await readFile(join(kept![1]!, 'old.txt'), 'utf8'), 'old contents\n');
  t.is(await readFile(join(target, 'new.txt'), 'utf8'), 'new contents\n');
});
