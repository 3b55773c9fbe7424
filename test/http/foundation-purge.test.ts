import test from 'ava';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
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

test('a session whose chunk is still trickling in is not abandoned, whatever the cutoff; finished, it commits', async (t) => {
  const server = await startTestServer({ label: 'purge_active', env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  t.teardown(() => server.close());
  const location = await startUpload(server.url, 'purge/active');
  const body = Buffer.alloc(40_000, 7);
  const { hostname, port, pathname, search } = new URL(location);
  const socket = connect(Number(port), hostname);
  await new Promise((r) => socket.once('connect', r));
  let reply = '';
  socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
  const closed = new Promise((r) => socket.once('close', r));
  socket.write(`PATCH ${pathname}${search} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-${body.length - 1}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
  // 5 KB every 200 ms: the writes are buffered, so the bytes' own times fall behind
  for (let off = 0; off < body.length; off += 5000) {
    socket.write(body.subarray(off, off + 5000));
    await new Promise((r) => setTimeout(r, 200));
    // a purge whose cutoff is in the future takes every session it finds idle
    if (off === 20_000) t.is(await server.services.uploads.purgeAbandoned(new Date(Date.now() + 60_000)), 0, 'the active session was not purged');
  }
  await closed;
  t.regex(reply, /^HTTP\/1\.1 202/);
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const done = await fetch(`${location}${location.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' });
  t.is(done.status, 201);
  // idle now: the next purge takes what is left of nothing (the session is gone with its commit)
  t.is(await server.services.uploads.purgeAbandoned(new Date(Date.now() + 60_000)), 0);
});

test('a chunk sent to a session purged just before is refused (404), not taken', async (t) => {
  const server = await startTestServer({ label: 'purge_before', env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  t.teardown(() => server.close());
  const location = await startUpload(server.url, 'purge/before');
  t.is(await server.services.uploads.purgeAbandoned(new Date(Date.now() + 60_000)), 1);
  const res = await fetch(location, { method: 'PATCH', body: new Uint8Array(10), headers: { 'Content-Range': '0-9' } });
  t.is(res.status, 404);
});
