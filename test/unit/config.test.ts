import { execFileSync } from 'node:child_process';
import test from 'ava';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULTS } from '../../src/config/config.ts';
import { ConfigError, loadConfig, parseAddr, VARIABLES } from '../../src/config/load-config.ts';

const dir = mkdtempSync(join(tmpdir(), 'volreg-config-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env, { cwd: dir });
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

test('an empty environment gives the DESIGN.md defaults', (t) => {
  const { config, warnings } = loadConfig({}, { cwd: dir });
  t.deepEqual(config.addr, { host: '127.0.0.1', port: 5000 });
  t.is(config.dataDir, resolve(dir, 'data'));
  t.is(config.mongodbUrl, undefined);
  t.is(config.mongodbDatabase, 'volreg');
  t.is(config.storage, 'fs');
  t.is(config.authFile, undefined);
  t.is(config.logLevel, 'info');
  t.is(config.limits.manifestBytes, 4 * 1024 * 1024);
  t.is(config.limits.minFreeBytes, 256 * 1024 * 1024);
  t.is(config.uploads.purgeAfterSeconds, 86400);
  t.is(config.uploads.purgeIntervalSeconds, DEFAULTS.purgeIntervalSeconds);
  t.is(config.shutdownGraceSeconds, DEFAULTS.shutdownGraceSeconds);
  t.deepEqual(warnings, []);
});

test('every variable is read', (t) => {
  const auth = join(dir, 'htpasswd');
  writeFileSync(auth, 'u:x\n');
  const { config } = loadConfig(
    {
      VOLREG_ADDR: '0.0.0.0:8080',
      VOLREG_DATA_DIR: '/var/lib/volreg',
      VOLREG_MONGODB_URL: 'mongodb://user:secret@db1:27017,db2:27017/?replicaSet=rs0',
      VOLREG_MONGODB_DATABASE: 'registry_1',
      VOLREG_STORAGE: 'fs',
      VOLREG_AUTH_FILE: 'htpasswd',
      VOLREG_LOG_LEVEL: 'DEBUG',
      VOLREG_MANIFEST_MAX_BYTES: '1048576',
      VOLREG_MIN_FREE_BYTES: '0',
      VOLREG_UPLOAD_PURGE_AFTER: '3600',
      VOLREG_UPLOAD_PURGE_INTERVAL: '0',
      VOLREG_SHUTDOWN_GRACE: '2.5',
      VOLREG_CLIENT_IDLE_TIMEOUT: '45',
    },
    { cwd: dir },
  );
  t.deepEqual(config.addr, { host: '0.0.0.0', port: 8080 });
  t.is(config.dataDir, '/var/lib/volreg');
  t.is(config.mongodbUrl, 'mongodb://user:secret@db1:27017,db2:27017/?replicaSet=rs0');
  t.is(config.mongodbDatabase, 'registry_1');
  t.is(config.authFile, auth);
  t.is(config.logLevel, 'debug');
  t.deepEqual(config.limits, { manifestBytes: 1048576, minFreeBytes: 0 });
  t.deepEqual(config.uploads, { purgeAfterSeconds: 3600, purgeIntervalSeconds: 0 });
  t.is(config.shutdownGraceSeconds, 2.5);
  t.is(config.clientIdleSeconds, 45);
});

const addrs: Array<[string, { host: string; port: number }]> = [
  [':0', { host: '127.0.0.1', port: 0 }],
  ['localhost:5000', { host: 'localhost', port: 5000 }],
  ['[::1]:65535', { host: '::1', port: 65535 }],
  ['registry.example.com:443', { host: 'registry.example.com', port: 443 }],
];
for (const [input, expected] of addrs) {
  test(`VOLREG_ADDR ${input}`, (t) => t.deepEqual(parseAddr(input), expected));
}

// One bad value per variable: the problem names the variable.
const bad: Array<[string, string, RegExp]> = [
  ['VOLREG_ADDR', '5000', /host:port/],
  ['VOLREG_ADDR', 'localhost:65536', /host:port/],
  ['VOLREG_ADDR', 'localhost:http', /host:port/],
  ['VOLREG_ADDR', 'a b:80', /host:port/],
  ['VOLREG_ADDR', '-bad-:80', /invalid host/],
  ['VOLREG_MONGODB_URL', 'http://db:27017', /mongodb:\/\/ or mongodb\+srv:\/\//],
  ['VOLREG_MONGODB_URL', 'mongodb://', /mongodb:\/\//],
  ['VOLREG_MONGODB_URL', 'mongodb://db:27017/?replicaSet=rs0&readPreference=secondary', /readPreference=secondary: volreg must read from the primary/],
  ['VOLREG_MONGODB_URL', 'mongodb://db1,db2/?readpreference=primaryPreferred', /readPreference=primaryPreferred/],
  ['VOLREG_MONGODB_URL', 'mongodb://db:27017/?w=0', /w=0: volreg needs acknowledged writes/],
  ['VOLREG_MONGODB_DATABASE', 'a.b', /database name/],
  ['VOLREG_MONGODB_DATABASE', 'x'.repeat(64), /database name/],
  ['VOLREG_STORAGE', 's3', /use fs or gridfs/],
  ['VOLREG_STORAGE', 'gridfs', /gridfs blob store is not implemented yet/],
  ['VOLREG_AUTH_FILE', 'no-such-file', /does not exist/],
  ['VOLREG_AUTH_FILE', '.', /not a regular file/],
  ['VOLREG_LOG_LEVEL', 'loud', /not a log level/],
  ['VOLREG_MANIFEST_MAX_BYTES', '4MiB', /whole number of bytes/],
  ['VOLREG_MANIFEST_MAX_BYTES', '0', /whole number of bytes between 1/],
  ['VOLREG_MANIFEST_MAX_BYTES', '-1', /whole number/],
  ['VOLREG_MIN_FREE_BYTES', '256MiB', /whole number of bytes/],
  ['VOLREG_MIN_FREE_BYTES', '-1', /whole number/],
  ['VOLREG_UPLOAD_PURGE_AFTER', '1d', /whole number of seconds/],
  ['VOLREG_UPLOAD_PURGE_AFTER', '0', /between 1/],
  ['VOLREG_UPLOAD_PURGE_INTERVAL', '-5', /whole number of seconds/],
  ['VOLREG_SHUTDOWN_GRACE', 'soon', /number of seconds/],
  ['VOLREG_SHUTDOWN_GRACE', '7200', /between 0 and 3600/],
  ['VOLREG_CLIENT_IDLE_TIMEOUT', '0', /at least 1 second/],
  ['VOLREG_CLIENT_IDLE_TIMEOUT', 'never', /number of seconds/],
  ['VOLREG_DATA_DIR', 'htpasswd-as-dir', /not a directory/],
  ['VOLREG_CONFIG', 'missing.yaml', /cannot read/],
];
test.before(() => writeFileSync(join(dir, 'htpasswd-as-dir'), 'not a dir'));
for (const [name, value, message] of bad) {
  test(`${name}=${JSON.stringify(value.slice(0, 30))} is refused with one line naming it`, (t) => {
    const problems = problemsOf({ [name]: value });
    t.is(problems.length, 1);
    t.true(problems[0]!.startsWith(`${name}: `), problems[0]);
    t.regex(problems[0]!, message);
    t.false(problems[0]!.includes('\n'));
  });
}

test('all bad values are reported at once, one line each', (t) => {
  const problems = problemsOf({
    VOLREG_ADDR: 'nope',
    VOLREG_STORAGE: 'gridfs',
    VOLREG_LOG_LEVEL: 'x',
    VOLREG_MANIFEST_MAX_BYTES: 'big',
    VOLREG_SHUTDOWN_GRACE: '-1',
  });
  t.deepEqual(
    problems.map((p) => p.split(':')[0]),
    ['VOLREG_ADDR', 'VOLREG_STORAGE', 'VOLREG_LOG_LEVEL', 'VOLREG_MANIFEST_MAX_BYTES', 'VOLREG_SHUTDOWN_GRACE'],
  );
});

test('a MongoDB URL is never echoed (it may hold a password)', (t) => {
  const problems = problemsOf({ VOLREG_MONGODB_URL: 'mongo://admin:hunter2@db' });
  t.is(problems.length, 1);
  t.false(problems[0]!.includes('hunter2'));
});

test('hostile values are quoted and truncated in messages', (t) => {
  const problems = problemsOf({ VOLREG_LOG_LEVEL: `x\n${'y'.repeat(500)}\u001b[31m` });
  t.is(problems.length, 1);
  t.false(problems[0]!.includes('\n'));
  t.false(problems[0]!.includes('\u001b'));
  t.true(problems[0]!.length < 250);
});

test('an empty variable counts as unset', (t) => {
  const { config } = loadConfig({ VOLREG_ADDR: '', VOLREG_LOG_LEVEL: '' }, { cwd: dir });
  t.is(config.addr.port, 5000);
  t.is(config.logLevel, 'info');
});

test('unknown VOLREG_* variables are warned about, with a suggestion', (t) => {
  const { warnings } = loadConfig({ VOLREG_ADRR: ':0', VOLREG_WHATEVER: '1', OTHER: 'x' }, { cwd: dir });
  t.is(warnings.length, 2);
  t.regex(warnings[0]!, /^VOLREG_ADRR .*did you mean VOLREG_ADDR\?/);
  t.regex(warnings[1]!, /^VOLREG_WHATEVER .*ignored/);
});

test('the host agent\'s variables are not warned about', (t) => {
  const { warnings } = loadConfig({ VOLREG_URL: 'http://r:5000', VOLREG_USER: 'u', VOLREG_PASSWORD: 'p', VOLREG_TIMEOUT: '30' }, { cwd: dir });
  t.deepEqual(warnings, []);
  // every variable a CLI option reads: one missing here made serve call it a typo
  const cli = new URL('../../src/cli/', import.meta.url);
  const sources = readdirSync(cli, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const read = new Set(sources.flatMap((f) => [...readFileSync(new URL(f, cli), 'utf8').matchAll(/\.env\('(VOLREG_[A-Z_]+)'\)/g)].map((m) => m[1]!)));
  t.true(read.has('VOLREG_TIMEOUT'));
  t.deepEqual(loadConfig(Object.fromEntries([...read].map((name) => [name, 'x'])), { cwd: dir }).warnings, []);
});

test('a YAML config file is read; the environment wins over it', (t) => {
  const file = join(dir, 'volreg.yaml');
  writeFileSync(file, 'VOLREG_ADDR: ":7000"\nVOLREG_LOG_LEVEL: warn\nVOLREG_MANIFEST_MAX_BYTES: 1000\n');
  const { config } = loadConfig({ VOLREG_CONFIG: file, VOLREG_LOG_LEVEL: 'error' }, { cwd: dir });
  t.deepEqual(config.addr, { host: '127.0.0.1', port: 7000 });
  t.is(config.logLevel, 'error');
  t.is(config.limits.manifestBytes, 1000);
});

test('a JSON config file is read, and its bad values name the variable and the file', (t) => {
  const file = join(dir, 'volreg.json');
  writeFileSync(file, JSON.stringify({ VOLREG_STORAGE: 'fs', VOLREG_UPLOAD_PURGE_AFTER: 'never', VOLREG_TYPO: 1 }));
  const problems = problemsOf({ VOLREG_CONFIG: file });
  t.is(problems.length, 1);
  t.regex(problems[0]!, /^VOLREG_UPLOAD_PURGE_AFTER \(from .*volreg\.json\): /);
  writeFileSync(file, JSON.stringify({ VOLREG_STORAGE: 'fs', VOLREG_TYPO: 1 }));
  const { warnings } = loadConfig({ VOLREG_CONFIG: file }, { cwd: dir });
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /VOLREG_TYPO/);
});

test('a config file may give a boolean as YAML or JSON writes one', (t) => {
  const yaml = join(dir, 'booleans.yaml');
  writeFileSync(yaml, 'VOLREG_GC_DELETE_UNTAGGED: true\n');
  t.is(loadConfig({ VOLREG_CONFIG: yaml }, { cwd: dir }).config.gc.deleteUntagged, true);
  const json = join(dir, 'booleans.json');
  writeFileSync(json, JSON.stringify({ VOLREG_GC_DELETE_UNTAGGED: false }));
  t.is(loadConfig({ VOLREG_CONFIG: json, VOLREG_GC_DELETE_UNTAGGED: '' }, { cwd: dir }).config.gc.deleteUntagged, false);
  // a boolean where a number belongs is that variable's usual complaint
  writeFileSync(json, JSON.stringify({ VOLREG_GC_GRACE: true }));
  t.regex(problemsOf({ VOLREG_CONFIG: json })[0]!, /^VOLREG_GC_GRACE \(from .*\): "true" is not a whole number of seconds/);
});

test('a config file that is not a mapping, or not YAML, is refused', (t) => {
  const list = join(dir, 'list.yaml');
  writeFileSync(list, '- a\n- b\n');
  t.regex(problemsOf({ VOLREG_CONFIG: list })[0]!, /^VOLREG_CONFIG: .*mapping/);
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, 'VOLREG_ADDR: [unclosed\n');
  t.regex(problemsOf({ VOLREG_CONFIG: broken })[0]!, /^VOLREG_CONFIG: .*not valid YAML/);
  const nested = join(dir, 'nested.yaml');
  writeFileSync(nested, 'VOLREG_ADDR:\n  host: x\n');
  t.regex(problemsOf({ VOLREG_CONFIG: nested })[0]!, /^VOLREG_ADDR \(from .*\): must be a string, a number or a boolean/);
});

test('HTTPS: both TLS files or neither; credentials over plain HTTP off loopback get a warning', (t) => {
  const [cert, key] = [join(dir, 'tls-cert.pem'), join(dir, 'tls-key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=x', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const { config } = loadConfig({ VOLREG_TLS_CERT: cert, VOLREG_TLS_KEY: key }, { cwd: dir });
  t.deepEqual(config.tls, { certFile: cert, keyFile: key });
  const pem = join(dir, 'tls.pem');
  writeFileSync(pem, 'not a certificate');
  t.is(loadConfig({}, { cwd: dir }).config.tls, undefined);
  t.regex(problemsOf({ VOLREG_TLS_KEY: pem }).join('\n'), /VOLREG_TLS_CERT and VOLREG_TLS_KEY: set both \(HTTPS\) or neither/);
  t.regex(problemsOf({ VOLREG_TLS_CERT: 'missing.pem', VOLREG_TLS_KEY: pem }).join('\n'), /^VOLREG_TLS_CERT: .*does not exist/m);

  const auth = join(dir, 'htpasswd-tls');
  writeFileSync(auth, 'u:x\n', { mode: 0o600 });
  const exposed = loadConfig({ VOLREG_AUTH_FILE: auth, VOLREG_ADDR: '0.0.0.0:5000' }, { cwd: dir }).warnings;
  t.true(exposed.some((w) => /clear text/.test(w)), exposed.join('\n'));
  t.deepEqual(loadConfig({ VOLREG_AUTH_FILE: auth }, { cwd: dir }).warnings, [], 'loopback: no warning');
  t.deepEqual(loadConfig({ VOLREG_AUTH_FILE: auth, VOLREG_ADDR: '0.0.0.0:5000', VOLREG_TLS_CERT: cert, VOLREG_TLS_KEY: key }, { cwd: dir }).warnings, []);
});

test('a TLS key or an htpasswd file every user of the host may read gets a warning; one readable by owner and group does not', (t) => {
  const [cert, key, auth] = [join(dir, 'modes-cert.pem'), join(dir, 'modes-key.pem'), join(dir, 'modes-htpasswd')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=x', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  writeFileSync(auth, 'u:x\n');
  const env = { VOLREG_TLS_CERT: cert, VOLREG_TLS_KEY: key, VOLREG_AUTH_FILE: auth };
  chmodSync(cert, 0o644);
  chmodSync(key, 0o644);
  chmodSync(auth, 0o604);
  t.deepEqual(loadConfig(env, { cwd: dir }).warnings, [
    `VOLREG_TLS_KEY: ${key} can be read by every user of this host (mode 0644), the private key among them; chmod o-r it (0640 with a group volreg is in, or 0600)`,
    `VOLREG_AUTH_FILE: ${auth} can be read by every user of this host (mode 0604), the password hashes among them; chmod o-r it (0640 with a group volreg is in, or 0600)`,
  ]);
  chmodSync(key, 0o640);
  chmodSync(auth, 0o600);
  t.deepEqual(loadConfig(env, { cwd: dir }).warnings, [], 'a world-readable certificate is fine');
});

test('a TLS certificate or key that does not parse, or a key of another certificate, is bad configuration', (t) => {
  const [cert, key, other] = [join(dir, 'pair-cert.pem'), join(dir, 'pair-key.pem'), join(dir, 'other-key.pem')];
  const openssl = (k: string, c: string): void => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=x', '-keyout', k, '-out', c], { stdio: 'ignore' });
  };
  openssl(key, cert);
  openssl(other, join(dir, 'other-cert.pem'));
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'garbage\n');
  for (const [c, k, why] of [
    [garbage, key, /no start line|PEM/],
    [cert, garbage, /error:/],
    [cert, other, /key values mismatch/],
  ] as const) {
    const problems = problemsOf({ VOLREG_TLS_CERT: c, VOLREG_TLS_KEY: k, VOLREG_LOG_LEVEL: 'loud' });
    // reported with the other bad values, one line
    t.is(problems.length, 2, problems.join('\n'));
    t.regex(problems[0]!, /^VOLREG_TLS_CERT and VOLREG_TLS_KEY: cannot serve HTTPS with them: /);
    t.regex(problems[0]!, why);
  }
});

test('VOLREG_JSON_BODY_MAX_BYTES, never read, is ignored with a warning that says it limits nothing', (t) => {
  const { warnings } = loadConfig({ VOLREG_JSON_BODY_MAX_BYTES: 'not even a number' }, { cwd: dir });
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /^VOLREG_JSON_BODY_MAX_BYTES in the environment limits nothing: .*VOLREG_MANIFEST_MAX_BYTES.*; ignored$/);
  const file = join(dir, 'retired.yaml');
  writeFileSync(file, 'VOLREG_JSON_BODY_MAX_BYTES: 65536\n');
  t.regex(loadConfig({ VOLREG_CONFIG: file }, { cwd: dir }).warnings.join('\n'), /VOLREG_JSON_BODY_MAX_BYTES in ".*retired\.yaml" limits nothing/);
  const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
  t.notRegex(example, /VOLREG_JSON_BODY_MAX_BYTES/);
});

test('.env.example and the README table list every variable', (t) => {
  const example = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const name of Object.keys(VARIABLES)) {
    t.regex(example, new RegExp(`^#? ?${name}=`, 'm'), `.env.example: ${name}`);
    t.regex(readme, new RegExp(`^\\| \`${name}\` \\|`, 'm'), `README: ${name}`);
  }
});

test('VOLREG_MONGODB_URL may name the primary and any acknowledged write concern', (t) => {
  t.deepEqual(problemsOf({ VOLREG_MONGODB_URL: 'mongodb://db1,db2/?replicaSet=rs0&readPreference=primary&w=majority' }), []);
  t.deepEqual(problemsOf({ VOLREG_MONGODB_URL: 'mongodb://db/?w=1&journal=true' }), []);
});

test('VOLREG_METRICS_VOLUMES: 1000 volumes named in /metrics, none when authentication is on, unless set', (t) => {
  const auth = join(dir, 'htpasswd-metrics');
  writeFileSync(auth, 'u:x\n', { mode: 0o600 });
  t.is(loadConfig({}, { cwd: dir }).config.metrics.volumeSeries, 1000);
  t.is(loadConfig({ VOLREG_AUTH_FILE: auth }, { cwd: dir }).config.metrics.volumeSeries, 0);
  t.is(loadConfig({ VOLREG_AUTH_FILE: auth, VOLREG_METRICS_VOLUMES: '50' }, { cwd: dir }).config.metrics.volumeSeries, 50);
  t.is(loadConfig({ VOLREG_METRICS_VOLUMES: '0' }, { cwd: dir }).config.metrics.volumeSeries, 0);
  t.regex(problemsOf({ VOLREG_METRICS_VOLUMES: '-1' }).join('\n'), /^VOLREG_METRICS_VOLUMES: "-1" is not a whole number of volumes/);
  t.is(loadConfig({}, { cwd: dir }).config.metrics.volumesMaxAgeSeconds, 60);
  t.is(loadConfig({ VOLREG_METRICS_VOLUMES_MAX_AGE: '0' }, { cwd: dir }).config.metrics.volumesMaxAgeSeconds, 0);
  t.regex(problemsOf({ VOLREG_METRICS_VOLUMES_MAX_AGE: '1m' }).join('\n'), /^VOLREG_METRICS_VOLUMES_MAX_AGE: "1m" is not a number of seconds/);
});
