import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A request refused before its body is read (no credentials, a bad name) must still reach the
 * client as that refusal: real curl uploads a body and must read the 401 or 400, not a reset.
 */

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'volreg-early-'));
const htpasswd = join(dir, 'htpasswd');
const body = join(dir, 'body.bin');
let server: TestServer;

test.before(async () => {
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswd, 'alice', 'secret'], { stdio: 'ignore' });
  writeFileSync(body, randomBytes(8 * 1024 * 1024));
  server = await startTestServer({ label: 'early-refusal', env: { VOLREG_AUTH_FILE: htpasswd } });
});
test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function curlUpload(args: string[], url: string): Promise<{ status: string; body: string }> {
  const out = join(dir, `reply-${Math.random().toString(36).slice(2)}`);
  // curl exits non-zero on a reset ("Connection reset by peer", "Send failure"): that rejects here.
  const { stdout } = await run('curl', ['-sS', '-o', out, '-w', '%{http_code}', '-T', body, ...args, url]);
  const { readFileSync } = await import('node:fs');
  return { status: stdout.trim(), body: readFileSync(out, 'utf8') };
}

test('an unauthenticated 8 MiB upload reads its 401, not a reset', async (t) => {
  for (let i = 0; i < 3; i++) {
    const reply = await curlUpload([], `${server.url}/api/v1/volumes/team/pg/tags/t${i}`);
    t.is(reply.status, '401');
    t.is((JSON.parse(reply.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
  }
});

test('an 8 MiB upload to an invalid name reads its 400 NAME_INVALID', async (t) => {
  const reply = await curlUpload(['-u', 'alice:secret'], `${server.url}/api/v1/volumes/Bad..Name/tags/t`);
  t.is(reply.status, '400');
  t.is((JSON.parse(reply.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NAME_INVALID');
});

test('the connection stays usable after a drained refusal', async (t) => {
  // two requests on one curl invocation reuse the connection: the refused body must not be
  // parsed as the second request
  const { stdout } = await run('curl', [
    '-sS', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', '-T', body, `${server.url}/api/v1/volumes/x/tags/a`,
    '--next', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', '-u', 'alice:secret', `${server.url}/v2/`,
  ]);
  const [first, second] = stdout.trim().split('\n');
  t.is(first?.split(' ')[0], '401');
  t.is(second, '200 0', 'the second request reused the connection and was answered');
});
