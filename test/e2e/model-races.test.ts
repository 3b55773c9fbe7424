import test from 'ava';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { MT } from '../helpers/manifest-fixtures.ts';
import { bodyWhen, errorCode, pushBlobs, putManifest, request, type Reply } from '../helpers/oci-client.ts';
import { BLOBS, MANIFESTS, type BlobName, type ManifestName } from '../helpers/model-content.ts';
import { byteOrder, RegistryModel, type RepoModel } from '../helpers/model-registry.ts';
import { serialOutcomes } from '../helpers/serial-orders.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Races the model-based test of /v2 found, kept as plain tests: each repeats the race enough
 * times that a wrong interleaving shows (it did in most tries before the fix).
 */

let server: TestServer;
test.before(async () => {
  server = await startTestServer({ label: 'model_races' });
});
test.after.always(async () => {
  await server?.close();
});

const TRIES = 20;

for (const name of ['ociA', 's1u'] as ManifestName[]) {
  test(`a push of ${name} to a tag racing a delete of it by digest ends as one order of the two leaves it: held and tagged, or neither`, async (t) => {
    const m = MANIFESTS[name];
    const outcomes: string[] = [];
    for (let i = 0; i < TRIES; i++) {
      const repo = `race/${name.toLowerCase()}-${i}`;
      await pushBlobs(server.url, repo, [...new Set(m.blobs)].map((b) => BLOBS[b]));
      const first = await request(server.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes });
      t.is(first.status, 201);
      const [put, del] = await Promise.all([
        request(server.url, `/v2/${repo}/manifests/latest`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes }),
        request(server.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' }),
      ]);
      t.is(put.status, 201);
      t.is(del.status, 202);
      const held = (await request(server.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'HEAD' })).status === 200;
      const tagged = (await request(server.url, `/v2/${repo}/manifests/latest`, { method: 'HEAD' })).status === 200;
      const listed = (await request(server.url, `/v2/${repo}/tags/list`)).json<{ tags: string[] }>().tags;
      outcomes.push(`${held ? 'held' : 'gone'}/${tagged ? 'tagged' : 'untagged'}/${listed.join(',') || 'none'}`);
    }
    // push then delete: both gone; delete then push: held and tagged. Held but untagged is
    // neither: the push was acknowledged and its tag lost.
    t.deepEqual(
      outcomes.filter((o) => o !== 'gone/untagged/none' && o !== 'held/tagged/latest'),
      [],
      outcomes.join(' '),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Races of three or two requests, each round checked against every serial order of them that
// gives the replies they got (test/helpers/serial-orders.ts).

/** schema 2 and schema 1 Accept headers: a tag's unit of each version, read on its own */
const ACCEPT_S2 = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ');
const ACCEPT_S1 = [MT.schema1Signed, MT.schema1].join(', ');

/** The repository's state as the model writes it: held manifests and blobs, each tag's units. */
function describeModel(r: RepoModel, watched: { manifests: readonly ManifestName[]; blobs: readonly BlobName[] }): string {
  const tags = [...r.tags.entries()]
    .sort(([a], [b]) => byteOrder(a, b))
    .map(([name, u]) => `${name}=${u.s2 ? MANIFESTS[u.s2].digest.slice(7, 15) : '-'}/${u.s1 ? MANIFESTS[u.s1].digest.slice(7, 15) : '-'}`);
  return [
    `manifests:${watched.manifests.filter((m) => r.manifests.has(m)).join(',')}`,
    `blobs:${watched.blobs.filter((b) => r.blobs.has(b)).join(',')}`,
    `tags:${tags.join(',')}`,
  ].join(' ');
}

/** The same, read from the server: what each listed tag serves by schema version (a listed tag serving nothing shows as -/-). */
async function describeServer(repo: string, watched: { manifests: readonly ManifestName[]; blobs: readonly BlobName[] }): Promise<string> {
  const held = await Promise.all(watched.manifests.map(async (m) => (await request(server.url, `/v2/${repo}/manifests/${MANIFESTS[m].digest}`, { method: 'HEAD' })).status === 200));
  const blobs = await Promise.all(watched.blobs.map(async (b) => (await request(server.url, `/v2/${repo}/blobs/${BLOBS[b].digest}`, { method: 'HEAD' })).status === 200));
  const list = await request(server.url, `/v2/${repo}/tags/list`);
  const names = list.status === 200 ? list.json<{ tags: string[] }>().tags : [];
  const served = async (name: string, accept: string): Promise<string> => {
    const r = await request(server.url, `/v2/${repo}/manifests/${name}`, { method: 'HEAD', headers: { Accept: accept } });
    return r.status === 200 ? String(r.headers['docker-content-digest']).slice(7, 15) : '-';
  };
  const tags = await Promise.all(names.map(async (n) => `${n}=${await served(n, ACCEPT_S2)}/${await served(n, ACCEPT_S1)}`));
  return [
    `manifests:${watched.manifests.filter((_, i) => held[i]).join(',')}`,
    `blobs:${watched.blobs.filter((_, i) => blobs[i]).join(',')}`,
    `tags:${tags.join(',')}`,
  ].join(' ');
}

/** A fresh repository holding `blobs` and `manifests` (pushed by digest), with `tags` pointing at them. */
async function setUp(repo: string, content: { blobs: readonly BlobName[]; manifests: readonly ManifestName[]; tags: ReadonlyArray<[string, ManifestName]> }): Promise<RepoModel> {
  const model = new RegistryModel();
  await pushBlobs(server.url, repo, content.blobs.map((b) => BLOBS[b]));
  for (const b of content.blobs) model.repo(repo).blobs.add(b);
  for (const m of content.manifests) {
    await bodyWhen(`push ${m}`, putManifest(server.url, repo, MANIFESTS[m].digest, MANIFESTS[m]), 201);
    model.pushManifest(repo, MANIFESTS[m]);
  }
  for (const [tag, m] of content.tags) {
    await bodyWhen(`tag ${m}`, putManifest(server.url, repo, tag, MANIFESTS[m]), 201);
    model.pushManifest(repo, MANIFESTS[m], tag);
  }
  return model.repo(repo);
}

/** The model's steps act on one repository's state, through RegistryModel's rules. */
function on(state: RepoModel): RegistryModel {
  const model = new RegistryModel();
  model.repos.set('r', state);
  return model;
}

const modelPush = (m: ManifestName, tag: string) => (s: RepoModel): string => {
  const model = on(s);
  if (model.missingFor('r', MANIFESTS[m]).length > 0) return '400 MANIFEST_BLOB_UNKNOWN';
  model.pushManifest('r', MANIFESTS[m], tag);
  return '201';
};
const modelDeleteManifest = (m: ManifestName) => (s: RepoModel): string => {
  if (!s.manifests.has(m)) return '404';
  on(s).deleteManifest('r', m);
  return '202';
};
const modelDeleteBlob = (b: BlobName) => (s: RepoModel): string => {
  if (!s.blobs.has(b)) return '404';
  s.blobs.delete(b);
  return '202';
};

/** The reply as the model names it: the status, and for a 4xx the first error code. */
function replyOf(r: Reply): string {
  return r.status >= 400 && r.status !== 404 && r.body.length > 0 ? `${r.status} ${errorCode(r)}` : String(r.status);
}

const THREE_WAY_ROUNDS = fuzzRuns(24);

/** A seeded stream of numbers in [0, 1) (mulberry32): the same starts each run, another with VOLREG_FUZZ_SEED. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seeded(fuzzSeed(0x3a7e));

/** Sends a racing request now or a few milliseconds later, so the rounds meet at different steps. */
function staggered(send: () => Promise<Reply>): Promise<Reply> {
  const wait = Math.floor(random() * 4) * 3;
  return wait === 0 ? send() : new Promise<void>((resolve) => setTimeout(resolve, wait)).then(send);
}

for (const [name, blob, other, same] of [
  // `other` is of the other schema version (its unit of the name is never the push's to move),
  // `same` of the push's own (the push moves the tag off it)
  ['ociA', 'l0', 's1u', 'ociB'],
  ['s1u', 'l1', 'ociB', 's1s'],
] as Array<[ManifestName, BlobName, ManifestName, ManifestName]>) {
  test(`a push of ${name} to a tag racing a delete of it by digest and a delete of its blob ${blob} ends as one order of the three leaves it`, async (t) => {
    const m = MANIFESTS[name];
    const watched = { manifests: [name, other, same], blobs: [...new Set([m, MANIFESTS[other], MANIFESTS[same]].flatMap((x) => x.blobs))] };
    const failures: string[] = [];
    const seen = new Map<string, number>();
    for (let i = 0; i < THREE_WAY_ROUNDS; i++) {
      const repo = `race3/${name.toLowerCase()}-${i}`;
      // the tag before: none, at the pushed manifest, at another one of either schema version
      const before: Array<[string, ManifestName]> = [[], [['latest', name]], [['latest', other]], [['latest', same]]][i % 4] as Array<[string, ManifestName]>;
      const start = await setUp(repo, { blobs: watched.blobs, manifests: [name, other, same], tags: before });
      const replies = await Promise.all([
        staggered(() => putManifest(server.url, repo, 'latest', m)),
        staggered(() => request(server.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' })),
        staggered(() => request(server.url, `/v2/${repo}/blobs/${BLOBS[blob].digest}`, { method: 'DELETE' })),
      ]);
      const got = replies.map(replyOf);
      const allowed = serialOutcomes(start, [modelPush(name, 'latest'), modelDeleteManifest(name), modelDeleteBlob(blob)], got, (s) => describeModel(s, watched));
      const ended = await describeServer(repo, watched);
      seen.set(got.join(' '), (seen.get(got.join(' ')) ?? 0) + 1);
      if (!allowed.has(ended)) failures.push(`round ${i} (${before.map(([tg, mm]) => `${tg}->${mm}`).join() || 'untagged'}), replies ${got.join(' | ')}: ended ${ended}; allowed: ${[...allowed].join(' ; ') || 'none'}`);
    }
    t.deepEqual(failures, [], [...seen].map(([r, n]) => `${r}: ${n}`).join(', '));
  });
}
