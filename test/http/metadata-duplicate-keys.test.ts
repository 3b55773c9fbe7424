import test from 'ava';
import type { Document } from 'bson';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { commandOn } from '../helpers/mongo-proxy.ts';
import { startTestServerBehindProxy, type ProxiedTestServer } from '../helpers/server.ts';
import { errorCode, pushBlob, raw } from './blobs-client.ts';

/**
 * A real MongoDB runs racing requests at once, and an upsert that meets another's insert on a
 * unique index answers E11000 (unless its filter is exactly the index's equality, when the server
 * retries it itself). The embedded engine applies commands one at a time, so here a proxy gives
 * the upsert that answer: what a push or an upload makes of it is what it makes of the race.
 */

let server: ProxiedTestServer;

test.before(async () => {
  server = await startTestServerBehindProxy('metadata-duplicate-keys');
});

test.after.always(async () => {
  await server?.close();
});

function duplicateKey(collection: string, index: string): Document {
  return { ok: 0, code: 11000, codeName: 'DuplicateKey', errmsg: `E11000 duplicate key error collection: volreg.${collection} index: ${index} dup key: { }` };
}

async function pushedImage(repo: string): Promise<ReturnType<typeof ociManifest>> {
  const config = configBlob();
  const layer = randomBlob(100);
  await pushBlob(server.url, repo, config.bytes);
  await pushBlob(server.url, repo, layer.bytes);
  return ociManifest({ config, layers: [layer] });
}

test.serial('a push whose tag upsert meets a racing first push of the tag (E11000) tags its manifest', async (t) => {
  const repo = 'dup/tag';
  const manifest = await pushedImage(repo);
  server.proxy.answered.length = 0;
  server.proxy.answer(commandOn('findAndModify', 'units_docker_tag'), duplicateKey('units_docker_tag', 'name_1_schema_version_1_repo_id_1'));
  const res = await raw(server.url, 'PUT', `/v2/${repo}/manifests/v1`, { body: manifest.bytes, headers: { 'Content-Type': manifest.mediaType } });
  t.is(res.status, 201, res.body.toString());
  t.is(server.proxy.answered.length, 1);
  const pulled = await raw(server.url, 'GET', `/v2/${repo}/manifests/v1`, { headers: { Accept: manifest.mediaType } });
  t.is(pulled.status, 200);
  t.deepEqual(pulled.body, manifest.bytes);
});

test.serial('a push with If-None-Match: * whose insert meets a tag created meanwhile (E11000) is 412, nothing tagged', async (t) => {
  const repo = 'dup/if-none-match';
  const manifest = await pushedImage(repo);
  server.proxy.answered.length = 0;
  server.proxy.answer(commandOn('findAndModify', 'units_docker_tag'), duplicateKey('units_docker_tag', 'name_1_schema_version_1_repo_id_1'));
  const res = await raw(server.url, 'PUT', `/v2/${repo}/manifests/v1`, {
    body: manifest.bytes,
    headers: { 'Content-Type': manifest.mediaType, 'If-None-Match': '*' },
  });
  t.is(res.status, 412, res.body.toString());
  t.is(errorCode(res.body), 'PRECONDITION_FAILED');
  t.is((await raw(server.url, 'GET', `/v2/${repo}/manifests/v1`, { headers: { Accept: manifest.mediaType } })).status, 404);
});

test.serial('uploads whose blob, repository and association upserts meet racing inserts (E11000) store the blob', async (t) => {
  const repo = 'dup/blob';
  const blob = randomBlob(300);
  server.proxy.answered.length = 0;
  server.proxy.answer(commandOn('findAndModify', 'units_docker_blob'), duplicateKey('units_docker_blob', 'digest_1'));
  server.proxy.answer(commandOn('update', 'repos'), { ok: 1, n: 0, nModified: 0, writeErrors: [{ index: 0, ...duplicateKey('repos', 'repo_id_1') }] });
  server.proxy.answer(commandOn('update', 'repo_content_units'), {
    ok: 1,
    n: 0,
    nModified: 0,
    writeErrors: [{ index: 0, ...duplicateKey('repo_content_units', 'repo_id_1_unit_type_id_1_unit_id_1') }],
  });
  await pushBlob(server.url, repo, blob.bytes);
  t.is(server.proxy.answered.length, 3, 'each upsert met the race once');
  // the race's winner would have made the repository and the association: made here by the upload sent again
  await pushBlob(server.url, repo, blob.bytes);
  const head = await raw(server.url, 'HEAD', `/v2/${repo}/blobs/${blob.digest}`);
  t.is(head.status, 200);
});
