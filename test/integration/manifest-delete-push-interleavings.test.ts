import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { parseRepositoryName } from '../../src/domain/names.ts';
import { collections, type Collections } from '../../src/metadata/collections.ts';
import { isVolregError } from '../../src/domain/errors.ts';
import { gate, heldAt, manifestServiceWith } from '../helpers/held-services.ts';
import { configBlob, MT, ociManifest, randomBlob, schema1Unsigned } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Deletes racing pushes of the same manifest, one side held at the step where the other can slip
 * in:
 * - a manifest deleted by digest while it is pushed to a tag: whatever the order, no tag may be
 *   left listed that points at a manifest the repository no longer holds (tags/list would
 *   advertise a tag that never pulls, and tools that copy every tag would fail on it);
 * - a push refused after its tag write (a blob it references deleted meanwhile): it takes back
 *   only its own tag writes, and tags other, acknowledged pushes gave the same manifest stay.
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

async function pushedImage(url: string, repo: string, tag = 'first'): Promise<ReturnType<typeof ociManifest>> {
  const config = configBlob();
  const layer = randomBlob(2000);
  await pushBlobs(url, repo, [config, layer]);
  const m = ociManifest({ config, layers: [layer] });
  const pushed = await putManifest(url, repo, tag, m);
  if (pushed.status !== 201) throw new Error(`push failed: ${pushed.status}`);
  return m;
}

/** A ManifestService whose next removal of a manifest from its repository waits at a gate, before or after it happens. */
function deletingServiceHeld(c: Collections, when: 'before' | 'after'): { service: ReturnType<typeof manifestServiceWith>; held: ReturnType<typeof gate> } {
  const held = gate();
  const service = manifestServiceWith(c, (real) => ({
    manifests: { removeFromRepo: heldAt(held, when, real.manifests.removeFromRepo.bind(real.manifests)) },
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

/** A ManifestService whose next tag write, once done, waits at a gate. */
function pushingServiceHeldAfterTag(c: Collections): { service: ReturnType<typeof manifestServiceWith>; held: ReturnType<typeof gate> } {
  const held = gate();
  const service = manifestServiceWith(c, (real) => ({ tags: { upsert: heldAt(held, 'after', real.tags.upsert.bind(real.tags)) } }));
  return { service, held };
}

for (const before of ['absent', 'on another manifest'] as const) {
  test.serial(`a push refused after its tag write (tag ${before} before) takes back only its own write: another tag of the manifest stays`, async (t) => {
    const { server, c } = t.context;
    const repo = repoName(`refused-push-${before === 'absent' ? 'new' : 'moved'}`);
    const m = await pushedImage(server.url, repo); // acknowledged as "first"
    let other: ReturnType<typeof ociManifest> | undefined;
    if (before === 'on another manifest') {
      other = await pushedImage(server.url, repo, 'second');
    }

    const { service, held } = pushingServiceHeldAfterTag(c);
    const pushing = service.put(parseRepositoryName(repo), 'second', m.bytes, m.mediaType);
    pushing.catch(() => undefined);
    await held.reached; // "second" points at m; the push has not re-checked yet
    const layer = JSON.parse(m.bytes.toString('utf8')).layers[0].digest as string;
    t.is((await request(server.url, `/v2/${repo}/blobs/${layer}`, { method: 'DELETE' })).status, 202);
    held.open();
    const err = await t.throwsAsync(pushing);
    t.true(isVolregError(err) && err.code === 'MANIFEST_BLOB_UNKNOWN', String(err));

    // the acknowledged tag of the same manifest is untouched
    const first = await getManifest(server.url, repo, 'first', ACCEPT_ALL);
    t.is(first.status, 200);
    t.true(first.body.equals(m.bytes));
    // the refused push's tag is back where it was
    const second = await getManifest(server.url, repo, 'second', ACCEPT_ALL);
    if (other) {
      t.is(second.status, 200);
      t.true(second.body.equals(other.bytes));
    } else {
      t.is(second.status, 404);
    }
    await listedTagsAllPull(t, server.url, repo);
  });
}

test.serial('a schema-1 push refused after moving its tag puts the tag\'s v1 image id back with it', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('refused-schema1');
  const layerA = randomBlob(500);
  const layerB = randomBlob(500);
  await pushBlobs(server.url, repo, [layerA, layerB]);
  const a = schema1Unsigned({ name: repo, tag: 'latest', layers: [layerA] });
  t.is((await putManifest(server.url, repo, 'latest', a)).status, 201);
  const b = schema1Unsigned({ name: repo, tag: 'latest', layers: [layerB] });

  const { service, held } = pushingServiceHeldAfterTag(c);
  const pushing = service.put(parseRepositoryName(repo), 'latest', b.bytes, b.mediaType);
  pushing.catch(() => undefined);
  await held.reached; // "latest" (schema 1) points at b; its v1 image id is recorded next
  t.is((await request(server.url, `/v2/${repo}/blobs/${layerB.digest}`, { method: 'DELETE' })).status, 202);
  held.open();
  const err = await t.throwsAsync(pushing);
  t.true(isVolregError(err) && err.code === 'MANIFEST_BLOB_UNKNOWN', String(err));

  const latest = await getManifest(server.url, repo, 'latest', MT.schema1);
  t.is(latest.status, 200);
  t.true(latest.body.equals(a.bytes), 'the tag is back on the acknowledged manifest');
  const doc = await c.repos.findOne({ _id: repo });
  t.deepEqual(doc!.scratchpad.tags, [{ tag: 'latest', image_id: a.topId }], 'and its v1 image id with it');
});

test.serial('a manifest deleted by digest while a push moves one of its tags to another manifest: the moved tag stays', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('delete-moved-tag');
  const m = await pushedImage(server.url, repo, 'a');
  t.is((await putManifest(server.url, repo, 'b', m)).status, 201);
  const n = await pushedImage(server.url, repo, 'n');

  const held = gate();
  const service = manifestServiceWith(c, (real) => ({ tags: { findByManifest: heldAt(held, 'after', real.tags.findByManifest.bind(real.tags)) } }));
  const deleting = service.delete(parseRepositoryName(repo), m.digest);
  await held.reached; // the delete has read tags a and b, both on m
  t.is((await putManifest(server.url, repo, 'a', n)).status, 201); // acknowledged: a -> n
  held.open();
  await deleting;

  const a = await getManifest(server.url, repo, 'a', ACCEPT_ALL);
  t.is(a.status, 200, 'the tag the push moved is not taken with the deleted manifest');
  t.true(a.body.equals(n.bytes));
  t.is((await getManifest(server.url, repo, 'b', ACCEPT_ALL)).status, 404);
  t.is((await getManifest(server.url, repo, m.digest, ACCEPT_ALL)).status, 404);
  t.deepEqual((await listedTagsAllPull(t, server.url, repo)).sort(), ['a', 'n']);
});

// A push refused after it moved a tag off another manifest, racing a delete by digest of the
// manifest it pushed: the delete took the moved tag before the push could undo it. Neither order
// of the refused push and the delete takes the tag: it is back on the manifest it left.
for (const schema of [2, 1] as const) {
  test.serial(`a delete by digest that takes the tag a refused push moved (schema ${schema}) puts it back where it was`, async (t) => {
    const { server, c } = t.context;
    const repo = repoName(`refused-delete-s${schema}`);
    const layerA = randomBlob(400);
    const layerB = randomBlob(400);
    const config = configBlob();
    await pushBlobs(server.url, repo, [config, layerA, layerB]);
    const [a, b] = schema === 2
      ? [ociManifest({ config, layers: [layerA] }), ociManifest({ config, layers: [layerB] })]
      : [schema1Unsigned({ name: repo, tag: 'latest', layers: [layerA] }), schema1Unsigned({ name: repo, tag: 'latest', layers: [layerB] })];
    t.is((await putManifest(server.url, repo, 'latest', a)).status, 201);
    t.is((await putManifest(server.url, repo, b.digest, b)).status, 201); // held, untagged

    // the push moves latest a -> b and waits; the delete of b takes latest (on b) and waits
    const pushHeld = gate();
    const pusher = manifestServiceWith(c, (real) => ({ tags: { upsert: heldAt(pushHeld, 'after', real.tags.upsert.bind(real.tags)) } }));
    const pushing = pusher.put(parseRepositoryName(repo), 'latest', b.bytes, b.mediaType);
    pushing.catch(() => undefined);
    await pushHeld.reached;
    const { service: deleter, held: deleteHeld } = deletingServiceHeld(c, 'before');
    const deleting = deleter.delete(parseRepositoryName(repo), b.digest);
    await deleteHeld.reached;
    t.is((await getManifest(server.url, repo, 'latest', ACCEPT_ALL)).status, 404, 'the delete took the moved tag');

    // b's layer goes: the push is refused while b is still held, so it cannot tell this delete from one by tag
    t.is((await request(server.url, `/v2/${repo}/blobs/${layerB.digest}`, { method: 'DELETE' })).status, 202);
    pushHeld.open();
    const err = await t.throwsAsync(pushing);
    t.true(isVolregError(err) && err.code === 'MANIFEST_BLOB_UNKNOWN', String(err));
    deleteHeld.open();
    await deleting;

    const latest = await getManifest(server.url, repo, 'latest', ACCEPT_ALL);
    t.is(latest.status, 200, 'the tag is back');
    t.true(latest.body.equals(a.bytes), 'on the manifest it pointed at before the refused push');
    t.is((await getManifest(server.url, repo, b.digest, ACCEPT_ALL)).status, 404);
    if (schema === 1) t.deepEqual((await c.repos.findOne({ _id: repo }))!.scratchpad.tags, [{ tag: 'latest', image_id: (a as ReturnType<typeof schema1Unsigned>).topId }], 'with its v1 image id');
    t.deepEqual(await listedTagsAllPull(t, server.url, repo), ['latest']);
  });
}

test.serial('a refused push noted earlier does not bring back a tag an acknowledged push of the same manifest moved, when the manifest is deleted', async (t) => {
  const { server } = t.context;
  const repo = repoName('refused-then-acked');
  const config = configBlob();
  const layerA = randomBlob(400);
  const layerB = randomBlob(400);
  const layerC = randomBlob(400);
  await pushBlobs(server.url, repo, [config, layerA, layerB]);
  const a = ociManifest({ config, layers: [layerA] });
  const b = ociManifest({ config, layers: [layerB, layerC] });
  t.is((await putManifest(server.url, repo, 'latest', a)).status, 201);
  // refused (layer C was never pushed): the tag's move a -> b is noted and undone
  t.is((await putManifest(server.url, repo, 'latest', b)).status, 400);
  await pushBlobs(server.url, repo, [layerC]);
  t.is((await putManifest(server.url, repo, 'latest', b)).status, 201); // acknowledged: a -> b
  t.is((await request(server.url, `/v2/${repo}/manifests/${b.digest}`, { method: 'DELETE' })).status, 202);
  t.is((await getManifest(server.url, repo, 'latest', ACCEPT_ALL)).status, 404, 'the delete takes the acknowledged tag with the manifest');
  t.deepEqual(await listedTagsAllPull(t, server.url, repo), []);
});

test.serial('a push refused after an acknowledged push of the same manifest to the same tag leaves that push\'s tag', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('refused-same-manifest');
  const config = configBlob();
  const layerA = randomBlob(400);
  const layerB = randomBlob(400);
  await pushBlobs(server.url, repo, [config, layerA, layerB]);
  const a = ociManifest({ config, layers: [layerA] });
  const b = ociManifest({ config, layers: [layerB] });
  t.is((await putManifest(server.url, repo, 'latest', a)).status, 201);

  const { service, held } = pushingServiceHeldAfterTag(c);
  const pushing = service.put(parseRepositoryName(repo), 'latest', b.bytes, b.mediaType);
  pushing.catch(() => undefined);
  await held.reached; // latest: a -> b, not yet acknowledged
  t.is((await putManifest(server.url, repo, 'latest', b)).status, 201); // another push of b to latest: acknowledged
  t.is((await request(server.url, `/v2/${repo}/blobs/${layerB.digest}`, { method: 'DELETE' })).status, 202);
  held.open();
  const err = await t.throwsAsync(pushing);
  t.true(isVolregError(err) && err.code === 'MANIFEST_BLOB_UNKNOWN', String(err));

  // the acknowledged push came after the refused one's write: the tag is its
  const latest = await getManifest(server.url, repo, 'latest', ACCEPT_ALL);
  t.is(latest.status, 200);
  t.true(latest.body.equals(b.bytes), 'the refused push does not take back a later push of the same manifest');
});

test.serial('a schema-1 tag a delete by digest puts back for a push that held the manifest again gets its v1 image id back', async (t) => {
  const { server, c } = t.context;
  const repo = repoName('putback-schema1');
  const layer = randomBlob(400);
  await pushBlobs(server.url, repo, [layer]);
  const m = schema1Unsigned({ name: repo, tag: 'first', layers: [layer] });
  t.is((await putManifest(server.url, repo, 'first', m)).status, 201);

  // the push finds the manifest held, and waits before its tag write
  const tagHeld = gate();
  const restoreHeld = gate();
  const pusher = manifestServiceWith(c, (real) => ({
    tags: { upsert: heldAt(tagHeld, 'before', real.tags.upsert.bind(real.tags)), restore: heldAt(restoreHeld, 'before', real.tags.restore.bind(real.tags)) },
  }));
  const pushing = pusher.put(parseRepositoryName(repo), 'second', m.bytes, m.mediaType);
  await tagHeld.reached;
  const { service: deleter, held: deleteHeld } = deletingServiceHeld(c, 'after');
  const deleting = deleter.delete(parseRepositoryName(repo), m.digest);
  await deleteHeld.reached; // "first" and the manifest are gone from the repository
  tagHeld.open(); // the push tags "second", finds the manifest gone, holds it again, and waits before it puts its tag back
  await restoreHeld.reached;
  deleteHeld.open(); // the delete's last pass takes "second", finds the manifest held, and puts it back
  await deleting;
  restoreHeld.open();
  await pushing;

  const second = await getManifest(server.url, repo, 'second', MT.schema1);
  t.is(second.status, 200);
  t.true(second.body.equals(m.bytes));
  t.deepEqual((await c.repos.findOne({ _id: repo }))!.scratchpad.tags, [{ tag: 'second', image_id: m.topId }], 'with its v1 image id');
});
