import { execFileSync } from 'node:child_process';
import test, { type ExecutionContext } from 'ava';
import { pushSnapshotCreatedAt } from '../helpers/backup-ages.ts';
import { request, type Reply } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Paging through /api/v1 listings (a volume's snapshots, newest first, and the volume list)
 * while other clients push and delete: a page starts after the entry the previous one ended
 * on, so an entry that exists for the whole listing is listed exactly once, whatever was
 * added or removed meanwhile, even among snapshots created in the same millisecond.
 */

let server: TestServer;
let tarBytes = Buffer.alloc(0);
test.before(async () => {
  server = await startTestServer({ label: 'http_volume_list_pages' });
  tarBytes = execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'volume-list-pages.test.ts']);
});
test.after.always(async () => {
  await server?.close();
});


async function pushSnapshot(volume: string, tag: string): Promise<void> {
  const r = await request(server.url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'PUT', body: tarBytes });
  if (r.status !== 201) throw new Error(`push ${volume}:${tag}: ${r.status} ${r.body.toString('utf8')}`);
}

async function deleteSnapshot(volume: string, tag: string): Promise<void> {
  const r = await request(server.url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'DELETE' });
  if (r.status !== 200) throw new Error(`delete ${volume}:${tag}: ${r.status}`);
}

/**
 * Snapshots pushed through /v2 whose manifest says they were all created at the same instant:
 * ties on `created`, made certain rather than left to the clock.
 */
async function pushSameInstant(volume: string, tags: string[], created: string): Promise<void> {
  for (const tag of tags) await pushSnapshotCreatedAt(server.url, volume, tag, new Date(created), tarBytes);
}

function nextPath(t: ExecutionContext, r: Reply): string | undefined {
  const link = r.headers.link as string | undefined;
  if (link === undefined) return undefined;
  const m = /^<(\/[^>]*)>; rel="next"$/.exec(link);
  t.truthy(m, `a relative next link: ${link}`);
  return m![1];
}

/** Follows Link from `first`, calling `between` after each page; every item seen, in order. */
async function pageThrough<T>(t: ExecutionContext, first: string, items: (body: unknown) => T[], between: (page: number, seen: T[]) => Promise<void>): Promise<T[]> {
  const seen: T[] = [];
  let next: string | undefined = first;
  for (let page = 0; next !== undefined; page++) {
    t.true(page < 100, 'the pages end');
    const r = await request(server.url, next);
    t.is(r.status, 200, next);
    seen.push(...items(r.json()));
    next = nextPath(t, r);
    if (next !== undefined) await between(page, seen);
  }
  return seen;
}

function countOf<T>(seen: T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const s of seen) counts.set(s, (counts.get(s) ?? 0) + 1);
  return counts;
}

const tagsOf = (body: unknown): string[] => (body as { snapshots: Array<{ tag: string }> }).snapshots.map((s) => s.tag);

test('a volume\'s snapshots page newest first: each once while others push and delete, ties within a millisecond included', async (t) => {
  const volume = 'pages/snapshots';
  // many pushed at once (several land in the same millisecond), and a batch that certainly shares one
  const concurrent = Array.from({ length: 24 }, (_, i) => `c${String(i).padStart(2, '0')}`);
  await Promise.all(concurrent.map((tag) => pushSnapshot(volume, tag)));
  const tied = Array.from({ length: 12 }, (_, i) => `tie${String(i).padStart(2, '0')}`);
  await pushSameInstant(volume, tied, '2020-01-01T00:00:00.000Z');
  const all = tagsOf((await request(server.url, `/api/v1/volumes/${volume}/tags?limit=1000`)).json());
  t.is(all.length, concurrent.length + tied.length);

  const deleted = new Set<string>();
  let added = 0;
  const seen = await pageThrough(t, `/api/v1/volumes/${volume}/tags?limit=5`, tagsOf, async (page, soFar) => {
    if (page % 2 === 0) {
      // newer snapshots arrive: they sort before everything listed so far
      await pushSnapshot(volume, `new${added++}`);
      await pushSnapshot(volume, `new${added++}`);
      return;
    }
    // the entry the next page starts after goes away, and so does one not listed yet
    const last = soFar[soFar.length - 1]!;
    const ahead = all.find((tag) => !soFar.includes(tag) && !deleted.has(tag));
    for (const tag of [last, ...(ahead !== undefined ? [ahead] : [])]) {
      if (deleted.has(tag) || tag.startsWith('new')) continue;
      deleted.add(tag);
      await deleteSnapshot(volume, tag);
    }
  });
  t.true(added >= 5, 'several pages were read while the volume changed');
  const counts = countOf(seen);
  const twice = [...counts].filter(([, n]) => n > 1).map(([tag]) => tag);
  t.deepEqual(twice, [], 'no snapshot is listed twice');
  const kept = all.filter((tag) => !deleted.has(tag));
  t.deepEqual(kept.filter((tag) => !counts.has(tag)), [], 'every snapshot kept throughout is listed');
  // the listing is newest first, the tied ones in tag order at the end
  const listedKept = seen.filter((tag) => kept.includes(tag));
  t.deepEqual(listedKept, kept);
  t.deepEqual(listedKept.slice(-tied.filter((tag) => !deleted.has(tag)).length), tied.filter((tag) => !deleted.has(tag)));
});

test('the volume list pages by name: each volume once while volumes come and go', async (t) => {
  const stable = Array.from({ length: 10 }, (_, i) => `vl/stable-${String(i).padStart(2, '0')}`);
  for (const v of stable) await pushSnapshot(v, 'only');
  const doomed = ['vl/stable-03x', 'vl/stable-07x'];
  for (const v of doomed) await pushSnapshot(v, 'only');
  let added = 0;
  const seen = await pageThrough(
    t,
    '/api/v1/volumes?limit=3',
    (body) => (body as { volumes: Array<{ volume: string }> }).volumes.map((v) => v.volume),
    async (page, soFar) => {
      if (page % 2 === 0) {
        // volumes sorting before everything listed appear
        await pushSnapshot(`vl/a-${added++}`, 'only');
        await pushSnapshot(`vl/a-${added++}`, 'only');
        return;
      }
      // the volume the next page starts after loses its last snapshot, and so do ones not listed yet
      const last = soFar[soFar.length - 1]!;
      if (last.startsWith('vl/stable')) await deleteSnapshot(last, 'only').catch(() => undefined);
      for (const v of doomed) if (!soFar.includes(v)) await deleteSnapshot(v, 'only').catch(() => undefined);
    },
  );
  t.true(added >= 3);
  const counts = countOf(seen);
  t.deepEqual([...counts].filter(([, n]) => n > 1).map(([v]) => v), [], 'no volume is listed twice');
  t.deepEqual(stable.filter((v) => !counts.has(v)), [], 'every volume is listed');
  t.deepEqual(seen.filter((v) => stable.includes(v)), stable, 'in name order');
});

test('the next link is relative, keeps the filters, percent-encodes the position, and a position from elsewhere is refused', async (t) => {
  const volume = 'pages/link';
  await pushSameInstant(volume, ['a', 'b', 'c'], '2021-06-01T12:00:00.000Z');
  await request(server.url, `/api/v1/volumes/${volume}/tags?limit=1000`); // indexes them
  const first = await request(server.url, `/api/v1/volumes/${volume}/tags?limit=2&since=2021-01-01&offset=0`);
  t.deepEqual(tagsOf(first.json()), ['a', 'b']);
  const link = first.headers.link as string;
  const next = new URL(nextPath(t, first)!, 'http://x');
  t.is(next.pathname, `/api/v1/volumes/${volume}/tags`);
  t.is(next.searchParams.get('since'), '2021-01-01', 'the filter stays');
  t.is(next.searchParams.get('limit'), '2');
  t.is(next.searchParams.get('offset'), null, 'a position replaces the offset');
  const after = next.searchParams.get('after')!;
  t.truthy(after);
  t.is(first.json<{ next: string }>().next, after, 'the body names the same position');
  t.false(/[^A-Za-z0-9%&=._~/?-]/.test(/^<([^>]*)>/.exec(link)![1]!), `only unreserved characters and escapes in ${link}`);
  const second = await request(server.url, nextPath(t, first)!);
  t.deepEqual(tagsOf(second.json()), ['c']);
  t.is(second.headers.link, undefined);
  t.is(second.json<{ next: unknown }>().next, null);

  for (const q of ['after=garbage', 'after=', `after=${encodeURIComponent(after)}&after=${encodeURIComponent(after)}`, `after=${encodeURIComponent(after)}&offset=2`]) {
    const r = await request(server.url, `/api/v1/volumes/${volume}/tags?${q}`);
    t.is(r.status, 400, q);
    t.is(r.json<{ errors: Array<{ code: string }> }>().errors[0]!.code, 'BAD_REQUEST', q);
  }
  // a volume name's '/' is escaped in the volume list's link
  await pushSnapshot(`${volume}-2`, 'only');
  const volumesPage = await request(server.url, '/api/v1/volumes?limit=1');
  const volumePosition = volumesPage.json<{ volumes: Array<{ volume: string }> }>().volumes[0]!.volume;
  t.true(volumePosition.includes('/'));
  t.is(volumesPage.headers.link, `</api/v1/volumes?limit=1&after=${volumePosition.replaceAll('/', '%2F')}>; rel="next"`);
  for (const q of ['after=NOT%20A%20NAME', 'after=a&offset=1']) {
    const r = await request(server.url, `/api/v1/volumes?${q}`);
    t.is(r.status, 400, q);
  }
});

test('a time zone written with an unescaped + in the query (a space once decoded) is read as the + it was', async (t) => {
  const volume = 'pages/zone';
  await pushSameInstant(volume, ['old'], '2024-05-01T07:30:00.000Z');
  await pushSameInstant(volume, ['new'], '2024-05-01T08:30:00.000Z');
  const since = async (q: string): Promise<Reply> => request(server.url, `/api/v1/volumes/${volume}/tags?since=${q}`);
  // 10:00+02:00 is 08:00Z: only the later snapshot
  for (const q of ['2024-05-01T10:00:00+02:00', '2024-05-01T10:00:00%2B02:00', '2024-05-01T10:00:00+0200']) {
    const r = await since(q);
    t.is(r.status, 200, q);
    t.deepEqual(tagsOf(r.json()), ['new'], q);
  }
  // a space anywhere else is still no time
  t.is((await since('2024-05-01 10:00:00Z')).status, 400);
  t.is((await since('2024-05-01T10:00:00%2002:00%20')).status, 400);
});
