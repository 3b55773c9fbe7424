import { createWriteStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import test from 'ava';
import { pack, type Header } from 'tar-stream';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A pull's memory does not grow with its entries' names: it keeps a 64-bit hash of each name it
 * extracts (for the hard links that may follow), and the directories' attributes and the
 * symlinks' names (for the checks at the end) in spill files in its work directory. 20,000
 * symlinks with paths of 1,960 bytes are about 40 MB of names, which an extractor keeping them
 * could not hold in an old generation of 32 MB (it ran out of heap there and at 48 MB).
 */
let server: TestServer;
let work = '';

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-pull-memory' });
  work = await mkdtemp(join(tmpdir(), 'volreg-pull-memory-'));
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

const LINKS = 20_000;
/** seven directories of 250-byte names, each with its own mode */
const DIRS = Array.from({ length: 7 }, (_, i) => String.fromCharCode(97 + i).repeat(250));
const DEEPEST = DIRS.join('/');
const MTIME = new Date(1_600_000_000_000);

function linkName(i: number): string {
  return `${String(i).padStart(8, '0')}`.padEnd(200, 'l');
}

/** The archive, streamed to a file: the directories, one file, LINKS symlinks to it. */
async function writeArchive(file: string): Promise<void> {
  const p = pack();
  const written = pipeline(p, createWriteStream(file));
  const add = (h: Partial<Header> & { name: string }): Promise<void> => new Promise((resolve, reject) => p.entry({ mtime: MTIME, ...h }, '', (err) => (err ? reject(err) : resolve())));
  for (let depth = 1; depth <= DIRS.length; depth++) await add({ name: `${DIRS.slice(0, depth).join('/')}/`, type: 'directory', mode: 0o750 - depth });
  await add({ name: `${DEEPEST}/target`, type: 'file', mode: 0o644 });
  for (let i = 0; i < LINKS; i++) await add({ name: `${DEEPEST}/${linkName(i)}`, type: 'symlink', linkname: 'target', mode: 0o777 });
  p.finalize();
  await written;
}

test('a pull of 20,000 entries with long names runs in an old generation of 32 MB, and leaves no spill file', async (t) => {
  const file = join(work, 'many.tar');
  await writeArchive(file);
  const put = await fetch(`${server.url}/api/v1/volumes/mem/many/tags/v1`, { method: 'PUT', body: new Uint8Array(await readFile(file)) });
  t.is(put.status, 201, await put.text());
  await rm(file);

  const target = join(work, 'target');
  await mkdir(target);
  const pulled = await runVolreg(['pull', '--json', 'mem/many:v1', target], { url: server.url, cwd: work, env: { NODE_OPTIONS: '--max-old-space-size=32' } });
  t.is(pulled.code, 0, pulled.stderr.slice(-2000));
  t.is((JSON.parse(pulled.stdout) as { entries: number }).entries, DIRS.length + 1 + LINKS);

  // nothing of the work directory (download, staging, spill files) is left
  t.deepEqual(await readdir(target), [DIRS[0]]);
  const names = await readdir(join(target, DEEPEST));
  t.is(names.length, LINKS + 1);
  t.is(await readlink(join(target, DEEPEST, linkName(LINKS - 1))), 'target');
  // the directories' attributes came back from the spill files, each its own
  for (let depth = 1; depth <= DIRS.length; depth++) {
    const st = await lstat(join(target, ...DIRS.slice(0, depth)));
    t.is(st.mode & 0o7777, 0o750 - depth);
    t.is(st.mtimeMs, MTIME.getTime());
  }
});
