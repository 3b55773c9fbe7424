import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ConfigError } from '../../src/config/load-config.ts';
import { loadHtpasswd } from '../../src/http/auth.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * HTTP Basic authentication with a real `htpasswd -B` file (Debian apache2-utils), through the
 * real composition (startServer) on a real port.
 */

const dir = mkdtempSync(join(tmpdir(), 'volreg-auth-'));
const htpasswdFile = join(dir, 'htpasswd');
let server: TestServer;
const logLines: Array<Record<string, unknown>> = [];

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

test.before(async () => {
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswdFile, 'alice', 'wonder land'], { stdio: 'ignore' });
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', htpasswdFile, 'bob', 'p:ss:word'], { stdio: 'ignore' });
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    }),
  );
  server = await startTestServer({ label: 'auth', env: { VOLREG_AUTH_FILE: htpasswdFile }, logger });
});
test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('without credentials /v2 and /api/v1 are 401 UNAUTHORIZED with a Basic challenge', async (t) => {
  for (const path of ['/v2/', '/v2/_catalog', '/v2/library/app/manifests/latest', '/api/v1/volumes', '/v2/no/such/route/at/all']) {
    const res = await fetch(server.url + path);
    t.is(res.status, 401, path);
    t.is(res.headers.get('www-authenticate'), 'Basic realm="volreg"', path);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    t.is(body.errors[0]!.code, 'UNAUTHORIZED', path);
  }
});

test('wrong passwords, unknown users and malformed headers are 401', async (t) => {
  const headers = [
    basic('alice', 'wrong'),
    basic('alice', ''),
    basic('mallory', 'wonder land'),
    basic('', ''),
    'Basic !!!not-base64!!!',
    `Basic ${Buffer.from('no-colon').toString('base64')}`,
    'Bearer abc',
    `Basic ${'A'.repeat(10000)}`,
  ];
  for (const authorization of headers) {
    const res = await fetch(`${server.url}/v2/`, { headers: { authorization } });
    t.is(res.status, 401, authorization.slice(0, 40));
    t.is(res.headers.get('www-authenticate'), 'Basic realm="volreg"');
  }
});

test('a user of the htpasswd file gets in, passwords with spaces and colons included', async (t) => {
  const res = await fetch(`${server.url}/v2/`, { headers: { authorization: basic('alice', 'wonder land') } });
  t.is(res.status, 200);
  t.deepEqual(await res.json(), {});
  const bob = await fetch(`${server.url}/v2/`, { headers: { authorization: basic('bob', 'p:ss:word'), 'X-Request-Id': 'bob-was-here' } });
  t.is(bob.status, 200);
  // the access log names the user
  t.like(
    logLines.find((l) => l.requestId === 'bob-was-here' && l.msg === 'request'),
    { user: 'bob', status: 200 },
  );
  // a cached success must not let a different password in
  const again = await fetch(`${server.url}/v2/`, { headers: { authorization: basic('alice', 'wonder land!') } });
  t.is(again.status, 401);
  // authenticated requests reach the router: an unknown route is now 404
  const unknown = await fetch(`${server.url}/v2/no/such/route/at/all`, { headers: { authorization: basic('alice', 'wonder land') } });
  t.is(unknown.status, 404);
});

test('/healthz, /readyz and /metrics stay open', async (t) => {
  for (const path of ['/healthz', '/readyz', '/metrics']) {
    const res = await fetch(server.url + path);
    t.is(res.status, 200, path);
  }
});

test('an htpasswd file with non-bcrypt entries is refused with the line number', async (t) => {
  const md5 = join(dir, 'md5');
  execFileSync('htpasswd', ['-m', '-b', '-c', md5, 'carol', 'secret'], { stdio: 'ignore' });
  const err = await t.throwsAsync(loadHtpasswd(md5), { instanceOf: ConfigError });
  t.regex(err!.message, /^VOLREG_AUTH_FILE: line 1 \(user "carol"\): only bcrypt entries are supported/);
  const empty = join(dir, 'empty');
  writeFileSync(empty, '# nobody\n\n');
  await t.throwsAsync(loadHtpasswd(empty), { message: /has no users/ });
  const junk = join(dir, 'junk');
  writeFileSync(junk, 'just some text\n');
  await t.throwsAsync(loadHtpasswd(junk), { message: /line 1: not a user:hash entry/ });
  // the real server refuses to start on it
  await t.throwsAsync(startTestServer({ label: 'auth_bad', env: { VOLREG_AUTH_FILE: md5 } }), { instanceOf: ConfigError });
});
