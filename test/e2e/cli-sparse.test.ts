import { createHash, randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** `pull --sparse` and `restore --sparse` give a sparse file back its holes; without it they are written. */
let server: TestServer;
let work = '';
let source = '';
const MiB = 1024 * 1024;
const IMAGE_BYTES = 64 * MiB;

function volreg(args: string[]): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work });
}

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-sparse' });
  work = await mkdtemp(join(tmpdir(), 'volreg-sparse-'));
  source = join(work, 'src');
  await mkdir(source);
  // a disk image of 64 MiB holding 10 KiB of data in its middle and a trailing hole
  const fd = openSync(join(source, 'disk.img'), 'wx');
  ftruncateSync(fd, IMAGE_BYTES);
  writeSync(fd, randomBytes(10 * 1024), 0, 10 * 1024, 32 * MiB + 100);
  closeSync(fd);
  await writeFile(join(source, 'data.bin'), randomBytes(300 * 1024));
  const pushed = await volreg(['push', '-q', source, 'sparse/vol:1']);
  if (pushed.code !== 0) throw new Error(`push failed: ${pushed.stderr}`);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** The restored files hold the source's bytes; the image's allocated bytes. */
async function restoredImage(t: ExecutionContext, dir: string): Promise<number> {
  for (const name of ['disk.img', 'data.bin']) t.is(await sha256(join(dir, name)), await sha256(join(source, name)), name);
  const s = await stat(join(dir, 'disk.img'));
  t.is(s.size, IMAGE_BYTES);
  return s.blocks * 512;
}

test("pull --sparse leaves the image's zeros as holes; pull without it writes them", async (t) => {
  const holes = join(work, 'pulled-sparse');
  const written = join(work, 'pulled-plain');
  const [a, b] = [await volreg(['pull', '-q', '--sparse', 'sparse/vol:1', holes]), await volreg(['pull', '-q', 'sparse/vol:1', written])];
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  t.true((await restoredImage(t, holes)) <= MiB, 'the sparse pull allocates about its 10 KiB of data');
  t.true((await restoredImage(t, written)) >= IMAGE_BYTES - MiB, 'a plain pull writes every zero');
});

test('restore --sparse does the same for each volume of the lock file', async (t) => {
  const root = join(work, 'volumes');
  await mkdir(root);
  const lock = join(work, 'volumes.dvm.lock');
  await writeFile(lock, 'vol downstream tag:1\n');
  const r = await volreg(['restore', '-q', '--sparse', '--lock', lock, '--volumes-root', root, '--prefix', 'sparse/']);
  t.is(r.code, 0, r.stderr);
  t.true((await restoredImage(t, join(root, 'vol'))) <= MiB);
});
