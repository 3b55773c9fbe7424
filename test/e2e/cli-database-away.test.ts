import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { runVolreg } from '../helpers/cli-run.ts';
import { commandOn } from '../helpers/mongo-proxy.ts';
import { startTestServer, startTestServerBehindProxy, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import { raw } from '../http/blobs-client.ts';

/**
 * The registry's MongoDB away for a while (restarted, out of reach): volreg answers 503 with
 * Retry-After, and the host agent waits and asks again within its --timeout instead of failing
 * a backup job, saying on stderr why it waits (README "The volreg host agent").
 */

/** A server whose database the test takes away (closing its client) and a work directory; the database comes back before the server closes. */
async function serverAndWorkDir(t: ExecutionContext, label: string): Promise<{ server: TestServer; cwd: string }> {
  const server = await startTestServer({ label });
  const cwd = await mkdtemp(join(tmpdir(), `volreg-${label}-`));
  t.teardown(async () => {
    await server.db.client.connect();
    await server.close();
    await rm(cwd, { recursive: true, force: true });
  });
  return { server, cwd };
}

/** the 503s the server has answered so far (its request counter) */
async function refusals(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('volreg_http_requests_total{') && l.includes('status="503"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

test('volreg ls waits out a database that is away, says so, and lists once it is back; with a shorter --timeout it fails at once', async (t) => {
  const { server, cwd } = await serverAndWorkDir(t, 'e2e-cli-database-away');
  t.is((await raw(server.url, 'PUT', '/api/v1/volumes/cli/away/tags/mon', { body: await buildTar([{ name: 'f', body: 'monday' }]) })).status, 201);

  await server.db.client.close();
  const away = await raw(server.url, 'GET', '/api/v1/volumes/cli/away/tags');
  t.is(away.status, 503);
  t.is(away.headers['retry-after'], '10');

  // shorter than the wait the registry asks for: the refusal is the answer, as before
  const impatient = await runVolreg(['ls', 'cli/away', '--timeout', '5'], { url: server.url, cwd });
  t.is(impatient.code, 1, impatient.stderr);
  t.regex(impatient.stderr, /volreg ls: .*the metadata store is unreachable/);
  t.notRegex(impatient.stderr, /waiting/);

  // two agents wait together, one of them --quiet: once each has met the 503, the database comes back
  const refused = await refusals(server.url);
  const patient = runVolreg(['ls', 'cli/away'], { url: server.url, cwd });
  const quiet = runVolreg(['ls', 'cli/away', '--quiet'], { url: server.url, cwd });
  while ((await refusals(server.url)) < refused + 2) await new Promise((r) => setTimeout(r, 100));
  await server.db.client.connect();
  const [listed, quietly] = await Promise.all([patient, quiet]);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /\bmon\b/);
  t.regex(listed.stderr, /^volreg ls: waiting: GET \/api\/v1\/volumes\/cli\/away\/tags: the metadata store is unreachable; try again later \(HTTP 503\); sending it again in (1\d|20) s$/m);
  t.is(quietly.code, 0, quietly.stderr);
  t.is(quietly.stderr, '', '--quiet: the same wait without the line');
  t.regex(quietly.stdout, /\bmon\b/);
});

test('a backup meeting a database away for good gives up within --timeout in all, not --timeout per volume', async (t) => {
  const { server, cwd } = await serverAndWorkDir(t, 'e2e-cli-database-gone');
  for (const volume of ['first', 'second']) {
    await mkdir(join(cwd, 'volumes', volume), { recursive: true });
    await writeFile(join(cwd, 'volumes', volume, 'data'), `${volume} volume`);
  }
  await server.db.client.close();
  // each wait is 10-20 s (Retry-After: 10 plus up to as long at random): one fits in 20 s, two do not
  const backup = await runVolreg(['backup', '--tag', 'nightly', '--volumes-root', join(cwd, 'volumes'), '--timeout', '20', 'first,second'], { url: server.url, cwd });
  t.is(backup.code, 5, backup.stderr); // volumes failed
  const waits = backup.stderr.split('\n').filter((l) => /again in \d+ s/.test(l));
  t.is(waits.length, 1, backup.stderr);
  t.regex(waits[0] ?? '', /first/, 'the first volume waited');
  t.regex(backup.stderr, /second: .*the metadata store is unreachable/);
});

test('volreg rm whose DELETE the registry refused after removing the tag says so when the DELETE sent again finds nothing (exit 3), and the tag is gone', async (t) => {
  const server = await startTestServerBehindProxy('e2e-cli-rm-sent-again');
  t.teardown(() => server.close());
  const cwd = await mkdtemp(join(tmpdir(), 'volreg-rm-sent-again-'));
  t.teardown(() => rm(cwd, { recursive: true, force: true }));
  for (const tag of ['mon', 'tue']) {
    t.is((await raw(server.url, 'PUT', `/api/v1/volumes/cli/gone/tags/${tag}`, { body: await buildTar([{ name: 'f', body: tag }]) })).status, 201);
  }
  // the database changes its primary between the DELETE's removal of the tag and of the
  // snapshot's record (twice: the driver sends a retryable write again once)
  server.proxy.answer(commandOn('delete', 'volume_snapshots'), { ok: 0, code: 10107, codeName: 'NotWritablePrimary', errmsg: 'not primary' }, 2);
  const removed = await runVolreg(['rm', 'cli/gone:mon'], { url: server.url, cwd });
  t.is(removed.code, 3, removed.stderr);
  t.regex(removed.stderr, /volreg rm: waiting: DELETE \/api\/v1\/volumes\/cli\/gone\/tags\/mon: the metadata store is changing its primary/);
  t.regex(removed.stderr, /volreg rm: cli\/gone:mon is not there: the registry refused the first DELETE \(503\) and no longer had the tag when asked again/);
  const listed = await runVolreg(['ls', 'cli/gone', '--json'], { url: server.url, cwd });
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual((JSON.parse(listed.stdout) as { snapshots: Array<{ tag: string }> }).snapshots.map((s) => s.tag), ['tue']);
  // the volume list counts what the volume holds, not the record the refused DELETE left
  const volumes = JSON.parse((await raw(server.url, 'GET', '/api/v1/volumes')).body.toString()) as { volumes: Array<{ volume: string; snapshots: number; latest: { tag: string } }> };
  t.like(volumes.volumes.find((v) => v.volume === 'cli/gone'), { snapshots: 1, latest: { tag: 'tue' } });
});
