import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The client address behind a reverse proxy: `X-Forwarded-For` is read only from the proxies
 * VOLREG_TRUSTED_PROXIES names, for the request log and for the password checks' turns. Two
 * servers with authentication: one trusting 127.0.0.1 (the "proxy"), one trusting nobody.
 */

const dir = mkdtempSync(join(tmpdir(), 'volreg-forwarded-'));
const htpasswdFile = join(dir, 'htpasswd');
const trusting = capturedLog('info');
const plain = capturedLog('info');
let behindProxy: TestServer;
let direct: TestServer;

test.before(async () => {
  // a costly hash, so that checks queue up
  execFileSync('htpasswd', ['-B', '-C', '12', '-b', '-c', htpasswdFile, 'carol', 'slow to check'], { stdio: 'ignore' });
  behindProxy = await startTestServer({ label: 'fwd_trusted', env: { VOLREG_AUTH_FILE: htpasswdFile, VOLREG_TRUSTED_PROXIES: '127.0.0.1' }, logger: trusting.logger });
  direct = await startTestServer({ label: 'fwd_plain', env: { VOLREG_AUTH_FILE: htpasswdFile }, logger: plain.logger });
});
test.after.always(async () => {
  await behindProxy?.close();
  await direct?.close();
  rmSync(dir, { recursive: true, force: true });
});

const basic = (password: string): string => `Basic ${Buffer.from(`carol:${password}`).toString('base64')}`;

function get(server: TestServer, from: string, headers: Record<string, string>): Promise<number> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path: '/v2/', localAddress: from, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function logged(lines: Array<Record<string, unknown>>, requestId: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 50; i++) {
    const line = lines.find((l) => l.msg === 'request' && l.requestId === requestId);
    if (line) return line;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no request line for ${requestId}`);
}

test('by default the request log names the connection address and ignores X-Forwarded-For', async (t) => {
  await get(direct, '127.0.0.2', { 'X-Request-Id': 'fwd-ignored', 'X-Forwarded-For': '203.0.113.7' });
  const line = await logged(plain.lines, 'fwd-ignored');
  t.is(line.client, '127.0.0.2');
  t.false('proxy' in line);
});

test('from a trusted proxy the log names the client it forwards, and the proxy', async (t) => {
  await get(behindProxy, '127.0.0.1', { 'X-Request-Id': 'fwd-trusted', 'X-Forwarded-For': '198.51.100.1, 203.0.113.7' });
  const line = await logged(trusting.lines, 'fwd-trusted');
  // the rightmost address the proxy appended; what the client wrote before it proves nothing
  t.is(line.client, '203.0.113.7');
  t.is(line.proxy, '127.0.0.1');
});

test('X-Forwarded-For from an address that is not a trusted proxy is ignored', async (t) => {
  await get(behindProxy, '127.0.0.2', { 'X-Request-Id': 'fwd-untrusted', 'X-Forwarded-For': '203.0.113.7' });
  const line = await logged(trusting.lines, 'fwd-untrusted');
  t.is(line.client, '127.0.0.2');
  t.false('proxy' in line);
});

test.serial('behind a trusted proxy, a flood of wrong passwords from one client does not lock out another', async (t) => {
  const flood = Array.from({ length: 30 }, (_, i) => get(behindProxy, '127.0.0.1', { 'X-Forwarded-For': '203.0.113.66', authorization: basic(`flood ${i}`) }));
  await new Promise((r) => setTimeout(r, 100));
  const login = await get(behindProxy, '127.0.0.1', { 'X-Forwarded-For': '203.0.113.7', authorization: basic('slow to check') });
  t.is(login, 200);
  const statuses = await Promise.all(flood);
  t.true(statuses.filter((s) => s === 429).length >= 18, statuses.join(','));
});

test.serial('without a trusted proxy, a client can not escape its share of checks by forging X-Forwarded-For', async (t) => {
  const flood = Array.from({ length: 30 }, (_, i) => get(direct, '127.0.0.2', { 'X-Forwarded-For': `203.0.113.${i}`, authorization: basic(`forged ${i}`) }));
  const statuses = await Promise.all(flood);
  // one address, one share (at most 8 waiting): the forged addresses bought no more
  t.true(statuses.filter((s) => s === 429).length >= 18, statuses.join(','));
});
