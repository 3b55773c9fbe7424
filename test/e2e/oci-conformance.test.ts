import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The OCI distribution-spec conformance suite's workflows (pull, push, content discovery,
 * content management), replayed request by request with its payloads and assertions by
 * conformance/replay.mjs (the suite itself is Go), plus the later suite's extra checks. Every
 * check must pass; the transcript of all requests is attached to a failure.
 */

let server: TestServer;
let dir: string;
test.before(async () => {
  server = await startTestServer({ label: 'e2e_conformance' });
  dir = await mkdtemp(join(tmpdir(), 'volreg-conformance-'));
});
test.after.always(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the conformance workflows replayed against volreg: every check passes', async (t) => {
  const transcript = join(dir, 'transcript.log');
  const script = join(import.meta.dirname, 'conformance', 'replay.mjs');
  const out = await new Promise<{ code: number; stdout: string }>((resolve, reject) => {
    execFile(process.execPath, [script, '--url', server.url, '--transcript', transcript], { timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout });
    });
  });
  const suite = /Ginkgo suite replay: (\d+)\/(\d+) checks passed; (\d+) specs: (\d+) passed, (\d+) failed/.exec(out.stdout);
  const extra = /EXTRA \(not asserted by the Ginkgo suite\): (\d+)\/(\d+) passed/.exec(out.stdout);
  // where the suite only warns (an optional feature missing), volreg has the feature: a warning is a regression
  const warnings = /=== warnings: (\d+)/.exec(out.stdout);
  const context = out.code === 0 ? out.stdout : `${out.stdout}\n--- transcript tail ---\n${(await readFile(transcript, 'utf8').catch(() => '')).slice(-8000)}`;
  t.is(out.code, 0, context);
  t.truthy(suite, context);
  t.truthy(extra, context);
  t.is(warnings?.[1], '0', context);
  if (!suite || !extra) return;
  // not vacuous: the replay made its checks, and none failed
  t.true(Number(suite[2]) >= 180, context);
  t.is(suite[1], suite[2], context);
  t.is(suite[5], '0', context);
  t.true(Number(extra[2]) >= 60, context);
  t.is(extra[1], extra[2], context);
});
