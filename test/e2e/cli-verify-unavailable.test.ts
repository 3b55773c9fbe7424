import { execFile } from 'node:child_process';
import test from 'ava';
import { InspectionWorkerFaults } from '../helpers/inspection-faults.ts';
import { startTestServer, VOLREG_BIN } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import { raw } from '../http/blobs-client.ts';

/**
 * `volreg verify` when the registry cannot make the check (its archive inspection unavailable:
 * 503): no finding on the snapshots, so they are reported as not verified and the exit code is 1,
 * not the 4 that says a backup is damaged (a monitoring job alerts on that).
 */

test('a verify the registry cannot make is NOT VERIFIED, exit 1, and records nothing; once it can, exit 0', async (t) => {
  const faults = new InspectionWorkerFaults();
  const server = await startTestServer({ label: 'cli-verify-unavailable', startInspectionWorker: faults.start });
  t.teardown(async () => {
    await faults.stopWorkers();
    await server.close();
  });
  const tar = await buildTar([{ name: 'data.txt', body: 'a healthy backup '.repeat(1000) }]);
  for (const tag of ['mon', 'tue']) t.is((await raw(server.url, 'PUT', `/api/v1/volumes/cli/unverified/tags/${tag}`, { body: tar })).status, 201);

  const volreg = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [VOLREG_BIN, ...args], { env: { ...process.env, VOLREG_URL: server.url } }, (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });

  await faults.stopWorkers();
  faults.fault = 'thread-refused';
  const down = await volreg(['verify', 'cli/unverified']);
  t.is(down.code, 1, down.stderr);
  t.regex(down.stderr, /cli\/unverified:mon: NOT VERIFIED/);
  t.regex(down.stderr, /archive inspection is unavailable/);
  t.regex(down.stderr, /verified 2 snapshots: 0 ok, 0 failed, 2 not verified/);
  t.notRegex(down.stderr, /FAILED/);
  const json = JSON.parse((await volreg(['verify', 'cli/unverified', '--json'])).stdout) as { failed: number; notVerified: number; snapshots: Array<{ checked: boolean }> };
  t.like(json, { failed: 0, notVerified: 2 });
  t.true(json.snapshots.every((s) => !s.checked));
  // nothing recorded on the snapshots
  const meta = JSON.parse((await raw(server.url, 'GET', '/api/v1/volumes/cli/unverified/tags/mon')).body.toString()) as { lastVerify: unknown };
  t.is(meta.lastVerify ?? null, null);

  faults.fault = 'none';
  await faults.stopWorkers();
  const up = await volreg(['verify', 'cli/unverified']);
  t.is(up.code, 0, up.stderr);
  t.regex(up.stderr, /verified 2 snapshots: 2 ok, 0 failed\n/);
});
