import test from 'ava';
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ConfigError } from '../../src/config/load-config.ts';
import { basicAuth, loadHtpasswd } from '../../src/http/auth.ts';
import { isVolregError } from '../../src/domain/errors.ts';
import { OffThreadPasswords } from '../../src/workers/off-thread-passwords.ts';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * HTTP Basic authentication with a real `htpasswd -B` file (Debian apache2-utils), through the
 * real composition (startServer) on a real port. The tests that queue password checks run one
 * at a time: checks wait per client address, and the others come from the same one.
 */

const dir = mkdtempSync(join(tmpdir(), 'volreg-auth-'));
const htpasswdFile = join(dir, 'htpasswd');
let server: TestServer;
const { logger, lines: logLines } = capturedLog('info');

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

test.before(async () => {
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswdFile, 'alice', 'wonder land'], { stdio: 'ignore' });
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', htpasswdFile, 'bob', 'p:ss:word'], { stdio: 'ignore' });
  // a costly hash (hundreds of ms per check), as a careful operator would choose
  execFileSync('htpasswd', ['-B', '-C', '12', '-b', htpasswdFile, 'carol', 'slow to check'], { stdio: 'ignore' });
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
  // empty credentials (skopeo sends `Basic Og==` when it has none) are no credentials, not wrong ones
  for (const [authorization, message] of [
    [basic('', ''), 'authentication required'],
    [basic('alice', 'wrong'), 'invalid username or password'],
  ] as const) {
    const res = await fetch(`${server.url}/v2/`, { headers: { authorization } });
    t.is(((await res.json()) as { errors: Array<{ message: string }> }).errors[0]!.message, message, authorization);
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
  for (const cost of ['03', '32', '99']) {
    const bad = join(dir, `cost-${cost}`);
    writeFileSync(bad, readFileSync(htpasswdFile, 'utf8').replace(/^(alice:\$2y\$)\d\d/m, `$1${cost}`));
    await t.throwsAsync(loadHtpasswd(bad), { message: /line 1 \(user "alice"\): only bcrypt entries are supported/ }, cost);
  }
  const junk = join(dir, 'junk');
  writeFileSync(junk, 'just some text\n');
  await t.throwsAsync(loadHtpasswd(junk), { message: /line 1: not a user:hash entry/ });
  // the real server refuses to start on it
  await t.throwsAsync(startTestServer({ label: 'auth_bad', env: { VOLREG_AUTH_FILE: md5 } }), { instanceOf: ConfigError });
});

test.serial('wrong passwords checked against a costly hash do not hold up other requests', async (t) => {
  // alice has been checked once: her next requests are answered from the success cache
  t.is((await fetch(`${server.url}/v2/`, { headers: { authorization: basic('alice', 'wonder land') } })).status, 200);
  const order: string[] = [];
  const wrong = Array.from({ length: 6 }, (_, i) =>
    fetch(`${server.url}/v2/`, { headers: { authorization: basic('carol', `guess ${i}`) } }).then((r) => {
      order.push('refused');
      t.is(r.status, 401);
    }),
  );
  await new Promise((r) => setTimeout(r, 50)); // the checks are under way
  const health = await fetch(`${server.url}/healthz`);
  order.push('healthz');
  t.is(health.status, 200);
  const cached = await fetch(`${server.url}/v2/`, { headers: { authorization: basic('alice', 'wonder land') } });
  order.push('alice');
  t.is(cached.status, 200);
  await Promise.all(wrong);
  t.deepEqual(order.slice(0, 2), ['healthz', 'alice'], order.join(' '));
  const right = await fetch(`${server.url}/v2/`, { headers: { authorization: basic('carol', 'slow to check') } });
  t.is(right.status, 200);
});

test('an unknown user is checked against a real hash as well (a refusal takes as long), and the checks waiting are bounded (429)', async (t) => {
  const compared: string[] = [];
  const file = await loadHtpasswd(htpasswdFile);
  const users = file.users;
  const passwords = { compare: async (_password: string, hash: string) => (compared.push(hash), false), close: async () => {} } as unknown as OffThreadPasswords;
  const auth = basicAuth(file, pino({ level: 'silent' }), passwords);
  const ctx = { path: '/v2/', state: {}, ip: '127.0.0.1', res: new EventEmitter(), get: () => basic('mallory', 'x') } as never;
  await t.throwsAsync(auth.authenticate(ctx, async () => {}) as Promise<unknown>);
  t.deepEqual(compared, [users.get('alice')], 'one comparison, against a real hash');

  const real = new OffThreadPasswords(3, 2);
  try {
    const carol = users.get('carol')!;
    // one running, two waiting: this client's share
    const checks = [real.compare('slow to check', carol), real.compare('wrong', carol), real.compare('third', carol)];
    const refused = await real.compare('fourth', carol).catch((err: unknown) => err);
    t.true(isVolregError(refused) && refused.code === 'TOOMANYREQUESTS' && refused.status === 429, String(refused));
    // a client of its own still has a turn; past the total, nobody
    const other = real.compare('slow to check', carol, { client: 'other' });
    const full = await real.compare('fifth', carol, { client: 'third' }).catch((err: unknown) => err);
    t.true(isVolregError(full) && full.code === 'TOOMANYREQUESTS', String(full));
    t.deepEqual(await Promise.all([...checks, other]), [true, false, false, true]);
  } finally {
    await real.close();
  }
});

test('checks take turns between clients, and a check whose client went away is dropped unrun', async (t) => {
  const { users } = await loadHtpasswd(htpasswdFile);
  const carol = users.get('carol')!;
  const passwords = new OffThreadPasswords();
  try {
    const order: string[] = [];
    const ask = (name: string, client: string, signal?: AbortSignal) => passwords.compare(name, carol, { client, signal }).then((ok) => (order.push(name), ok));
    const flood = ['a1', 'a2', 'a3', 'a4'].map((n) => ask(n, 'flooder'));
    const left = new AbortController();
    const gone = ask('a5', 'flooder', left.signal);
    const login = ask('slow to check', 'someone else');
    left.abort();
    await t.throwsAsync(gone, { message: 'the client went away' });
    t.deepEqual(await Promise.all([...flood, login]), [false, false, false, false, true]);
    // the flooder's first check was already running; the other client's came next but one
    t.deepEqual(order, ['a1', 'a2', 'slow to check', 'a3', 'a4']);
  } finally {
    await passwords.close();
  }
});

test.serial('a flood of wrong passwords from one address does not lock out a login from another (no 429 for it)', async (t) => {
  const { request } = await import('node:http');
  const { hostname, port } = new URL(server.url);
  const get = (from: string, authorization: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request({ hostname, port, path: '/v2/', localAddress: from, headers: { authorization } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  const flood = Array.from({ length: 100 }, (_, i) => get('127.0.0.2', basic('carol', `flood ${i}`)));
  await new Promise((r) => setTimeout(r, 100));
  const login = await get('127.0.0.3', basic('carol', 'slow to check'));
  t.is(login, 200);
  const statuses = await Promise.all(flood);
  t.true(statuses.every((s) => s === 401 || s === 429), statuses.join(','));
  t.true(statuses.filter((s) => s === 429).length >= 80, 'the flooder waits for a few checks at most');
});

test.serial('a request that leaves while its password check waits is logged as gone, not as an error', async (t) => {
  const { connect } = await import('node:net');
  const { port } = new URL(server.url);
  // checks against the costly hash queue up behind each other
  const queued = Array.from({ length: 3 }, (_, i) => fetch(`${server.url}/v2/`, { headers: { authorization: basic('carol', `queued ${i}`) } }));
  await new Promise((r) => setTimeout(r, 50));
  const socket = connect(Number(port), '127.0.0.1', () =>
    socket.write(`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-left-waiting\r\nAuthorization: ${basic('carol', 'left')}\r\n\r\n`),
  );
  socket.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 50));
  socket.destroy();
  for (const r of await Promise.all(queued)) t.is(r.status, 401);
  await new Promise((r) => setTimeout(r, 200));
  const mine = logLines.filter((l) => l.requestId === 'req-left-waiting');
  t.false(mine.some((l) => (l.level as number) >= 50), JSON.stringify(mine));
  t.truthy(mine.find((l) => l.msg === 'client went away before its request ended'), JSON.stringify(mine));
});
