import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { parseRepositoryName } from '../../src/domain/names.ts';
import { collections, type Collections } from '../../src/metadata/collections.ts';
import type { ManifestRepository } from '../../src/metadata/manifest-repository.ts';
import { gate, manifestServiceWith } from '../helpers/held-services.ts';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A manifest deleted by digest while the same manifest is pushed to a tag, the delete held at
 * each step where the push can slip in. Whatever the order, no tag may be left listed that
 * points at a manifest the repository no longer holds: tags/list would advertise a tag that
 * never pulls, and tools that copy every tag would fail on it.
 */

const test = anyTest as TestFn<{ server: TestServer; c: Collections }>;

test.before(async (t) => {
  const server = await startTestServer({ label: 'delete_push' });
  t.context = { server, c: collections(server.db) };
});

test.after.always(async (t) => {
  await t.context.server?.close();
});

/** Every tag tags/list names pulls (200), and the list is returned. */
async function listedTagsAllPull(t: ExecutionContext, url: string, repo: string): Promise<string[]> {
  const list = await request(url, `/v2/${repo}/tags/list`);
  t.is(list.status, 200);
  const tags = list.json<{ tags: string[] }>().tags;
  for (const tag of tags) t.is((await getManifest(url, repo, tag, ACCEPT_ALL)).status, 200, `listed tag ${tag} pulls`);
  return tags;
}

async function pushedImage(url: string, repo: string): Promise<ReturnType<typeof ociManifest>> {
  const config = configBlob();
  const layer = randomBlob(2000);
  await pushBlobs(url, repo, [config, layer]);
  const m = ociManifest({ config, layers: [layer] });
  const first = await putManifest(url, repo, 'first', m);
  if (first.status !== 201) throw new Error(`push failed: ${first.status}`);
  return m;
}

/** A ManifestService whose next removal of a manifest from its repository waits at a gate, before or after it happens. */
function deletingServiceHeld(c: Collections, when: 'before' | 'after'): { service: ReturnType<typeof manifestServiceWith>; held: ReturnType<typeof gate> } {
  const held = gate();
  const service = manifestServiceWith(c, (real) => ({
    manifests: {
      removeFromRepo: async (...args: Parameters<ManifestRepository['removeFromRepo']>) => {
        if (when === 'before') await held.arrive();
        const r = await real.manifests.removeFromRepo(...args);
        if (when === 'after') await held.arrive();
        return r;
      },
    },
  }));
  return { service, held };
}

test.serial('a push tagging the manifest after the delete removed its tags, before it removed the manifest: no tag is left pointing at nothing', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('delete-push-before');
  const m = await pushedImage(server.url, repo);

  const { service, held } = deletingServiceHeld(c, 'before');
  const deleting = service.delete(parseRepositoryName(repo), m.digest);
  await held.reached; // its tags are gone, the manifest is still held
  // the push sees the manifest held and is acknowledged
  t.is((await putManifest(server.url, repo, 'second', m)).status, 201);
  held.open();
  await deleting;

  // the delete came last: its manifest and every tag of it are gone
  t.deepEqual(await listedTagsAllPull(t, server.url, repo), []);
  t.is((await getManifest(server.url, repo, m.digest, ACCEPT_ALL)).status, 404);
});

test.serial('a push tagging the manifest after the delete removed it from the repository: held again, and no tag points at nothing', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('delete-push-after');
  const m = await pushedImage(server.url, repo);

  const { service, held } = deletingServiceHeld(c, 'after');
  const deleting = service.delete(parseRepositoryName(repo), m.digest);
  await held.reached; // tags and manifest gone from the repository
  // the push finds the manifest gone after tagging it, and holds it again
  t.is((await putManifest(server.url, repo, 'second', m)).status, 201);
  held.open();
  await deleting;

  await listedTagsAllPull(t, server.url, repo);
  const byDigest = await getManifest(server.url, repo, m.digest, ACCEPT_ALL);
  t.is(byDigest.status, 200);
  t.true(byDigest.body.equals(m.bytes));
});
