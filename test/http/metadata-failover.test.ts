import test from 'ava';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { commandOn } from '../helpers/mongo-proxy.ts';
import { startTestServerBehindProxy, type ProxiedTestServer } from '../helpers/server.ts';
import { errorCode, pushBlob, raw, type RawResponse } from './blobs-client.ts';

/**
 * A replica set electing a primary, as the driver passes it on: the answers a member gives in a
 * failover (NotWritablePrimary, InterruptedDueToReplStateChange, a write concern error of a node
 * shutting down), put in front of the test MongoDB by a proxy. Each is 503 UNAVAILABLE with a
 * Retry-After, never a 500, and the same request sent again completes.
 */

let server: ProxiedTestServer;

test.before(async () => {
  server = await startTestServerBehindProxy('metadata-failover');
});

test.after.always(async () => {
  await server?.close();
});

const NOT_WRITABLE_PRIMARY = { ok: 0, code: 10107, codeName: 'NotWritablePrimary', errmsg: 'not primary', errorLabels: ['RetryableWriteError'] };
const STEPPED_DOWN = { ok: 0, code: 11602, codeName: 'InterruptedDueToReplStateChange', errmsg: 'operation was interrupted because a node stepped down' };

function isFailover(t: import('ava').ExecutionContext, res: RawResponse, what: string): void {
  t.is(res.status, 503, `${what}: ${res.body.toString()}`);
  t.is(errorCode(res.body), 'UNAVAILABLE', what);
  t.regex(res.body.toString(), /the metadata store is changing its primary; try again shortly/, what);
  t.is(res.headers['retry-after'], '10', what);
}

test.serial('a manifest push whose tag write meets NotWritablePrimary is 503 with Retry-After; pushed again, it is tagged', async (t) => {
  const repo = 'failover/app';
  const config = configBlob();
  const layer = randomBlob(200);
  await pushBlob(server.url, repo, config.bytes);
  await pushBlob(server.url, repo, layer.bytes);
  const manifest = ociManifest({ config, layers: [layer] });
  const put = () => raw(server.url, 'PUT', `/v2/${repo}/manifests/v1`, { body: manifest.bytes, headers: { 'Content-Type': manifest.mediaType } });

  server.proxy.answer(commandOn('findAndModify', 'units_docker_tag'), NOT_WRITABLE_PRIMARY);
  isFailover(t, await put(), 'the push');
  t.is(server.proxy.answered.length, 1, 'the tag write met the failover');
  t.is((await raw(server.url, 'GET', `/v2/${repo}/manifests/v1`, { headers: { Accept: manifest.mediaType } })).status, 404, 'nothing tagged');

  const again = await put();
  t.is(again.status, 201, again.body.toString());
  const pulled = await raw(server.url, 'GET', `/v2/${repo}/manifests/v1`, { headers: { Accept: manifest.mediaType } });
  t.is(pulled.status, 200);
  t.deepEqual(pulled.body, manifest.bytes);
});

test.serial('a read that meets InterruptedDueToReplStateChange is 503 with Retry-After', async (t) => {
  server.proxy.answered.length = 0;
  // the referrers of a manifest are looked up in MongoDB at every request
  const referrers = `/v2/failover/app/referrers/sha256:${'e'.repeat(64)}`;
  // the driver retries a read once (retryable reads): the election outlasts its retry
  server.proxy.answer(commandOn('find', 'units_docker_manifest'), STEPPED_DOWN, 2);
  isFailover(t, await raw(server.url, 'GET', referrers), 'referrers');
  t.is(server.proxy.answered.length, 2);
  t.is((await raw(server.url, 'GET', referrers)).status, 200, 'answers again');
});

test.serial('a write acknowledged with a write concern error of a node shutting down is 503 with Retry-After', async (t) => {
  server.proxy.answered.length = 0;
  server.proxy.answer(commandOn('insert', 'uploads'), {
    ok: 1,
    n: 1,
    writeConcernError: { code: 91, codeName: 'ShutdownInProgress', errmsg: 'Replication is being shut down' },
  });
  isFailover(t, await raw(server.url, 'POST', '/v2/failover/app/blobs/uploads/'), 'upload start');
  t.is(server.proxy.answered.length, 1);
  t.is((await raw(server.url, 'POST', '/v2/failover/app/blobs/uploads/')).status, 202, 'answers again');
});
