import test from 'ava';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestServer } from '../helpers/server.ts';

/** /readyz through the real composition: MongoDB and the blob store both answer, or 503. */

test('/readyz is 200 when both answer and 503 while the blob store is gone', async (t) => {
  const server = await startTestServer({ label: 'readyz' });
  t.teardown(() => server.close());
  const ok = await fetch(`${server.url}/readyz`);
  t.is(ok.status, 200);
  t.deepEqual(await ok.json(), { status: 'ok', checks: { mongodb: 'ok', blobstore: 'ok' } });

  const blobs = join(server.dataDir, 'blobs');
  await rename(blobs, `${blobs}.away`);
  const gone = await fetch(`${server.url}/readyz`);
  t.is(gone.status, 503);
  t.deepEqual(await gone.json(), { status: 'unavailable', checks: { mongodb: 'ok', blobstore: 'unavailable' } });
  // alive all the same
  t.is((await fetch(`${server.url}/healthz`)).status, 200);

  await rename(`${blobs}.away`, blobs);
  t.is((await fetch(`${server.url}/readyz`)).status, 200);
});
