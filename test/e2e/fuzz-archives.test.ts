import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { runVolreg } from '../helpers/cli-run.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import {
  bodyOf,
  describeFull,
  fuzzSample,
  gnuTarExtract,
  hostileArchives,
  materializeTree,
  treeDifferences,
  type FuzzSample,
} from '../helpers/fuzz-archives.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { seededBytes } from '../helpers/seeded-bytes.ts';

/**
 * Generated, damaged archives (test/helpers/fuzz-archives.ts) pushed to a real server with
 * `curl -T -` (chunked) and pulled back with `volreg pull`: the server answers 201 or a 4xx with
 * the error envelope and stays ready, a refused upload leaves nothing, what it stored `pull`
 * restores as GNU tar extracts it, and `pull` never writes beside its target. VOLREG_FUZZ_RUNS
 * and VOLREG_FUZZ_SEED change the number of runs and the seed (README, Running the tests).
 *
 * The properties run one after the other (test.serial): each checks the data directory and
 * listings, which another's uploads would change under it.
 */
let server: TestServer;
let work = '';
let spliceable: Buffer[] = [];
let counter = 0;

test.before(async (t) => {
  assertRoot(t, 'its trees hold files of mode 000 and setuid bits that pull restores');
  server = await startTestServer({ label: 'e2e-fuzz-archives' });
  work = await mkdtemp(join(tmpdir(), 'volreg-fuzz-e2e-'));
  spliceable = await hostileArchives();
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

const api = (path: string): string => `${server.url}/api/v1/volumes/${path}`;

/** A bound on one request: these archives are small, so only a hang takes this long. */
const REQUEST_SECONDS = 60;

interface Reply {
  status: number;
  json: { errors?: Array<{ code?: unknown; message?: unknown }>; entries?: number; unsafeEntries?: number } | null;
}

/** PUT the body as `curl -T -` sends a stream: chunked, length unknown. */
function put(body: Buffer, volume: string, tag: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '-T', '-', '--max-time', String(REQUEST_SECONDS), '-w', '\n%{http_code}', api(`${volume}/tags/${tag}`)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`curl -T - exited ${code} (28: no answer within ${REQUEST_SECONDS} s): ${err.trim()}`));
      const at = out.lastIndexOf('\n');
      const text = out.slice(0, at);
      let json: Reply['json'] = null;
      try {
        json = JSON.parse(text) as Reply['json'];
      } catch {
        // judged below: every answer is JSON
      }
      resolve({ status: Number(out.slice(at + 1)), json });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(body);
  });
}

async function ready(): Promise<void> {
  const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(REQUEST_SECONDS * 1000) });
  if (res.status !== 200) throw new Error(`/readyz answered ${res.status} after the upload`);
}

/** 201 with a snapshot, or a 4xx with the error envelope; anything else fails the property. */
function judged(reply: Reply): 'stored' | 'refused' {
  if (reply.status === 201 && typeof reply.json?.entries === 'number') return 'stored';
  const error = reply.json?.errors?.[0];
  if (reply.status >= 400 && reply.status < 500 && typeof error?.code === 'string' && typeof error.message === 'string') return 'refused';
  throw new Error(`the upload was answered ${reply.status}: ${JSON.stringify(reply.json).slice(0, 500)}`);
}

function params(seed: number, runs: number): fc.Parameters<[FuzzSample]> {
  return { seed: fuzzSeed(seed), numRuns: fuzzRuns(runs), includeErrorInReport: true };
}

/** Damaged far less than the unit properties: these want many uploads the server stores. */
const sample = fuzzSample({ maxDamages: 1, maxCompressedDamages: 1 });

/** pull's refusals the server does not judge: links that leave the target through other links (test/unit/fuzz-inspector.test.ts says why) */
const LINKS_LEAVING = /leaves the target directory through the links it passes|does not resolve within \d+ links/;

/** A target for pull, with a canary directory beside it that the archive's links point at. */
async function arena(): Promise<{ target: string; canary: string; parent: string }> {
  const parent = join(work, `arena-${++counter}`);
  const target = join(parent, 'target');
  const canary = join(parent, 'canary');
  await mkdir(target, { recursive: true });
  await mkdir(canary);
  await writeFile(join(canary, 'secret'), 'untouched');
  return { target, canary, parent };
}

async function pull(volume: string, tag: string, target: string): Promise<{ code: number; stderr: string }> {
  return runVolreg(['pull', '-q', `${volume}:${tag}`, target], { url: server.url, cwd: work });
}

test.serial('an upload is answered 201 or 4xx with the error envelope, never 5xx nor a hang, and the server stays ready', async (t) => {
  let stored = 0;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(fuzzSample({ maxDamages: 3, maxCompressedDamages: 1 }), async (s) => {
      const body = await bodyOf(s, work, spliceable);
      const verdict = judged(await put(body, 'fuzz/answers', `t${++counter}`));
      if (verdict === 'stored') stored++;
      else refused++;
      await ready();
    }),
    params(0xe2e001, 20),
  );
  t.log(`${stored} stored, ${refused} refused`);
  t.true(stored + refused > 0);
});

test.serial('a refused upload leaves nothing: no tag, no snapshot listed, no upload session, no file under uploads, no blob', async (t) => {
  const volume = 'fuzz/refused';
  const blobsBefore = async (): Promise<number> => (await readdir(join(server.dataDir, 'blobs'), { recursive: true })).length;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(fuzzSample({ maxDamages: 3, maxCompressedDamages: 1 }), async (s) => {
      const body = await bodyOf(s, work, spliceable);
      const blobs = await blobsBefore();
      const tag = `t${++counter}`;
      if (judged(await put(body, volume, tag)) === 'stored') return;
      refused++;
      const one = await fetch(api(`${volume}/tags/${tag}`));
      if (one.status !== 404) throw new Error(`the refused tag answers ${one.status}`);
      const listing = await fetch(api(`${volume}/tags`));
      const listed = listing.status === 200 ? JSON.stringify(await listing.json()) : '';
      if (listed.includes(`"${tag}"`)) throw new Error(`the refused tag is listed: ${listed.slice(0, 300)}`);
      const uploads = await readdir(join(server.dataDir, 'uploads')).catch(() => []);
      if (uploads.length > 0) throw new Error(`uploads/ holds ${uploads.join(', ')}`);
      const sessions = await server.db.collection('uploads').countDocuments();
      if (sessions > 0) throw new Error(`${sessions} upload sessions are left`);
      if ((await blobsBefore()) !== blobs) throw new Error('a blob was kept');
    }),
    params(0xe2e002, 15),
  );
  t.log(`${refused} refused`);
  t.true(refused > 0, 'some uploads were refused');
});

test.serial('every snapshot the server stored, volreg pull restores (unless the server counted unsafe entries), never writing beside its target', async (t) => {
  const volume = 'fuzz/stored';
  let pulled = 0;
  await fc.assert(
    fc.asyncProperty(sample, async (s) => {
      const body = await bodyOf(s, work, spliceable);
      const tag = `t${++counter}`;
      const reply = await put(body, volume, tag);
      if (judged(reply) === 'refused') return;
      const { target, canary, parent } = await arena();
      try {
        const run = await pull(volume, tag, target);
        const unsafe = reply.json?.unsafeEntries ?? 0;
        if (run.code !== 0 && unsafe === 0 && !LINKS_LEAVING.test(run.stderr)) {
          throw new Error(`the server stored the snapshot (${reply.json?.entries} entries, none unsafe), pull refused it (exit ${run.code}): ${run.stderr.trim().slice(0, 600)}`);
        }
        if (run.code === 0) pulled++;
        // never beside the target, whatever pull made of the archive
        if ((await readdir(canary)).join() !== 'secret' || (await readFile(join(canary, 'secret'), 'utf8')) !== 'untouched') throw new Error('pull wrote into the canary beside its target');
        if ((await readdir(parent)).sort().join() !== 'canary,target') throw new Error(`pull left ${(await readdir(parent)).join(', ')} beside its target`);
        // a refused pull leaves the target as it was: empty
        if (run.code !== 0 && (await readdir(target)).length > 0) throw new Error(`a refused pull left ${(await readdir(target)).join(', ')} in its target`);
      } finally {
        await rm(parent, { recursive: true, force: true });
      }
    }),
    params(0xe2e003, 12),
  );
  t.log(`${pulled} snapshots pulled`);
  t.true(pulled > 0);
});

test.serial('what pull restores of a stored snapshot is what GNU tar extracts of it: types, bytes, modes, link targets, hard links, mtimes', async (t) => {
  const volume = 'fuzz/fidelity';
  let compared = 0;
  await fc.assert(
    fc.asyncProperty(sample, async (s) => {
      const body = await bodyOf(s, work, spliceable);
      const tag = `t${++counter}`;
      if (judged(await put(body, volume, tag)) === 'refused') return;
      const { target, parent } = await arena();
      const theirs = join(parent, 'tar');
      await mkdir(theirs);
      try {
        if ((await pull(volume, tag, target)).code !== 0) return;
        const content = Buffer.from(await (await fetch(api(`${volume}/tags/${tag}/content`))).arrayBuffer());
        if (!(await gnuTarExtract(content, s.compression, theirs)).ok) return;
        compared++;
        const differences = treeDifferences(await describeFull(target), await describeFull(theirs));
        if (differences.length > 0) throw new Error(`pull and tar -x differ (name, pull, tar): ${JSON.stringify(differences).slice(0, 2000)}`);
      } finally {
        await rm(parent, { recursive: true, force: true });
      }
    }),
    params(0xe2e004, 10),
  );
  t.log(`${compared} snapshots compared`);
  t.true(compared > 0);
});

test.serial('volreg push of a generated tree is stored and pulled back as it was', async (t) => {
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(sample, fc.constantFrom('none', 'gzip', 'zstd'), async (s, compression) => {
      const source = await mkdtemp(join(work, 'push-'));
      const { target, parent } = await arena();
      try {
        await materializeTree(source, s.tree);
        const tag = `t${++counter}`;
        const pushed = await runVolreg(['push', '-q', '--compression', compression, source, `fuzz/pushed:${tag}`], { url: server.url, cwd: work });
        // what push refuses to archive it says, with exit 1 or 4, and stores nothing
        if (pushed.code !== 0) {
          if (pushed.code !== 1 && pushed.code !== 4) throw new Error(`push exited ${pushed.code}: ${pushed.stderr}`);
          return;
        }
        const run = await pull('fuzz/pushed', tag, target);
        if (run.code !== 0 && !/--keep-outside-symlinks/.test(run.stderr)) throw new Error(`pull of what push stored failed (exit ${run.code}): ${run.stderr}`);
        if (run.code !== 0) return;
        const differences = treeDifferences(await describeFull(target), await describeFull(source));
        if (differences.length > 0) throw new Error(`pull and the pushed tree differ (name, pull, source): ${JSON.stringify(differences).slice(0, 2000)}`);
      } finally {
        await rm(source, { recursive: true, force: true });
        await rm(parent, { recursive: true, force: true });
      }
    }),
    { seed: fuzzSeed(0xe2e005), numRuns: fuzzRuns(6), includeErrorInReport: true },
  ));
});

// ------------------------------------------------------------------ cases the properties found

test.serial('a snapshot holding a directory whose size field is not 0 is answered (not left hanging), stored and pulled', async (t) => {
  const tar = await buildTar([{ name: 'd/', type: 'directory' }, { name: 'd/f', body: seededBytes(7, 513) }]);
  tar.write('00000002000\0', 124, 'latin1');
  tar.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of tar.subarray(0, 512)) sum += b;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const reply = await put(tar, 'fuzz/regression', 'dir-size');
  t.is(reply.status, 201, JSON.stringify(reply.json));
  const { target } = await arena();
  const run = await pull('fuzz/regression', 'dir-size', target);
  t.is(run.code, 0, run.stderr);
  t.true((await stat(join(target, 'd/f'))).size === 513);
});

test.serial('an archive whose later entry replaces a directory holding entries is refused on push, naming the entry, and leaves nothing', async (t) => {
  const tar = await buildTar([{ name: 'y/', type: 'directory' }, { name: 'y/a', type: 'fifo' }, { name: 'y', type: 'symlink', linkname: '.' }]);
  const reply = await put(tar, 'fuzz/regression', 'not-a-tree');
  t.is(reply.status, 400);
  t.is(reply.json?.errors?.[0]?.code, 'ARCHIVE_INVALID');
  t.regex(String(reply.json?.errors?.[0]?.message), /entry "y": it would replace a directory that holds earlier entries/);
  t.is((await fetch(api('fuzz/regression/tags/not-a-tree'))).status, 404);
});

test.serial('volreg push keeps a fifo and its hard link as one inode, which pull restores', async (t) => {
  // as fast-check shrank it: a fifo "-" and a hard link "--" to it
  const source = await mkdtemp(join(work, 'push-'));
  await materializeTree(source, [
    { kind: 'fifo', parent: 0, name: '-', mode: 0o644, mtime: 0 },
    { kind: 'hardlink', parent: 0, name: '--', of: 0 },
  ]);
  const pushed = await runVolreg(['push', '-q', '--compression', 'none', source, 'fuzz/regression:fifo-links'], { url: server.url, cwd: work });
  t.is(pushed.code, 0, pushed.stderr);
  const { target } = await arena();
  const run = await pull('fuzz/regression', 'fifo-links', target);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(treeDifferences(await describeFull(target), await describeFull(source)), []);
  t.is((await stat(join(target, '--'))).ino, (await stat(join(target, '-'))).ino);
});
