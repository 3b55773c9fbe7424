import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { pino } from 'pino';
import { collectGarbage } from '../../src/maintenance/gc.ts';
import { collections } from '../../src/metadata/collections.ts';
import type { ManifestService } from '../../src/services/manifest-service.ts';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * A snapshot push whose layer a garbage collection takes between storing it and tagging it (a
 * VOLREG_GC_GRACE of 0, as an operator may set it): nothing is kept, and the client is told to
 * send it again (503 with Retry-After, which `volreg push` waits out and sends again), not a
 * 400 about a manifest it never wrote.
 */
let server: TestServer;
let work = '';

test.before(async () => {
  server = await startTestServer({ label: 'e2e-push-gc-grace', env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  work = await mkdtemp(join(tmpdir(), 'volreg-push-gc-grace-'));
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** The next `times` manifest pushes run a collection with a grace of 0 first, as a timed one may. */
function collectBeforeManifestPushes(times: number): { runs: () => number } {
  const manifests = server.services.manifests as ManifestService & { put: ManifestService['put'] };
  const real = manifests.put.bind(manifests);
  let runs = 0;
  manifests.put = async (...args: Parameters<ManifestService['put']>) => {
    if (runs < times) {
      runs++;
      await collectGarbage({
        collections: collections(server.db),
        blobStore: server.services.blobStore,
        logger: pino({ level: 'silent' }),
        graceSeconds: 0,
        deleteUntagged: true,
        dryRun: false,
        now: () => new Date(Date.now() + 3600_000),
      });
    }
    return real(...args);
  };
  return { runs: () => runs };
}

test.serial('curl: the layer collected before the tag is a 503 to send again, and nothing is kept', async (t) => {
  const gc = collectBeforeManifestPushes(1);
  const tar = new Uint8Array(await buildTar([{ name: 'f', body: 'grace zero' }]));
  const url = `${server.url}/api/v1/volumes/grace/curl/tags/v1`;
  const refused = await fetch(url, { method: 'PUT', body: tar });
  t.is(gc.runs(), 1);
  t.is(refused.status, 503);
  t.is(refused.headers.get('retry-after'), '1');
  const body = (await refused.json()) as { errors: Array<{ code: string; message: string }> };
  t.is(body.errors[0]!.code, 'UNAVAILABLE');
  t.regex(body.errors[0]!.message, /garbage collection removed this snapshot's layer or config before its tag was written .*push it again/);
  t.is((await fetch(url)).status, 404, 'no snapshot');

  const again = await fetch(url, { method: 'PUT', body: tar });
  t.is(again.status, 201);
  t.deepEqual(new Uint8Array(await (await fetch(`${url}/content`)).arrayBuffer()), tar);
});

test.serial('volreg push: waits out the refusal, packs again and succeeds', async (t) => {
  const dir = join(work, 'vol');
  await mkdir(dir);
  await writeFile(join(dir, 'data'), 'pushed while gc runs with no grace');
  const gc = collectBeforeManifestPushes(1);
  const push = await runVolreg(['push', dir, 'grace/cli:v1'], { url: server.url, cwd: work });
  t.is(gc.runs(), 1);
  t.is(push.code, 0, push.stderr);
  const pull = await runVolreg(['pull', 'grace/cli:v1', join(work, 'out')], { url: server.url, cwd: work });
  t.is(pull.code, 0, pull.stderr);
});
