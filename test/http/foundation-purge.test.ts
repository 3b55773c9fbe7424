import test from 'ava';
import { startTestServer } from '../helpers/server.ts';

/**
 * The upload purge timer of startServer: every VOLREG_UPLOAD_PURGE_INTERVAL seconds it asks the
 * upload service to purge sessions idle longer than VOLREG_UPLOAD_PURGE_AFTER; interval 0 turns
 * it off.
 */

async function startUpload(url: string, repo: string): Promise<string> {
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (res.status !== 202) throw new Error(`upload start: ${res.status}`);
  return new URL(res.headers.get('location')!, url).href;
}

test('abandoned upload sessions are purged on the timer', async (t) => {
  const server = await startTestServer({ label: 'purge_on', env: { VOLREG_UPLOAD_PURGE_AFTER: '1', VOLREG_UPLOAD_PURGE_INTERVAL: '1' } });
  t.teardown(() => server.close());
  const location = await startUpload(server.url, 'purge/on');
  t.is((await fetch(location)).status, 204);
  const deadline = Date.now() + 10_000;
  let status = 204;
  while (status !== 404 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    status = (await fetch(location)).status;
  }
  t.is(status, 404);
});

test('interval 0 turns the purge off', async (t) => {
  const server = await startTestServer({ label: 'purge_off', env: { VOLREG_UPLOAD_PURGE_AFTER: '1', VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  t.teardown(() => server.close());
  const location = await startUpload(server.url, 'purge/off');
  await new Promise((r) => setTimeout(r, 2500));
  t.is((await fetch(location)).status, 204);
});
