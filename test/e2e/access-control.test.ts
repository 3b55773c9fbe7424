import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runVolreg } from '../helpers/cli-run.ts';
import { spawnServer, type SpawnedServer } from '../helpers/server.ts';

/**
 * Access rules through the real clients: the `volreg` CLI (a denial is one line and exit 9;
 * backup goes on), skopeo as an append-only host, the real `htpasswd` keeping the rules while
 * it manages users, and `volreg serve` reading the file again on SIGHUP.
 */

const PASSWORD = 'host secret';
let work: string;
let file: string;
let server: SpawnedServer;

function htpasswd(...args: string[]): void {
  execFileSync('htpasswd', ['-B', '-C', '4', '-b', ...args], { stdio: 'ignore' });
}

const RULES = ['#volreg group admins admin', '#volreg allow @admins ** all', '#volreg allow web1 hosts/web1/** pull,push', ''].join('\n');

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-acl-e2e-'));
  file = join(work, 'htpasswd');
  htpasswd('-c', file, 'admin', PASSWORD);
  htpasswd(file, 'web1', PASSWORD);
  await appendFile(file, RULES);
  const dataDir = join(work, 'data');
  await mkdir(dataDir);
  server = await spawnServer({ dataDir, env: { VOLREG_AUTH_FILE: file } });
});
test.after.always(async () => {
  server?.kill('SIGKILL');
  await server?.waitExit();
  await rm(work, { recursive: true, force: true });
});

function volreg(user: string, args: string[]) {
  return runVolreg(args, { url: server.url, cwd: work, env: { VOLREG_USER: user, VOLREG_PASSWORD: PASSWORD } });
}

test.serial('htpasswd keeps the rule lines when it adds a user, changes a password and deletes one', async (t) => {
  const copy = join(work, 'copy');
  await writeFile(copy, await readFile(file));
  htpasswd(copy, 'web2', 'x');
  htpasswd(copy, 'admin', 'changed');
  execFileSync('htpasswd', ['-D', copy, 'web2'], { stdio: 'ignore' });
  const lines = (await readFile(copy, 'utf8')).split('\n');
  for (const rule of RULES.split('\n').filter(Boolean)) t.true(lines.includes(rule), rule);
  t.false(lines.some((l) => l.startsWith('web2:')));
});

test.serial('the CLI: a denied push is one line naming the action and repository, exit 9; backup goes on with its other volumes', async (t) => {
  const dir = join(work, 'src');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'f'), 'data\n');
  const ok = await volreg('web1', ['push', '--quiet', dir, 'hosts/web1/app:t1']);
  t.is(ok.code, 0, ok.stderr);

  const other = await volreg('web1', ['push', '--quiet', dir, 'hosts/web2/app:t1']);
  t.is(other.code, 9);
  // the push reads the tag first, which needs pull
  t.is(other.stderr, 'volreg push: permission denied: pull on repository hosts/web2/app (a push reads the tag first: the user needs pull as well as push) (DENIED, HTTP 403)\n');

  const again = await volreg('web1', ['push', '--quiet', dir, 'hosts/web1/app:t1']);
  t.is(again.code, 9);
  t.regex(again.stderr, /^volreg push: permission denied: overwrite on repository hosts\/web1\/app \(.*\) \(DENIED, HTTP 403\)\n$/);

  const rm = await volreg('web1', ['rm', 'hosts/web1/app:t1']);
  t.is(rm.code, 9);
  t.regex(rm.stderr, /permission denied: delete on repository hosts\/web1\/app/);

  const root = join(work, 'volumes');
  for (const v of ['mine', 'theirs']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'f'), `${v}\n`);
  }
  // `theirs` already holds a b1 snapshot (an admin's): web1 may not replace it, and `mine` is still backed up
  t.is((await volreg('admin', ['push', '--quiet', join(root, 'theirs'), 'hosts/web1/theirs:b1'])).code, 0);
  const backup = await volreg('web1', ['backup', '--quiet', '--tag', 'b1', '--volumes-root', root, '--prefix', 'hosts/web1/', 'theirs,mine']);
  t.is(backup.code, 5, backup.stderr);
  t.regex(backup.stderr, /^volreg backup: theirs: permission denied: overwrite on repository hosts\/web1\/theirs \(.*\) \(DENIED, HTTP 403\)$/m);
  t.is(backup.stderr.split('\n').filter(Boolean).length, 1, backup.stderr);
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'mine b1\n');
});

function skopeo(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('skopeo', args, { env: { ...process.env, HOME: work } }, (err, _stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }));
  });
}

test.serial('skopeo as an append-only host: copy to a new tag works, a copy onto an existing tag and a delete are denied', async (t) => {
  const host = new URL(server.url).host;
  const creds = ['--dest-creds', `web1:${PASSWORD}`];
  const src = `docker://${host}/hosts/web1/app:t1`;
  const copy = (dest: string) => skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--src-creds', `web1:${PASSWORD}`, ...creds, src, dest]);

  const fresh = await copy(`docker://${host}/hosts/web1/copied:v1`);
  t.is(fresh.code, 0, fresh.stderr);
  // another snapshot onto that existing tag
  await writeFile(join(work, 'src', 'f'), 'other data\n');
  t.is((await volreg('web1', ['push', '--quiet', join(work, 'src'), 'hosts/web1/app:t2'])).code, 0);
  const onto = await skopeo([
    'copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--src-creds', `web1:${PASSWORD}`, ...creds,
    `docker://${host}/hosts/web1/app:t2`, `docker://${host}/hosts/web1/copied:v1`,
  ]);
  t.not(onto.code, 0);
  t.regex(onto.stderr, /denied|403/i);
  const del = await skopeo(['delete', '--tls-verify=false', '--creds', `web1:${PASSWORD}`, `docker://${host}/hosts/web1/copied:v1`]);
  t.not(del.code, 0);
  t.regex(del.stderr, /denied|403/i);
  const still = await volreg('admin', ['ls', 'hosts/web1/copied']);
  t.regex(still.stdout, /v1/);
});

test.serial('SIGHUP reads the file again: a new host can push at once; a broken file keeps the rules in force and logs an error', async (t) => {
  const dir = join(work, 'src');
  const web3 = () => volreg('web3', ['push', '--quiet', dir, 'hosts/web3/app:t1']);
  t.is((await web3()).code, 1, 'no such user yet: 401');

  htpasswd(file, 'web3', PASSWORD);
  await appendFile(file, '#volreg allow web3 hosts/web3/** pull,push\n');
  server.kill('SIGHUP');
  await waitFor(() => /auth file reloaded/.test(server.stdout()));
  const pushed = await web3();
  t.is(pushed.code, 0, pushed.stderr);

  await appendFile(file, '#volreg allow web3 hosts/** pull,destroy\n');
  server.kill('SIGHUP');
  await waitFor(() => /auth file not reloaded/.test(server.stdout()));
  t.regex(server.stdout(), /unknown action \\"destroy\\"/);
  t.regex(server.stdout(), /line \d+/);
  // the rules in force stay: web3 still pushes in its own prefix only
  t.is((await volreg('web3', ['push', '--quiet', dir, 'hosts/web3/app:t2'])).code, 0);
  t.is((await volreg('web3', ['push', '--quiet', dir, 'hosts/web1/app:t9'])).code, 9);
});

test.serial('a malformed rule stops serve at start: exit 2, one line naming the line of the file', async (t) => {
  const bad = join(work, 'bad');
  htpasswd('-c', bad, 'admin', PASSWORD);
  await appendFile(bad, '#volreg allow admin ** pull,erase\n');
  await chmod(bad, 0o600);
  const dataDir = join(work, 'bad-data');
  await mkdir(dataDir);
  const run = await runVolreg(['serve'], { url: server.url, cwd: work, env: { VOLREG_AUTH_FILE: bad, VOLREG_DATA_DIR: dataDir, VOLREG_ADDR: '127.0.0.1:0' } });
  t.is(run.code, 2);
  t.is(run.stderr, 'volreg: config: VOLREG_AUTH_FILE: line 2: unknown action "erase" (use pull, push, overwrite, delete or all, separated by commas)\n');
});

async function waitFor(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!check()) throw new Error('timed out waiting');
}

test.serial('SIGHUP with the rules gone from the file (htpasswd -c) keeps the rules in force instead of letting every user do everything', async (t) => {
  const before = await readFile(file, 'utf8');
  const withoutRules = before.split('\n').filter((line) => !line.startsWith('#volreg')).join('\n');
  const reloadsRefused = (): number => server.stdout().split('auth file not reloaded').length;
  const refusedBefore = reloadsRefused();
  await writeFile(file, withoutRules);
  try {
    server.kill('SIGHUP');
    await waitFor(() => reloadsRefused() > refusedBefore);
    t.regex(server.stdout(), /no #volreg rule any more/);
    const reply = await fetch(`${server.url}/v2/hosts/db1/app/tags/list`, {
      headers: { Authorization: `Basic ${Buffer.from(`web1:${PASSWORD}`).toString('base64')}` },
    });
    t.is(reply.status, 403, 'web1 still may not read another host\'s repository');
  } finally {
    await writeFile(file, before);
  }
});
