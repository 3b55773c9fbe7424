import test from 'ava';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { startTestServer, startTestServerBehindProxy } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import { errorCode, pushBlob, raw, startSession } from './blobs-client.ts';

/** MongoDB gone while volreg runs: every request that needs it says so with 503, not 500. */

test('with MongoDB unreachable, requests answer 503 UNAVAILABLE and /readyz fails', async (t) => {
  const server = await startTestServer({ label: 'metadata-unavailable' });
  try {
    t.is((await raw(server.url, 'GET', '/v2/gone/tags/list')).status, 404, 'answers normally first');
    await server.db.client.close();
    for (const [method, path] of [
      ['GET', '/v2/gone/tags/list'],
      ['HEAD', `/v2/gone/blobs/sha256:${'a'.repeat(64)}`],
      ['POST', '/v2/gone/blobs/uploads/'],
      ['GET', '/api/v1/volumes'],
    ] as const) {
      const res = await raw(server.url, method, path);
      t.is(res.status, 503, `${method} ${path}`);
      t.is(res.headers['retry-after'], '10', `${method} ${path}`);
      if (method !== 'HEAD') {
        t.is(errorCode(res.body), 'UNAVAILABLE');
        t.regex(res.body.toString(), /the metadata store is unreachable/);
      }
    }
    const ready = await raw(server.url, 'GET', '/readyz');
    t.is(ready.status, 503);
    // the driver's own message names the server's address: only its kind is shown
    t.regex((JSON.parse(ready.body.toString()) as { reasons: Record<string, string> }).reasons['mongodb'] ?? '', /^MongoDB did not answer a ping \(Mongo\w*Error\)$/);
  } finally {
    // back, so the helper can drop this test's database
    await server.db.client.connect();
    await server.close();
  }
});

test('with MongoDB closing each new connection at once (out of descriptors), the driver\'s raw socket errors are 503 UNAVAILABLE too', async (t) => {
  // The server reaches MongoDB through a socket that can refuse new connections, and its driver
  // opens a new connection for a command after any pause: so each request below needs one.
  const server = await startTestServerBehindProxy('metadata-refused', { maxIdleTimeMS: 1 });
  try {
    const repo = 'refused/app';
    // what the requests below act on, made while MongoDB answers
    const snapshot = await raw(server.url, 'PUT', '/api/v1/volumes/refused/vol/tags/v1', { body: await buildTar([{ name: 'f', body: 'x' }]) });
    t.is(snapshot.status, 201);
    const config = configBlob();
    const layer = randomBlob(300);
    await pushBlob(server.url, repo, config.bytes);
    await pushBlob(server.url, repo, layer.bytes);
    const manifest = ociManifest({ config, layers: [layer] });
    const headers = { 'Content-Type': manifest.mediaType };
    t.is((await raw(server.url, 'PUT', `/v2/${repo}/manifests/v1`, { body: manifest.bytes, headers })).status, 201);
    const session = await startSession(server.url, repo);
    const monolithic = randomBlob(500);

    server.proxy.refuseNew = true;
    for (const [method, path, opts] of [
      ['GET', '/v2/_catalog', {}],
      ['GET', `/v2/${repo}/tags/list`, {}],
      ['GET', '/api/v1/volumes', {}],
      ['PUT', `/v2/${repo}/manifests/v2`, { body: manifest.bytes, headers }],
      ['PUT', `${session}${session.includes('?') ? '&' : '?'}digest=${monolithic.digest}`, { body: monolithic.bytes }],
      ['DELETE', `/v2/${repo}/manifests/${manifest.digest}`, {}],
      ['GET', '/api/v1/volumes/refused/vol/tags/v1/content', {}],
    ] as const) {
      await new Promise((r) => setTimeout(r, 5)); // the driver's idle connections perish
      const res = await raw(server.url, method, path, opts);
      t.is(res.status, 503, `${method} ${path}: ${res.body.toString()}`);
      t.is(errorCode(res.body), 'UNAVAILABLE');
      t.regex(res.body.toString(), /the metadata store is unreachable/);
    }
    await new Promise((r) => setTimeout(r, 5));
    const ready = await raw(server.url, 'GET', '/readyz');
    t.is(ready.status, 503);
    // a raw socket error of the driver is named by its code
    t.regex((JSON.parse(ready.body.toString()) as { reasons: Record<string, string> }).reasons['mongodb'] ?? '', /^MongoDB did not answer a ping \((EPIPE|ECONNRESET)\)$/);
    server.proxy.refuseNew = false;
    await new Promise((r) => setTimeout(r, 5));
    t.is((await raw(server.url, 'GET', `/v2/${repo}/tags/list`)).status, 200, 'answers again');
  } finally {
    await server.close();
  }
});
