import test from 'ava';
import { pushBlobs, request } from '../helpers/oci-client.ts';
import { BLOBS, MANIFESTS, type ManifestName } from '../helpers/model-content.ts';
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
