import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { access, chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { VARIABLES } from '../../src/config/load-config.ts';
import { REPO_ROOT } from '../helpers/server.ts';

/**
 * How volreg is shipped and checked: docker-compose.yml (validated by Debian's docker-compose,
 * since there is no Docker engine here), the Dockerfile, and .ci/run's summary line and exit
 * status (run with stand-in `npm` and `dpkg-query` commands that print what ava prints).
 */

const run = promisify(execFile);
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'volreg-pack-'));
  dirs.push(d);
  return d;
}
test.after.always(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

test('docker-compose config -q accepts docker-compose.yml, and rejects a broken copy', async (t) => {
  await t.notThrowsAsync(run('docker-compose', ['-f', join(REPO_ROOT, 'docker-compose.yml'), 'config', '-q'], { cwd: REPO_ROOT }));
  const dir = await tempDir();
  const text = await readFile(join(REPO_ROOT, 'docker-compose.yml'), 'utf8');
  await writeFile(join(dir, 'docker-compose.yml'), text.replace('condition: service_healthy', 'condition: [not, valid]'));
  await t.throwsAsync(run('docker-compose', ['-f', join(dir, 'docker-compose.yml'), 'config', '-q'], { cwd: dir }));
});

test('compose: MongoDB 7 single-node replica set with its init, volreg from the Dockerfile, named volumes, health checks', async (t) => {
  const { stdout } = await run('docker-compose', ['-f', join(REPO_ROOT, 'docker-compose.yml'), 'config'], { cwd: REPO_ROOT });
  const compose = parseYaml(stdout) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
  const mongo = compose.services.mongo!;
  const volreg = compose.services.volreg!;
  t.regex(mongo.image ?? '', /^mongo:7(\.|$)/);
  t.true(mongo.command!.includes('--replSet'));
  t.regex(mongo.healthcheck!.test.join(' '), /rs\.initiate\(/);
  t.truthy(volreg.build);
  t.deepEqual(volreg.depends_on, { mongo: { condition: 'service_healthy' } });
  t.regex(volreg.environment!.VOLREG_MONGODB_URL!, /^mongodb:\/\/mongo:27017\/.*replicaSet=rs0/);
  t.is(volreg.environment!.VOLREG_ADDR, '0.0.0.0:5000');
  t.truthy(volreg.healthcheck);
  const dataVolume = volreg.volumes!.find((v) => v.split(':')[1] === volreg.environment!.VOLREG_DATA_DIR);
  t.truthy(dataVolume, 'a volume at VOLREG_DATA_DIR');
  t.true(dataVolume!.split(':')[0]! in compose.volumes, 'a named volume');
  // every variable it sets is one volreg knows (a typo would only be a warning at start)
  for (const name of Object.keys(volreg.environment!)) t.true(name in VARIABLES, name);
});

test('Dockerfile: multi-stage on node:20-bookworm-slim, npm ci, non-root, volreg serve on 0.0.0.0:5000, data in /data', async (t) => {
  const text = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const froms = text.match(/^FROM \S+/gm) ?? [];
  t.true(froms.length >= 2);
  for (const f of froms) t.is(f, 'FROM node:20-bookworm-slim');
  t.regex(text, /^RUN npm ci\b/m);
  const users = text.match(/^USER (\S+)/gm) ?? [];
  t.is(users.length, 1);
  t.notRegex(users[0]!, /USER (root|0)\b/);
  t.regex(text, /VOLREG_ADDR=0\.0\.0\.0:5000/);
  t.regex(text, /VOLREG_DATA_DIR=\/data/);
  // the image runs the service as `npm start` does, node flags included
  const start = (JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const startArgs = /\bexec (node\b.*\bserve)$/.exec(start)?.[1]?.split(/\s+/);
  t.truthy(startArgs, start);
  t.true(startArgs!.some((a) => a.startsWith('--max-semi-space-size=')), 'the service runs with a small young generation');
  const cmd = /^CMD (\[.*\])$/m.exec(text)?.[1];
  t.deepEqual(JSON.parse(cmd ?? 'null'), startArgs);
  t.regex(text, /^RUN npm run build$/m, 'the service image runs compiled JavaScript');
  // everything the image copies exists
  for (const m of text.matchAll(/^COPY (?!--from).*$/gm)) {
    for (const src of m[0].split(/\s+/).slice(1, -1).filter((p) => !p.startsWith('--'))) await t.notThrowsAsync(access(join(REPO_ROOT, src)), src);
  }
});

/** Runs a copy of .ci/run with stand-ins for npm (printing `output`, exiting `status`) and dpkg-query. */
async function ciRun(output: string, status: number, missing: string[] = []): Promise<{ code: number | null; stdout: string; apt: string }> {
  const dir = await tempDir();
  await cp(join(REPO_ROOT, '.ci', 'run'), join(dir, '.ci', 'run'), { recursive: true });
  const bin = join(dir, 'fakebin');
  await mkdir(bin);
  await writeFile(join(dir, 'ava-output.txt'), output);
  await writeFile(
    join(bin, 'npm'),
    `#!/bin/sh\ncase "$1" in\n  ci) exit 0 ;;\n  test) cat "${join(dir, 'ava-output.txt')}"; exit ${status} ;;\n  --version) echo 10.0.0 ;;\nesac\n`,
  );
  // dpkg-query's last argument is the package name
  const notInstalled = missing.map((p) => `[ "$last" = "${p}" ] && exit 1`).join('\n');
  await writeFile(join(bin, 'dpkg-query'), `#!/bin/sh\nfor last; do :; done\n${notInstalled}\necho "install ok installed"\n`);
  await writeFile(join(bin, 'apt-get'), `#!/bin/sh\necho "$@" >> "${join(dir, 'apt.log')}"\n`);
  for (const f of ['npm', 'dpkg-query', 'apt-get']) await chmod(join(bin, f), 0o755);
  return new Promise((resolve) => {
    const child = spawn('bash', [join(dir, '.ci', 'run')], {
      env: { PATH: `${bin}:${process.env.PATH}`, VOLREG_CI_LOG: join(dir, 'out.log') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.on('close', (code) => {
      void readFile(join(dir, 'apt.log'), 'utf8')
        .catch(() => '')
        .then((apt) => resolve({ code, stdout, apt }));
    });
  });
}

const lastLine = (s: string): string => s.trim().split('\n').at(-1)!;

test('.ci/run: all passed; nothing to install', async (t) => {
  const res = await ciRun('\n  ✔ a › one\n  ✔ a › two (1.2s)\n  ✔ b › three\n  ─\n\n  3 tests passed\n', 0);
  t.is(lastLine(res.stdout), '3 passed, 0 failed');
  t.is(res.code, 0);
  t.is(res.apt, '');
});

test('.ci/run: installs only the missing packages, quietly', async (t) => {
  const res = await ciRun('  ✔ a › one\n', 0, ['skopeo', 'zstd']);
  t.deepEqual(res.apt.trim().split('\n'), ['update -qq', 'install -y -qq --no-install-recommends skopeo zstd']);
  t.is(lastLine(res.stdout), '1 passed, 0 failed');
});

test('.ci/run: failures are counted and the status kept', async (t) => {
  const out = [
    '  - [skip] a › skipped',
    '  ✔ a › ok1',
    '  ✔ a › ok2',
    '  ✘ [fail]: a › bad',
    '  ✔ [expected fail] a › known',
    '  ✘ test/c.test.ts exited with a non-zero exit code: 1',
    '  ─',
    '',
    '  1 test failed',
    '  1 known failure',
    '  1 test skipped',
    '  1 uncaught exception',
    '',
  ].join('\n');
  const res = await ciRun(out, 1);
  t.is(lastLine(res.stdout), '2 passed, 2 failed');
  t.is(res.code, 1);
  t.regex(res.stdout, /1 uncaught exception/);
});

test('.ci/run: a run where no test ran fails even with status 0; a crash keeps its status', async (t) => {
  const none = await ciRun('\n  ✘ Couldn’t find any files to test\n', 0);
  t.is(lastLine(none.stdout), '0 passed, 1 failed');
  t.not(none.code, 0);
  const empty = await ciRun('', 0);
  t.is(empty.code, 1);
  const crash = await ciRun('src/x.ts(1,1): error TS1005: ; expected.\n', 2);
  t.is(lastLine(crash.stdout), '0 passed, 0 failed');
  t.is(crash.code, 2);
});
