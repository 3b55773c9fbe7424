import test from 'ava';
import { configBlob, ociManifest, randomBlob, schema1Unsigned } from '../helpers/manifest-fixtures.ts';
import { errorCode, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** GET /v2/<name>/tags/list: sorting, n/last pagination with Link, errors, hostile parameters. */

let server: TestServer;
let url: string;
test.before(async () => {
  server = await startTestServer({ label: 'http_tags' });
  url = server.url;
});
test.after.always(async () => {
  await server?.close();
});

/** A repository holding one manifest under every tag in `tags`. */
async function repoWithTags(tags: string[], opts: { schema1Too?: string[] } = {}): Promise<string> {
  const repo = repoName('tags');
  const config = configBlob();
  const layer = randomBlob();
  await pushBlobs(url, repo, [config, layer]);
  const m = ociManifest({ config, layers: [layer] });
  for (const tag of tags) if ((await putManifest(url, repo, tag, m)).status !== 201) throw new Error('push failed');
  for (const tag of opts.schema1Too ?? []) {
    const s1 = schema1Unsigned({ name: repo, tag, layers: [layer] });
    if ((await putManifest(url, repo, tag, s1)).status !== 201) throw new Error('push failed');
  }
  return repo;
}

const list = (repo: string, query = '') => request(url, `/v2/${repo}/tags/list${query}`);

test('tags are listed lexically (byte order), each once, with the repository name', async (t) => {
  const names = ['latest', 'v1.10', 'v1.9', 'V2', '_old', '1.0', 'a-b', 'a.b', 'a_b'];
  const repo = await repoWithTags(names, { schema1Too: ['latest', 'v1.9'] });
  const r = await list(repo);
  t.is(r.status, 200);
  t.regex(String(r.headers['content-type']), /^application\/json/);
  t.deepEqual(r.json(), { name: repo, tags: [...names].sort() });
  t.is(r.headers.link, undefined);
});

test('n and last paginate with a Link header until the end', async (t) => {
  const names = Array.from({ length: 23 }, (_, i) => `t${String(i).padStart(3, '0')}`);
  const repo = await repoWithTags(names, { schema1Too: ['t001', 't004', 't005'] });
  const seen: string[] = [];
  let next: string | undefined = `/v2/${repo}/tags/list?n=5`;
  let pages = 0;
  while (next) {
    const r = await request(url, next);
    t.is(r.status, 200);
    const body = r.json<{ tags: string[] }>();
    seen.push(...body.tags);
    pages++;
    const link = r.headers.link as string | undefined;
    if (link) {
      const m = /^<([^>]+)>; rel="next"$/.exec(link);
      t.truthy(m, link);
      t.is(body.tags.length, 5, 'a page with a Link is full');
      next = m![1];
      t.true(next!.startsWith(`/v2/${repo}/tags/list?n=5&last=`));
    } else {
      next = undefined;
    }
  }
  t.deepEqual(seen, names);
  t.is(pages, 5);

  // last alone: everything after it
  t.deepEqual((await list(repo, '?last=t019')).json<{ tags: string[] }>().tags, ['t020', 't021', 't022']);
  // last that is not a tag of the repository still orders correctly
  t.deepEqual((await list(repo, '?n=2&last=t0105')).json<{ tags: string[] }>().tags, ['t011', 't012']);
  // n larger than what is left: no Link
  const tail = await list(repo, '?n=50&last=t020');
  t.deepEqual(tail.json<{ tags: string[] }>().tags, ['t021', 't022']);
  t.is(tail.headers.link, undefined);
  // exactly the number left: no Link either
  t.is((await list(repo, '?n=2&last=t020')).headers.link, undefined);
});

test('n=0 gives an empty list and no Link', async (t) => {
  const repo = await repoWithTags(['a', 'b']);
  const r = await list(repo, '?n=0');
  t.is(r.status, 200);
  t.deepEqual(r.json(), { name: repo, tags: [] });
  t.is(r.headers.link, undefined);
});

test('an unknown repository is 404 NAME_UNKNOWN; a repository without tags lists none', async (t) => {
  const r = await list(repoName('nobody'));
  t.is(r.status, 404);
  t.is(errorCode(r), 'NAME_UNKNOWN');

  const repo = await repoWithTags(['only']);
  t.is((await request(url, `/v2/${repo}/manifests/only`, { method: 'DELETE' })).status, 202);
  const empty = await list(repo);
  t.is(empty.status, 200);
  t.deepEqual(empty.json(), { name: repo, tags: [] });
});

test('an n of any size is served, in pages of at most 1000', async (t) => {
  const repo = await repoWithTags(['a', 'b']);
  for (const q of ['?n=99999999999999999999', '?n=1001', `?n=${'9'.repeat(400)}`]) {
    const r = await list(repo, q);
    t.is(r.status, 200, q);
    t.deepEqual(r.json<{ tags: string[] }>().tags, ['a', 'b'], q);
    t.is(r.headers.link, undefined, q);
  }
});

test('bad n and last are refused with the OCI codes', async (t) => {
  const repo = await repoWithTags(['a']);
  for (const q of ['?n=-1', '?n=abc', '?n=1.5', '?n=', '?n=1e3', '?n=1&n=2']) {
    const r = await list(repo, q);
    t.is(r.status, 400, q);
    t.true(['PAGINATION_NUMBER_INVALID', 'BAD_REQUEST'].includes(errorCode(r)!), q);
  }
  for (const q of ['?last=..%2F..', '?last=-x', `?last=${'a'.repeat(200)}`, '?last=%00']) {
    const r = await list(repo, q);
    t.is(r.status, 400, q);
    t.is(errorCode(r), 'TAG_INVALID', q);
  }
  const bad = await request(url, '/v2/BAD/tags/list');
  t.is(bad.status, 400);
  t.is(errorCode(bad), 'NAME_INVALID');
});

test('a huge n is served in pages of at most 1000 with a Link', async (t) => {
  const repo = await repoWithTags(['a', 'b', 'c']);
  const r = await list(repo, '?n=100000');
  t.is(r.status, 200);
  t.deepEqual(r.json<{ tags: string[] }>().tags, ['a', 'b', 'c']);
  t.is(r.headers.link, undefined);
});

test('names with slashes are listed under their full name', async (t) => {
  const repo = `deep/${repoName('nested')}/x`;
  const config = configBlob();
  await pushBlobs(url, repo, [config]);
  t.is((await putManifest(url, repo, 'v1', ociManifest({ config, layers: [] }))).status, 201);
  const r = await list(repo);
  t.deepEqual(r.json(), { name: repo, tags: ['v1'] });
});

test('HEAD is served wherever GET is: the same status and headers, no body (tags/list, _catalog, referrers, /api/v1 lists)', async (t) => {
  const repo = await repoWithTags(['a', 'b', 'c']);
  const digest = `sha256:${'0'.repeat(64)}`;
  for (const path of [`/v2/${repo}/tags/list?n=2`, '/v2/_catalog?n=1', `/v2/${repo}/referrers/${digest}`, '/api/v1/volumes', `/api/v1/volumes/${repo}/tags`]) {
    const get = await request(url, path);
    const head = await request(url, path, { method: 'HEAD' });
    t.is(get.status, 200, path);
    t.is(head.status, 200, path);
    t.is(head.body.length, 0, path);
    t.is(head.headers['content-type'], get.headers['content-type'], path);
    t.is(head.headers['content-length'], String(get.body.length), path);
    t.is(head.headers.link, get.headers.link, path);
  }
  const unknown = await request(url, '/v2/no/such/repo/tags/list', { method: 'HEAD' });
  t.is(unknown.status, 404);
  t.is(unknown.body.length, 0);
  const refused = await request(url, '/v2/_catalog', { method: 'DELETE' });
  t.is(refused.status, 405);
  t.is(refused.headers.allow, 'GET, HEAD');
});

// MongoDB answers a distinct of more than 16 MB with an error (17217): a repository with more
// names than that is listed from a cursor instead, whole and by pages.
test('a repository whose tag names pass 16 MB is listed whole and by pages', async (t) => {
  const repo = await repoWithTags(['first']);
  const [unit] = await server.db.collection('units_docker_tag').find({ repo_id: repo, name: 'first' }).toArray();
  const pad = 'x'.repeat(120);
  const names = Array.from({ length: 125_000 }, (_, i) => `n${String(i).padStart(6, '0')}${pad}`);
  const tags = server.db.collection('units_docker_tag');
  for (let i = 0; i < names.length; i += 10_000) {
    await tags.insertMany(names.slice(i, i + 10_000).map((name) => ({ ...unit, _id: `${name.slice(0, 7)}-${repo}` as never, name })));
  }
  const whole = await list(repo);
  t.is(whole.status, 200);
  const listed = (whole.json() as { tags: string[] }).tags;
  t.is(listed.length, names.length + 1);
  t.is(listed[0], 'first');
  t.is(listed[1], names[0]);
  t.is(listed[listed.length - 1], names[names.length - 1]);
  const page = await list(repo, `?n=3&last=${names[99_999]}`);
  t.is(page.status, 200);
  t.deepEqual((page.json() as { tags: string[] }).tags, names.slice(100_000, 100_003));
});
