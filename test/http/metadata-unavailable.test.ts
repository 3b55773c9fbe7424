import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import { errorCode, raw } from './blobs-client.ts';

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
