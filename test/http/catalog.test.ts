import test from 'ava';
import { configBlob, ociManifest } from '../helpers/manifest-fixtures.ts';
import { errorCode, pushBlobs, putManifest, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** GET /v2/_catalog: every repository once, byte order, n/last pagination with Link. */

let server: TestServer;
let url: string;
const repos = ['zeta', 'alpha', 'alpha/beta', 'alpha-beta', 'mid/deep/name', 'b0', 'a'];
test.before(async () => {
  server = await startTestServer({ label: 'http_catalog' });
  url = server.url;
  for (const repo of repos) {
    const config = configBlob();
    await pushBlobs(url, repo, [config]);
    const r = await putManifest(url, repo, 'latest', ociManifest({ config, layers: [] }));
    if (r.status !== 201) throw new Error(`push to ${repo} failed`);
  }
});
test.after.always(async () => {
  await server?.close();
});

const sorted = [...repos].sort();

test('the catalog lists every repository in byte order', async (t) => {
  const r = await request(url, '/v2/_catalog');
  t.is(r.status, 200);
  t.deepEqual(r.json(), { repositories: sorted });
  t.is(r.headers.link, undefined);
});

test('n and last paginate with a Link header', async (t) => {
  const seen: string[] = [];
  let next: string | undefined = '/v2/_catalog?n=3';
  let pages = 0;
  while (next) {
    const r = await request(url, next);
    t.is(r.status, 200);
    seen.push(...r.json<{ repositories: string[] }>().repositories);
    pages++;
    const link = r.headers.link as string | undefined;
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
  }
  t.deepEqual(seen, sorted);
  t.is(pages, Math.ceil(sorted.length / 3));
  t.deepEqual((await request(url, '/v2/_catalog?last=alpha-beta')).json<{ repositories: string[] }>().repositories, sorted.filter((n) => n > 'alpha-beta'));
  const zero = await request(url, '/v2/_catalog?n=0');
  t.deepEqual(zero.json(), { repositories: [] });
  t.is(zero.headers.link, undefined);
});

test('a Link last value with a slash is encoded and works', async (t) => {
  const r = await request(url, `/v2/_catalog?n=2&last=alpha`);
  t.deepEqual(r.json<{ repositories: string[] }>().repositories, ['alpha-beta', 'alpha/beta']);
  const link = r.headers.link as string;
  t.is(link, '</v2/_catalog?n=2&last=alpha%2Fbeta>; rel="next"');
  const next = await request(url, /^<([^>]+)>/.exec(link)![1]!);
  t.deepEqual(next.json<{ repositories: string[] }>().repositories, ['b0', 'mid/deep/name']);
});

test('bad pagination parameters are refused', async (t) => {
  for (const q of ['?n=-5', '?n=x', '?n=2&n=3']) {
    const r = await request(url, `/v2/_catalog${q}`);
    t.is(r.status, 400, q);
    t.true(['PAGINATION_NUMBER_INVALID', 'BAD_REQUEST'].includes(errorCode(r)!), q);
  }
  const r = await request(url, '/v2/_catalog?last=NOT..VALID');
  t.is(r.status, 400);
  t.is(errorCode(r), 'NAME_INVALID');
});

test('only GET is served', async (t) => {
  const r = await request(url, '/v2/_catalog', { method: 'DELETE' });
  t.is(r.status, 405);
});
