import test from 'ava';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { isDeepStrictEqual } from 'node:util';
import { request } from '../helpers/oci-client.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { isErrorEnvelope, rawRequest } from '../helpers/raw-request.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Generated /api/v1 requests: listing query strings (limit, offset, after, host, since, until:
 * empty, repeated, huge, negative, not numbers, percent-encodings that are not UTF-8, dates in
 * odd formats), volume names and tags at and past the grammar's limits, and the headers of a
 * push. Every answer is 2xx, or a 4xx with the error JSON, never a 5xx; the server stays
 * healthy; a refused request changes nothing.
 */

const FIXED = 'fuzzv/fixed';
let server: TestServer;
let url: string;
let tar = Buffer.alloc(0);
let tgz = Buffer.alloc(0);

test.before(async () => {
  server = await startTestServer({ label: 'fuzz_volume_requests' });
  url = server.url;
  tar = execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'fuzz-volume-requests.test.ts']);
  tgz = execFileSync('gzip', ['-n', '-c'], { input: tar });
  for (const [tag, host] of [['t1', 'web-01'], ['t2', 'db-01'], ['t3', 'web-01']] as const) {
    const r = await request(url, `/api/v1/volumes/${FIXED}/tags/${tag}?host=${host}`, { method: 'PUT', body: tar });
    if (r.status !== 201) throw new Error(`seed push: ${r.status} ${r.body.toString('utf8')}`);
  }
});
test.after.always(async () => {
  await server?.close();
});

/** Everything a request could change: the volume list and every listed volume's snapshots (without the last verification, which a verify records). */
async function everything(): Promise<unknown> {
  const list = await request(url, '/api/v1/volumes?limit=1000');
  const volumes = list.json<{ volumes: Array<{ volume: string }> }>().volumes.map((v) => v.volume);
  const snapshots = await Promise.all(
    volumes.map(async (v) => {
      const r = await request(url, `/api/v1/volumes/${v}/tags?limit=1000`);
      return r.json<{ snapshots: Array<Record<string, unknown>> }>().snapshots.map(({ lastVerify: _, ...rest }) => rest);
    }),
  );
  return { volumes, snapshots };
}

async function healthy(what: string): Promise<void> {
  const r = await request(url, '/api/v1/volumes?limit=1');
  if (r.status !== 200) throw new Error(`unhealthy after ${what}: ${r.status}`);
}

// ---- listing query strings ------------------------------------------------------------------

const NUMBERS = ['', '0', '1', '2', '1000', '1001', '-1', '+1', '1.5', '1e3', '0x10', ' 1', '01', '99999999999999999999999', '9'.repeat(400), 'NaN', 'Infinity', '%00', '%FF', '%C0%AF', '%E2%82', 'é'];
const POSITIONS = ['', '0.t1', '-1.t1', '1714557600000.t1', '9999999999999999.t1', '99999999999999999.t1', '8640000000000001.t1', '-8640000000000001.t1', '.t1', '1.', '1.t1.t2', '1..', 'fuzzv/fixed', 'fuzzv', 'FUZZV', 'a//b', `a/${'b'.repeat(253)}`, `a/${'b'.repeat(254)}`, '1.%FF', '%FF', '1.' + 'a'.repeat(128), '1.' + 'a'.repeat(129), '1.-x', 'zzzz'];
const TIMES = ['', '0', '-1', '1714557600', '999999999999', '9999999999999', '2024-05-01', '2024-05-01T10:00:00Z', '2024-05-01T10:00:00+02:00', '2024-05-01T10:00:00 02:00', '2024-05-01T10:00:00%2B02:00', '2024-05-01T10:00:00-24:00', '2024-05-01T10:00:00+23:59', '2024-05-01T10:00:00.123456789Z', '2024-05-01T10:00:60Z', '2024-05-01T24:00:00Z', '2024-02-29', '2023-02-29', '2024-13-01', '2024-00-10', '0000-01-01', '0001-01-01', '0099-12-31', '9999-12-31T23:59:59Z', '+275760-09-13', '2024-W18-3', '2024-122', 'now', 'Wed, 01 May 2024 10:00:00 GMT', '1714557600.5', '1e9', '%FF', '%C3%A9'];
const HOSTS = ['', 'web-01', 'WEB-01', 'db-01', '-x', 'a'.repeat(253), 'a'.repeat(254), 'a b', 'a%20b', '%FF', 'é', 'x.'];

const listingPairArb: fc.Arbitrary<[string, string]> = fc.oneof(
  fc.tuple(fc.constantFrom('limit', 'offset'), fc.constantFrom(...NUMBERS)),
  fc.tuple(fc.constant('after'), fc.constantFrom(...POSITIONS)),
  fc.tuple(fc.constantFrom('since', 'until'), fc.constantFrom(...TIMES)),
  fc.tuple(fc.constant('host'), fc.constantFrom(...HOSTS)),
  fc.tuple(fc.constantFrom('label', 'tag', '', '%FF', 'limit[]', 'LIMIT'), fc.constantFrom('', 'env=prod', '1')),
);

const LISTINGS = ['/api/v1/volumes', `/api/v1/volumes/${FIXED}/tags`, '/api/v1/volumes/fuzzv/nothing/tags'];

test('a generated listing query is answered 200 or 400 with the error JSON, never a 5xx', async (t) => {
  const property = fc.asyncProperty(fc.constantFrom(...LISTINGS), fc.array(listingPairArb, { maxLength: 4 }), async (listing, pairs) => {
    const query = pairs.map(([k, v]) => `${k}=${v}`).join('&');
    const path = `${listing}${query ? `?${query}` : ''}`.replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch));
    const r = await rawRequest(url, 'GET', path, {}, Buffer.alloc(0));
    const what = `GET ${path}: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`;
    if (r.status !== 200 && !(r.status === 400 && isErrorEnvelope(r.body)) && !(r.status === 414 && isErrorEnvelope(r.body))) throw new Error(`not 200 or a 400 with the error JSON: ${what}`);
    if (r.status === 200) {
      const body = JSON.parse(r.body.toString('utf8')) as { total: unknown; limit: unknown; volumes?: unknown[]; snapshots?: unknown[] };
      const items = body.volumes ?? body.snapshots;
      if (!Array.isArray(items) || typeof body.total !== 'number' || typeof body.limit !== 'number' || items.length > body.limit) throw new Error(`not a page: ${what}`);
    }
    await healthy(what);
  });
  await t.notThrowsAsync(fc.assert(property, { seed: fuzzSeed(4242), numRuns: fuzzRuns(300), includeErrorInReport: true }));
});

test('since and until in the years 0000 to 0099 are dates like any other, before every snapshot', async (t) => {
  const tags = async (query: string): Promise<unknown> => {
    const r = await request(url, `/api/v1/volumes/${FIXED}/tags?${query}`);
    t.is(r.status, 200, `${query}: ${r.body.toString('utf8')}`);
    return r.json<{ snapshots: Array<{ tag: string }> }>().snapshots.map((s) => s.tag).sort();
  };
  t.deepEqual(await tags('since=0050-01-01'), ['t1', 't2', 't3']);
  t.deepEqual(await tags('until=0099-12-31T23:59:59Z'), []);
  t.deepEqual(await tags('since=0000-01-01&host=web-01'), ['t1', 't3']);
});

// ---- names, tags and the headers of a push -------------------------------------------------

const NAMES = [
  'fuzzv/scratch',
  'fuzzv/scratch',
  FIXED,
  'fuzzv%2Fscratch',
  'fuzzv/scratch/%2e%2e/fixed',
  'fuzzv/./fixed',
  'fuzzv//fixed',
  'Fuzzv/Scratch',
  'fuzzv/scr%C3%A9tch',
  'fuzzv/scratch%00',
  'fuzzv/scratch%FF',
  'fuzzv/tags',
  'fuzzv/tags/x',
  'tags',
  'a',
  `a/${'b'.repeat(253)}`,
  `a/${'b'.repeat(254)}`,
  `${'a'.repeat(64)}/${'b'.repeat(64)}/${'c'.repeat(64)}/${'d'.repeat(62)}`,
  'a__b--c.d/e',
  'a___b',
  '-a',
  'a.',
  'a/-b',
];
const TAG_NAMES = ['t1', 't9', 'T9', '_x', 'x'.repeat(128), 'x'.repeat(129), '.x', '-x', 'x%2Fy', '%2e%2e', 'x%00', 'x%FF', 'caf%C3%A9', 'tags', 'content'];
const ENDINGS = ['', '', '/content', '/content.sha256', '/verify', '/content/x'];
const PUT_HEADERS: Record<string, string[]> = {
  'X-Volreg-Host': ['web-01', '', ' ', '-x', 'a'.repeat(253), 'a'.repeat(254), 'caf\xe9', '\xc3\xa9', 'a,b', 'a b'],
  'X-Volreg-Label': ['env=prod', 'env', '=x', 'env=', 'env=a,b=c', 'a'.repeat(128) + '=x', 'a'.repeat(129) + '=x', 'k=' + 'v'.repeat(5000), Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(','), 'k=caf\xc3\xa9', 'k=\xff', 'bad key=x', ',,,'],
  Digest: ['sha-256=x', 'sha-256=', 'sha-512=!!!', 'md5=abc', 'sha-256=a, sha-256=b', 'SHA-256=' + 'A'.repeat(44), 'sha-256=' + 'A'.repeat(43) + '='],
  'If-Match': ['*', '"sha256:' + '0'.repeat(64) + '"', 'W/"x"', 'garbage', '"', '"a", "b"', ''],
  'If-None-Match': ['*', '"sha256:' + '0'.repeat(64) + '"', 'W/"x"', 'garbage', '"', ''],
  'Content-Type': ['application/x-tar', 'application/gzip', 'application/json', '', ';', 'multipart/form-data; boundary=x'],
  Range: ['bytes=0-0', 'bytes=5-1', 'bytes=0-9,100-109', 'bytes=99999999999999999999-', 'items=0-1', 'bytes='],
  'If-Range': ['"sha256:' + '0'.repeat(64) + '"', 'W/"x"', 'Wed, 21 Oct 2015 07:28:00 GMT'],
  Expect: ['100-continue', 'nonsense'],
};
const PUT_QUERY = ['', 'host=web-01', 'host=', 'host=%FF', 'label=env=prod', 'label=%FF=x', 'label=a&label=b', 'digest=sha256:' + '0'.repeat(64), 'digest=', 'digest=md5:abc', 'digest=sha256:' + 'A'.repeat(64), 'digest=a&digest=b', 'limit=1'];

const headersArb = fc.uniqueArray(fc.constantFrom(...Object.keys(PUT_HEADERS)), { maxLength: 4 }).chain((names) =>
  fc.tuple(...names.map((n) => fc.constantFrom(...PUT_HEADERS[n]!).map((v) => [n, v] as const))).map((pairs) => Object.fromEntries(pairs) as Record<string, string>),
);

const requestArb = fc.record({
  method: fc.constantFrom('PUT', 'PUT', 'GET', 'HEAD', 'DELETE', 'POST'),
  name: fc.constantFrom(...NAMES),
  tag: fc.constantFrom(...TAG_NAMES),
  ending: fc.constantFrom(...ENDINGS),
  query: fc.constantFrom(...PUT_QUERY),
  headers: headersArb,
  body: fc.constantFrom('tar', 'tgz', 'empty', 'garbage', 'half'),
});

test('a generated request on a volume or tag is never a 5xx, a 4xx carries the error JSON, and a refused one changes nothing', async (t) => {
  const property = fc.asyncProperty(requestArb, async (c) => {
    const before = await everything();
    const body = { tar, tgz, empty: Buffer.alloc(0), garbage: Buffer.from('not a tar at all'), half: tar.subarray(0, 700) }[c.body];
    const path = `/api/v1/volumes/${c.name}/tags/${c.tag}${c.ending}${c.query ? `?${c.query}` : ''}`;
    const send = c.method === 'PUT' || c.method === 'POST';
    const r = await rawRequest(url, c.method, path, c.headers, send ? body : Buffer.alloc(0));
    const what = `${c.method} ${path} ${JSON.stringify(c.headers)} ${c.body}: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`;
    if (r.status >= 500 || r.status < 200) throw new Error(`server error: ${what}`);
    if (r.status >= 400 && c.method !== 'HEAD' && !isErrorEnvelope(r.body)) throw new Error(`no error JSON: ${what}`);
    await healthy(what);
    if (r.status >= 400 && !isDeepStrictEqual(await everything(), before)) throw new Error(`a refused request changed something: ${what}`);
  });
  await t.notThrowsAsync(fc.assert(property, { seed: fuzzSeed(9191), numRuns: fuzzRuns(200), includeErrorInReport: true }));
});
