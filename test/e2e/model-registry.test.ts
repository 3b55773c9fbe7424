import test from 'ava';
import fc from 'fast-check';
import { CheckAll, commandArbs, type ModelState, type Real } from '../helpers/model-commands.ts';
import { RegistryModel } from '../helpers/model-registry.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/model-runs.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Model-based test of /v2: random sequences of blob uploads (monolithic, chunked, mounted),
 * manifest pushes of every media type by tag and by digest, reads by tag with generated Accept
 * lists and by digest, deletes, tags/list and _catalog walked page by page, and referrers, each
 * checked against RegistryModel (what README and DESIGN.md promise) as it happens.
 */

let server: TestServer;
test.before(async () => {
  server = await startTestServer({ label: 'model_registry' });
});
test.after.always(async () => {
  await server?.close();
});

test('a generated sequence of /v2 requests always answers as the model of the contract says', async (t) => {
  let run = 0;
  const seed = fuzzSeed(20260524);
  const numRuns = fuzzRuns(25);
  const property = fc.asyncProperty(fc.commands(commandArbs(), { maxCommands: 80, size: 'max' }), async (cmds) => {
    const setup = (): { model: ModelState; real: Real } => ({ model: { model: new RegistryModel(), prefix: `model${String(run++).padStart(6, '0')}` }, real: { url: server.url } });
    await fc.asyncModelRun(setup, [...cmds, new CheckAll()]);
  });
  await t.notThrowsAsync(fc.assert(property, { seed, numRuns, includeErrorInReport: true }));
});
