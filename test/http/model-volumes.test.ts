import test from 'ava';
import fc from 'fast-check';
import { allVolumeNames, apiDelete, checkAll, makeLayers, TAGS, VOLUMES, volumeCommandArbs, type Layer, type VolState } from '../helpers/model-volumes.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Model-based test of the snapshot API (/api/v1): random sequences of pushes (plain, gzip and
 * zstd tars; host by header or query; labels; with and without the expected digest, a wrong one
 * too; If-Match and If-None-Match), the same snapshots pushed as OCI artifacts through /v2,
 * deletes through either API (by tag, and by digest through /v2), verify, metadata, content
 * whole and in ranges, content.sha256, and both listings walked page by page with random page
 * sizes and filters while other pushes and deletes land between the pages; each answer is
 * checked against the model of README "Volume snapshots" (test/helpers/model-volumes.ts).
 */

let server: TestServer;
let layers: Layer[] = [];
test.before(async () => {
  server = await startTestServer({ label: 'model_volumes' });
  layers = makeLayers();
});
test.after.always(async () => {
  await server?.close();
});

test('a generated sequence of /api/v1 requests always answers as the model of the contract says', async (t) => {
  let run = 0;
  const seed = fuzzSeed(20261124);
  const numRuns = fuzzRuns(12);
  const property = fc.asyncProperty(fc.commands(volumeCommandArbs(), { maxCommands: 40, size: 'max' }), async (cmds) => {
    const prefix = `mv${String(run++).padStart(6, '0')}`;
    const foreignVolumes = (await allVolumeNames(server.url)).length;
    const state: VolState = { vols: new Map(), prefix, layers, foreignVolumes };
    const real = { url: server.url };
    await fc.asyncModelRun(() => ({ model: state, real }), [...cmds, checkAll()]);
    // the next run counts the volumes of this one only if it failed
    for (const v of VOLUMES) for (const tag of TAGS) if (state.vols.get(v)?.has(tag)) await apiDelete(state, real, v, tag, 'none');
  });
  await t.notThrowsAsync(fc.assert(property, { seed, numRuns, includeErrorInReport: true }));
});
