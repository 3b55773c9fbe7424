import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { StartInspectionWorker } from '../../src/workers/off-thread-inspector.ts';
import { runVolreg } from '../helpers/cli-run.ts';
import { InspectionWorkerFaults } from '../helpers/inspection-faults.ts';
import { startTestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * The host agent when many hosts back up at once: the registry refuses what it cannot take now
 * with 429 (or 503) and Retry-After, and the agent must wait and send again rather than fail the
 * backup. Here one address floods wrong passwords, so its share of the password-check queue is
 * full and the agent's first request (from the same address) is refused with 429.
 */

test('push waits out a 429 with Retry-After (a full password-check queue) instead of failing the backup', async (t) => {
  const { hashSync } = await import('bcryptjs');
  const work = await mkdtemp(join(tmpdir(), 'volreg-storm-'));
  const file = join(work, 'htpasswd');
  // cost 10: each check takes tens of milliseconds, so the flood keeps the queue full
  await writeFile(file, `ops:${hashSync('right', 10)}\n`);
  const server = await startTestServer({ label: 'e2e-cli-storm', env: { VOLREG_AUTH_FILE: file } });
  const { hostname, port } = new URL(server.url);
  let flooding = true;
  const wrong = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const req = request({ hostname, port, path: '/v2/', headers: { authorization: `Basic ${Buffer.from(`ops:wrong ${i}`).toString('base64')}` } }, (res) => {
        res.resume();
        res.on('end', () => setTimeout(resolve, res.statusCode === 429 ? 20 : 0));
      });
      req.on('error', () => resolve());
      req.end();
    });
  // 12 in flight from 127.0.0.1: one running, 8 waiting (this address's share), the rest refused
  const flood = Array.from({ length: 12 }, async (_, lane) => {
    for (let i = 0; flooding; i++) await wrong(lane * 1e6 + i);
  });
  const refusedAgent = async (): Promise<number> => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('volreg_http_requests_total{route="volumeTag",method="GET",status="429"}'));
    return line ? Number(line.split(' ')[1]) : 0;
  };
  try {
    const archive = await buildTar([{ name: 'a.txt', body: 'backed up in a storm\n' }]);
    const push = runVolreg(['push', '-', 'storm/app:nightly', '--user', 'ops', '--password', 'right', '--timeout', '60'], { url: server.url, cwd: work, input: archive });
    // the flood lasts until the agent has been refused at least once, then the queue drains
    const deadline = Date.now() + 30_000;
    while ((await refusedAgent()) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    flooding = false;
    t.true((await refusedAgent()) > 0, 'the agent met a 429');
    const result = await push;
    t.is(result.code, 0, result.stderr);
    const got = await fetch(`${server.url}/api/v1/volumes/storm/app/tags/nightly`, { headers: { authorization: `Basic ${Buffer.from('ops:right').toString('base64')}` } });
    t.is(got.status, 200);
  } finally {
    flooding = false;
    await Promise.all(flood);
    await server.close();
    await rm(work, { recursive: true, force: true });
  }
});

test('push of a directory refused mid-upload with 503 and Retry-After packs and sends it again', async (t) => {
  // the archive inspection's worker dies once, as it might for want of threads or descriptors
  // in a storm: that upload is answered 503 with Retry-After and nothing of it is kept
  const faults = new InspectionWorkerFaults();
  faults.fault = 'dies-mid-inspection';
  const startOnce: StartInspectionWorker = (data) => {
    const worker = faults.start(data);
    faults.fault = 'none';
    return worker;
  };
  const server = await startTestServer({ label: 'e2e-cli-storm-503', startInspectionWorker: startOnce });
  const work = await mkdtemp(join(tmpdir(), 'volreg-storm-'));
  try {
    const volume = join(work, 'app-data');
    await mkdir(volume);
    await writeFile(join(volume, 'data.bin'), randomBytes(8 * 1024 * 1024));
    const push = await runVolreg(['push', volume, 'storm/dir:nightly'], { url: server.url, cwd: work });
    t.is(faults.injected, 1, 'the first upload met the fault');
    t.is(push.code, 0, push.stderr);
    t.regex(push.stderr, /UNAVAILABLE|unavailable/);
    t.regex(push.stderr, /packing and sending storm\/dir:nightly again/);
    const out = join(work, 'out');
    const pull = await runVolreg(['pull', 'storm/dir:nightly', out], { url: server.url, cwd: work });
    t.is(pull.code, 0, pull.stderr);
  } finally {
    await faults.stopWorkers();
    await server.close();
    await rm(work, { recursive: true, force: true });
  }
});
