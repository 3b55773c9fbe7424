import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import type { Digest } from '../../src/domain/digest.ts';
import { ConfigError, loadConfig } from '../../src/config/load-config.ts';
import { collections } from '../../src/metadata/collections.ts';
import { pushBlobs, putManifest, request, repoName } from '../helpers/oci-client.ts';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
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

test("the server's own collection reports blobs that manifests use and the store lacks on /metrics, until they are uploaded again", async (t) => {
  const server = await startTestServer({ label: 'gc_timer_missing', env: { VOLREG_GC_INTERVAL: '1', VOLREG_GC_GRACE: '0', VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  try {
    const repo = repoName('gc-missing');
    const config = configBlob();
    const layer = randomBlob(999);
    await pushBlobs(server.url, repo, [config, layer]);
    t.is((await putManifest(server.url, repo, 'v1', ociManifest({ config, layers: [layer] }))).status, 201);
    const gauge = async (name: string): Promise<number> => {
      const text = (await request(server.url, '/metrics')).body.toString();
      return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    };
    const waitFor = async (name: string, wanted: (value: number) => boolean): Promise<number> => {
      const deadline = Date.now() + 15_000;
      let seen = await gauge(name);
      while (Date.now() < deadline && !wanted(seen)) {
        await new Promise((r) => setTimeout(r, 200));
        seen = await gauge(name);
      }
      return seen;
    };
    t.true((await waitFor('volreg_gc_last_run_finished_timestamp_seconds', (v) => v > 0)) > 0, 'a run finished');
    t.is(await gauge('volreg_gc_missing_blobs'), 0, 'nothing missing');

    const hex = layer.digest.slice('sha256:'.length);
    await rm(join(server.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
    t.is(await waitFor('volreg_gc_missing_blobs', (v) => v === 1), 1, 'the lost layer is reported');

    await pushBlobs(server.url, repo, [layer]);
    t.is(await waitFor('volreg_gc_missing_blobs', (v) => v === 0), 0, 'uploaded again: nothing missing');
  } finally {
    await server.close();
  }
});
