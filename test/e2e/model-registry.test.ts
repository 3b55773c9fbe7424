import test from 'ava';
import fc from 'fast-check';
import { CheckAll, commandArbs, type ModelState, type Real } from '../helpers/model-commands.ts';
import { RegistryModel } from '../helpers/model-registry.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { runVolreg } from '../helpers/cli-run.ts';
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

function gc(deleteUntagged: boolean): ReturnType<typeof runVolreg> {
  const env = { VOLREG_MONGODB_URL: server.config.mongodbUrl!, VOLREG_MONGODB_DATABASE: server.config.mongodbDatabase, VOLREG_DATA_DIR: server.dataDir, VOLREG_LOG_LEVEL: 'warn' };
  return runVolreg(['gc', '--grace', '0', '--json', ...(deleteUntagged ? ['--delete-untagged'] : [])], { url: server.url, cwd: server.dataDir, env });
}

test('a generated sequence of /v2 requests always answers as the model of the contract says', async (t) => {
  let run = 0;
  const seed = fuzzSeed(20260524);
  const numRuns = fuzzRuns(25);
  // `volreg gc` is a process of its own: about one sequence in five may run it, once
  const property = fc.asyncProperty(fc.commands(commandArbs(), { maxCommands: 80, size: 'max' }), fc.integer({ min: 0, max: 4 }), async (cmds, gcDraw) => {
    const gcBudget = gcDraw === 0 ? 1 : 0;
    const setup = (): { model: ModelState; real: Real } => ({ model: { model: new RegistryModel(), prefix: `model${String(run++).padStart(6, '0')}`, gcBudget }, real: { url: server.url, gc } });
    await fc.asyncModelRun(setup, [...cmds, new CheckAll()]);
  });
  await t.notThrowsAsync(fc.assert(property, { seed, numRuns, includeErrorInReport: true }));
});
