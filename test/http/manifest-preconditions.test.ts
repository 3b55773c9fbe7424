import test from 'ava';
import { configBlob, ociManifest, randomBlob, schema1Unsigned, MT, type Built } from '../helpers/manifest-fixtures.ts';
import { errorCode, getManifest, pushBlobs, repoName, request, type Reply } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * If-Match and If-None-Match on manifest PUT and DELETE (RFC 9110 section 13.1): a client moves
 * or deletes a tag only if it still points where the client saw it (its ETag, `"<digest>"`),
 * or creates it only if nobody has, and clients racing for one tag cannot overwrite each
 * other's push unseen. A refused request is 412 and changes nothing.
 */

let server: TestServer;
test.before(async () => {
  server = await startTestServer({ label: 'http_manifest_preconditions' });
});
test.after.always(async () => {
  await server?.close();
});

/** Distinct manifests over the same two blobs, pushed to `repo` first. */
async function manifestsIn(repo: string, count: number): Promise<Built[]> {
  const config = configBlob();
  const layer = randomBlob(256);
  await pushBlobs(server.url, repo, [config, layer]);
  return Array.from({ length: count }, (_, i) => ociManifest({ config, layers: [layer], annotations: { n: String(i) } }));
}

function put(repo: string, reference: string, m: Built, headers: Record<string, string> = {}): Promise<Reply> {
  return request(server.url, `/v2/${repo}/manifests/${reference}`, { method: 'PUT', body: m.bytes, headers: { 'Content-Type': m.mediaType, ...headers } });
}

const del = (repo: string, reference: string, headers: Record<string, string>) => request(server.url, `/v2/${repo}/manifests/${reference}`, { method: 'DELETE', headers });
const tagDigest = async (repo: string, tag: string): Promise<string | undefined> => {
  const r = await getManifest(server.url, repo, tag, MT.ociManifest);
  return r.status === 200 ? String(r.headers['docker-content-digest']) : undefined;
};
const held = async (repo: string, m: Built): Promise<boolean> => (await getManifest(server.url, repo, m.digest, MT.ociManifest)).status === 200;
const etag = (m: Built): string => `"${m.digest}"`;

test('If-None-Match: * creates a tag only where there is none; the refused push leaves nothing', async (t) => {
  const repo = repoName('pre-create');
  const [a, b] = await manifestsIn(repo, 2);
  t.is((await put(repo, 'v1', a!, { 'If-None-Match': '*' })).status, 201);
  const refused = await put(repo, 'v1', b!, { 'If-None-Match': '*' });
  t.is(refused.status, 412);
  t.is(errorCode(refused), 'PRECONDITION_FAILED');
  t.is(await tagDigest(repo, 'v1'), a!.digest, 'the tag still points at the first push');
  t.false(await held(repo, b!), 'the refused manifest is not in the repository');
});

test('If-Match moves a tag only from where the client saw it (strong comparison); If-None-Match with a tag refuses that one', async (t) => {
  const repo = repoName('pre-move');
  const [a, b, c] = await manifestsIn(repo, 3);
  t.is((await put(repo, 'v1', a!)).status, 201);
  t.is((await put(repo, 'v1', b!, { 'If-Match': `"sha256:${'0'.repeat(64)}", ${etag(a!)}` })).status, 201, 'a list holding the current tag');
  t.is(await tagDigest(repo, 'v1'), b!.digest);

  t.is((await put(repo, 'v1', c!, { 'If-Match': etag(a!) })).status, 412, 'the client saw an older version');
  t.is((await put(repo, 'v1', c!, { 'If-Match': `W/${etag(b!)}` })).status, 412, 'a weak tag never matches If-Match');
  t.is((await put(repo, 'v1', c!, { 'If-None-Match': etag(b!) })).status, 412);
  t.is(await tagDigest(repo, 'v1'), b!.digest);
  t.false(await held(repo, c!));

  t.is((await put(repo, 'v1', c!, { 'If-None-Match': etag(a!) })).status, 201, 'not at a: moved');
  t.is(await tagDigest(repo, 'v1'), c!.digest);
  t.is((await put(repo, 'new', a!, { 'If-Match': '*' })).status, 412, 'If-Match: * needs the tag to exist');
  t.is(await tagDigest(repo, 'new'), undefined);
  t.is((await put(repo, 'v1', a!, { 'If-Match': '*' })).status, 201);
});

test('racing pushes to one tag: with If-None-Match: * one creates it, with If-Match of the same version one moves it; the others get 412', async (t) => {
  const repo = repoName('pre-race');
  const ms = await manifestsIn(repo, 12);
  const created = await Promise.all(ms.map((m) => put(repo, 'race', m, { 'If-None-Match': '*' })));
  const winners = ms.filter((_, i) => created[i]!.status === 201);
  t.is(winners.length, 1, created.map((r) => r.status).join(','));
  t.true(created.every((r) => r.status === 201 || r.status === 412));
  t.is(await tagDigest(repo, 'race'), winners[0]!.digest);

  const seen = etag(winners[0]!);
  const others = ms.filter((m) => m !== winners[0]);
  const moved = await Promise.all(others.map((m) => put(repo, 'race', m, { 'If-Match': seen })));
  const movers = others.filter((_, i) => moved[i]!.status === 201);
  t.is(movers.length, 1, moved.map((r) => r.status).join(','));
  t.is(await tagDigest(repo, 'race'), movers[0]!.digest, 'no push overwrote the winner unseen');
  for (const m of others) if (m !== movers[0]) t.false(await held(repo, m), 'refused manifests are not held');
});

test('the precondition of a push is about its own schema version: a schema 1 unit of the tag does not make a schema 2 push exist', async (t) => {
  const repo = repoName('pre-schema');
  const [a] = await manifestsIn(repo, 1);
  const layer = randomBlob(128);
  await pushBlobs(server.url, repo, [layer]);
  const v1 = schema1Unsigned({ name: repo, tag: 'both', layers: [layer] });
  t.is((await put(repo, 'both', v1)).status, 201);
  t.is((await put(repo, 'both', a!, { 'If-None-Match': '*' })).status, 201);
  t.is((await put(repo, 'both', a!, { 'If-None-Match': '*' })).status, 412, 'now it exists');
});

test('DELETE: by tag only where If-Match holds (else 412, tag kept); by digest only if the digest matches', async (t) => {
  const repo = repoName('pre-delete');
  const [a, b] = await manifestsIn(repo, 2);
  t.is((await put(repo, 'v1', a!)).status, 201);
  const refused = await del(repo, 'v1', { 'If-Match': etag(b!) });
  t.is(refused.status, 412);
  t.is(errorCode(refused), 'PRECONDITION_FAILED');
  t.is(await tagDigest(repo, 'v1'), a!.digest);
  t.is((await del(repo, 'v1', { 'If-None-Match': '*' })).status, 412, 'If-None-Match: * fails where the tag exists');
  t.is((await del(repo, 'v1', { 'If-Match': etag(a!) })).status, 202);
  t.is(await tagDigest(repo, 'v1'), undefined);
  t.is((await del(repo, 'v1', { 'If-Match': etag(a!) })).status, 404, 'a tag that is gone is 404, whatever the condition');

  t.is((await del(repo, a!.digest, { 'If-Match': etag(b!) })).status, 412);
  t.true(await held(repo, a!));
  t.is((await del(repo, a!.digest, { 'If-Match': etag(a!) })).status, 202);
  t.false(await held(repo, a!));
});
