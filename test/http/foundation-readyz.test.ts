import test from 'ava';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer } from '../helpers/server.ts';

/** /readyz through the real composition: MongoDB and the blob store both answer, or 503. */

test('/readyz is 200 when both answer and 503 while the blob store is gone', async (t) => {
  const log = capturedLog('info');
  const server = await startTestServer({ label: 'readyz', logger: log.logger });
  const said = (msg: string): Array<Record<string, unknown>> => log.lines.filter((l) => l['msg'] === msg);
  t.teardown(() => server.close());
  const ok = await fetch(`${server.url}/readyz`);
  t.is(ok.status, 200);
  t.deepEqual(await ok.json(), { status: 'ok', checks: { mongodb: 'ok', blobstore: 'ok' } });

  const blobs = join(server.dataDir, 'blobs');
  await rename(blobs, `${blobs}.away`);
  const gone = await fetch(`${server.url}/readyz`);
  t.is(gone.status, 503);
  // the reason, without the server's absolute paths (anyone may ask)
  t.deepEqual(await gone.json(), {
    status: 'unavailable',
    checks: { mongodb: 'ok', blobstore: 'unavailable' },
    reasons: { blobstore: 'blobs/ cannot be written (ENOENT)' },
  });
  await fetch(`${server.url}/readyz`);
  // logged once when it changed, not at every probe
  t.is(said('not ready').length, 1);
  t.like(said('not ready')[0], { level: 40, check: 'blobstore', reason: 'blobs/ cannot be written (ENOENT)' });
  // alive all the same
  t.is((await fetch(`${server.url}/healthz`)).status, 200);

  await rename(`${blobs}.away`, blobs);
  t.is((await fetch(`${server.url}/readyz`)).status, 200);
  t.like(said('ready again')[0], { level: 30, check: 'blobstore' });
  t.is(said('not ready').length, 1);
});
