import test from 'ava';
import { InspectionWorkerFaults } from '../helpers/inspection-faults.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import { errorCode, raw, type RawResponse } from './blobs-client.ts';

/**
 * The archive inspection's worker failing (it cannot start, or dies mid-inspection) says
 * nothing about the archive: a verify answers 503 and records nothing, a push answers 503 and
 * tags nothing. (A verdict on the bytes is still a verify's finding: volumes.test.ts.) Serial:
 * one fault at a time.
 */

const faults = new InspectionWorkerFaults();
let server: TestServer;
let tar: Buffer;

test.before(async () => {
  server = await startTestServer({ label: 'inspection-unavailable', startInspectionWorker: faults.start });
  tar = await buildTar([{ name: 'data.txt', body: 'a healthy backup '.repeat(5000) }]);
});

test.after.always(async () => {
  await faults.stopWorkers();
  await server?.close();
});

const verify = (volume: string, tag: string): Promise<RawResponse> => raw(server.url, 'POST', `/api/v1/volumes/${volume}/tags/${tag}/verify`);
const push = (volume: string, tag: string): Promise<RawResponse> => raw(server.url, 'PUT', `/api/v1/volumes/${volume}/tags/${tag}`, { body: tar });
const lastVerify = async (volume: string, tag: string): Promise<unknown> =>
  (JSON.parse((await raw(server.url, 'GET', `/api/v1/volumes/${volume}/tags/${tag}`)).body.toString()) as { lastVerify: unknown }).lastVerify;

function isRetryLater(t: import('ava').ExecutionContext, res: RawResponse, why: RegExp): void {
  t.is(res.status, 503, res.body.toString());
  t.is(errorCode(res.body), 'UNAVAILABLE');
  t.is(res.headers['retry-after'], '1');
  t.regex(res.body.toString(), /archive inspection is unavailable/);
  t.regex(res.body.toString(), why);
}

/** With `fault` on for the next worker the inspector starts, runs `during`; then heals. */
async function withFault(fault: InspectionWorkerFaults['fault'], during: () => Promise<void>): Promise<void> {
  await faults.stopWorkers();
  const before = faults.injected;
  faults.fault = fault;
  try {
    await during();
  } finally {
    faults.fault = 'none';
  }
  if (faults.injected === before) throw new Error(`the fault ${fault} was never injected`);
}

for (const [fault, why] of [
  ['thread-refused', /could not start/],
  ['dies-mid-inspection', /stopped/],
] as const) {
  test.serial(`${fault}: verify answers 503 and records nothing; the next verify is ok`, async (t) => {
    const volume = `unavailable/verify-${fault}`;
    t.is((await push(volume, 'never')).status, 201);
    t.is((await push(volume, 'checked')).status, 201);
    const first = await verify(volume, 'checked');
    t.is(first.status, 200);
    const recorded = await lastVerify(volume, 'checked');
    t.like(recorded, { ok: true });

    await withFault(fault, async () => {
      isRetryLater(t, await verify(volume, 'never'), why);
      isRetryLater(t, await verify(volume, 'checked'), why);
    });
    t.is(await lastVerify(volume, 'never'), null, 'a snapshot never verified still shows none');
    t.deepEqual(await lastVerify(volume, 'checked'), recorded, 'the earlier result stands');

    const again = await verify(volume, 'never');
    t.is(again.status, 200);
    t.like(JSON.parse(again.body.toString()), { ok: true, lastVerify: { ok: true, problems: [] } });
  });

  test.serial(`${fault}: a push answers 503 and leaves no tag; the next push is stored`, async (t) => {
    const volume = `unavailable/push-${fault}`;
    await withFault(fault, async () => {
      isRetryLater(t, await push(volume, 'v1'), why);
    });
    t.is((await raw(server.url, 'GET', `/api/v1/volumes/${volume}/tags/v1`)).status, 404);
    t.is((await raw(server.url, 'GET', `/v2/${volume}/tags/list`)).status, 404);
    t.is((await push(volume, 'v1')).status, 201);
  });
}
