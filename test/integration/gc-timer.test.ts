import test from 'ava';
import type { Digest } from '../../src/domain/digest.ts';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { collections } from '../../src/metadata/collections.ts';
import { pushBlobs, request, repoName } from '../helpers/oci-client.ts';
import { randomBlob } from '../helpers/manifest-fixtures.ts';
import { startTestServer } from '../helpers/server.ts';

/** The garbage collection timer of serve and its configuration. */

test('VOLREG_GC_* defaults: off, 1 h grace, untagged kept', (t) => {
  const { config } = loadConfig({}, { cwd: '/tmp' });
  t.deepEqual(config.gc, { intervalSeconds: 0, graceSeconds: 3600, deleteUntagged: false });
});

test('VOLREG_GC_* values are parsed; bad ones are reported by name', (t) => {
  const { config } = loadConfig({ VOLREG_GC_INTERVAL: '600', VOLREG_GC_GRACE: '0', VOLREG_GC_DELETE_UNTAGGED: 'yes' }, { cwd: '/tmp' });
  t.deepEqual(config.gc, { intervalSeconds: 600, graceSeconds: 0, deleteUntagged: true });
  const err = t.throws(() => loadConfig({ VOLREG_GC_INTERVAL: '-1', VOLREG_GC_GRACE: '1h', VOLREG_GC_DELETE_UNTAGGED: 'maybe' }, { cwd: '/tmp' }));
  t.true(err instanceof ConfigError);
  const problems = (err as ConfigError).problems;
  t.is(problems.length, 3);
  t.regex(problems[0]!, /^VOLREG_GC_INTERVAL: "-1" is not a whole number of seconds/);
  t.regex(problems[1]!, /^VOLREG_GC_GRACE: "1h" is not a whole number of seconds/);
  t.regex(problems[2]!, /^VOLREG_GC_DELETE_UNTAGGED: "maybe" is not true or false/);
});

test('serve collects garbage every VOLREG_GC_INTERVAL seconds (unit, then bytes)', async (t) => {
  const server = await startTestServer({ label: 'gc_timer', env: { VOLREG_GC_INTERVAL: '1', VOLREG_GC_GRACE: '0', VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  try {
    const c = collections(server.db);
    const repo = repoName('gc-timer');
    const blob = randomBlob(777);
    await pushBlobs(server.url, repo, [blob]);
    t.is((await request(server.url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);
    // a collection deletes the unit, then the bytes: wait for the round to get to both
    const bytes = () => server.services.blobStore!.stat(blob.digest as Digest);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && ((await c.blobs.findOne({ digest: blob.digest })) || (await bytes()))) await new Promise((r) => setTimeout(r, 200));
    t.is(await c.blobs.findOne({ digest: blob.digest }), null, 'the timer deleted the unit');
    t.is(await bytes(), null, 'and the bytes');
  } finally {
    await server.close();
  }
});
