import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * `volreg ls` as a retention job pages through a volume longer than one page: the table says
 * that more remain, and `--after` carries on from a page's position while snapshots are deleted
 * (an --offset count would skip as many as were deleted before it).
 */
let server: TestServer;
let work = '';

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-ls-paging' });
  work = await mkdtemp(join(tmpdir(), 'volreg-ls-paging-'));
  for (let i = 0; i < 7; i++) {
    const tar = await buildTar([{ name: 'f', body: `day ${i}` }]);
    const r = await fetch(`${server.url}/api/v1/volumes/paging/vol/tags/d${i}`, { method: 'PUT', body: new Uint8Array(tar) });
    if (r.status !== 201) throw new Error(`push d${i}: ${r.status} ${await r.text()}`);
  }
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

const volreg = (args: string[]) => runVolreg(args, { url: server.url, cwd: work });
const tagsOf = (table: string): string[] => table.trim().split('\n').slice(1).map((l) => l.split(/\s+/)[0]!);

test('ls: a page that is not the whole list says so, and --after goes on from it while snapshots are deleted', async (t) => {
  const first = await volreg(['ls', 'paging/vol', '--limit', '3']);
  t.is(first.code, 0, first.stderr);
  t.deepEqual(tagsOf(first.stdout), ['d6', 'd5', 'd4']);
  const note = /^volreg ls: 3 of 7 shown; the next page: --after (\S+)$/m.exec(first.stderr);
  t.truthy(note, first.stderr);

  // the retention job deletes what the first page showed before it reads the next
  for (const tag of ['d6', 'd5', 'd4']) t.is((await volreg(['rm', '-q', `paging/vol:${tag}`])).code, 0);
  const second = await volreg(['ls', 'paging/vol', '--limit', '3', '--after', note![1]!]);
  t.is(second.code, 0, second.stderr);
  t.deepEqual(tagsOf(second.stdout), ['d3', 'd2', 'd1'], 'nothing skipped');
  const json = JSON.parse((await volreg(['ls', 'paging/vol', '--json', '--limit', '3', '--after', note![1]!])).stdout) as { next: string | null };
  const last = await volreg(['ls', 'paging/vol', '--limit', '3', '--after', json.next!]);
  t.deepEqual(tagsOf(last.stdout), ['d0']);
  t.is(last.stderr, '', 'the last page has no note');

  const volumes = await volreg(['ls', '--limit', '1', '--after', 'a/b']);
  t.is(volumes.code, 0, volumes.stderr);
  t.deepEqual(tagsOf(volumes.stdout), ['paging/vol']);
});

test('ls: --after that is not a position, or with --offset, is bad usage (exit 2)', async (t) => {
  const bad = await volreg(['ls', 'paging/vol', '--after', 'yesterday']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--after wants the "next" a previous page/);
  t.is((await volreg(['ls', 'paging/vol', '--after', '1700000000000.d1', '--offset', '1'])).code, 2);
});
