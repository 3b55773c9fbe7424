import test from 'ava';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/load-config.ts';
import { configBlob, ociManifest, randomBlob, schema1Unsigned, type Blob, type Built } from '../helpers/manifest-fixtures.ts';
import { errorCode, request, type Reply } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { tarOfFiles } from '../helpers/tree.ts';

/**
 * Per-user, per-repository permissions from the `#volreg` rules of a real `htpasswd -B` file,
 * through the real composition on a real port: each action allowed and denied on /v2 and
 * /api/v1, append-only pushes (also racing), catalog filtering with pagination, mount fallback.
 */

const dir = mkdtempSync(join(tmpdir(), 'volreg-acl-'));
const htpasswdFile = join(dir, 'htpasswd');
let server: TestServer;

const PASSWORD = 'secret pw';
function auth(user: string): Record<string, string> {
  return { Authorization: `Basic ${Buffer.from(`${user}:${PASSWORD}`).toString('base64')}` };
}

test.before(async () => {
  for (const [i, user] of ['admin', 'web1', 'restore', 'teamreader', 'nobody'].entries()) {
    execFileSync('htpasswd', ['-B', '-C', '4', '-b', ...(i === 0 ? ['-c'] : []), htpasswdFile, user, PASSWORD], { stdio: 'ignore' });
  }
  appendFileSync(
    htpasswdFile,
    [
      '# who may do what',
      '#volreg group admins admin',
      '#volreg allow @admins ** all',
      '#volreg allow web1 hosts/web1/** pull,push',
      '#volreg allow restore ** pull',
      '#volreg allow teamreader team/* pull',
      '',
    ].join('\n'),
  );
  server = await startTestServer({ label: 'acl', env: { VOLREG_AUTH_FILE: htpasswdFile } });
});
test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

let counter = 0;
function unique(prefix: string): string {
  return `${prefix}-${process.pid}-${counter++}`;
}

function as(user: string, path: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Reply> {
  return request(server.url, path, { ...opts, headers: { ...auth(user), ...opts.headers } });
}

async function pushBlobAs(user: string, repo: string, blob: Blob): Promise<Reply> {
  return as(user, `/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: blob.bytes });
}

/** A manifest with its blobs pushed by `admin`, ready to be put by anyone who may push. */
async function image(repo: string): Promise<{ manifest: Built; layer: Blob }> {
  const config = configBlob();
  const layer = randomBlob();
  for (const b of [config, layer]) t_ok(await pushBlobAs('admin', repo, b), 201);
  return { manifest: ociManifest({ config, layers: [layer] }), layer };
}

function putManifestAs(user: string, repo: string, ref: string, m: Built, headers: Record<string, string> = {}): Promise<Reply> {
  return as(user, `/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType, ...headers }, body: m.bytes });
}

function t_ok(r: Reply, status: number): void {
  if (r.status !== status) throw new Error(`set-up step: ${r.status} ${r.body.toString('utf8')}`);
}

async function tagDigest(repo: string, tag: string): Promise<string | undefined> {
  const r = await as('admin', `/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return r.status === 200 ? (r.headers['docker-content-digest'] as string) : undefined;
}

function denied(t: import('ava').ExecutionContext, r: Reply, action: string, repo: string): void {
  t.is(r.status, 403, r.body.toString('utf8'));
  t.is(errorCode(r), 'DENIED');
  t.regex(r.json<{ errors: Array<{ message: string }> }>().errors[0]!.message, new RegExp(`^permission denied: ${action} on repository ${repo}\\b`));
}

test('/v2 pull: allowed by a rule, else 403 DENIED naming the action and repository, the same for a repository that does not exist', async (t) => {
  const repo = `hosts/web1/${unique('pull')}`;
  const { manifest, layer } = await image(repo);
  t_ok(await putManifestAs('admin', repo, 'v1', manifest), 201);

  for (const user of ['restore', 'web1', 'admin']) {
    t.is((await as(user, `/v2/${repo}/manifests/v1`, { headers: { Accept: manifest.mediaType } })).status, 200, user);
    t.is((await as(user, `/v2/${repo}/blobs/${layer.digest}`)).status, 200, user);
    t.is((await as(user, `/v2/${repo}/tags/list`)).status, 200, user);
  }
  for (const path of [`/v2/${repo}/manifests/v1`, `/v2/${repo}/blobs/${layer.digest}`, `/v2/${repo}/tags/list`]) {
    denied(t, await as('nobody', path), 'pull', repo);
    denied(t, await as('teamreader', path), 'pull', repo);
  }
  // a repository that does not exist answers the same: the refusal tells nothing about it
  const missing = `hosts/web1/${unique('missing')}`;
  denied(t, await as('nobody', `/v2/${missing}/manifests/v1`), 'pull', missing);
  t.is((await as('restore', `/v2/${missing}/manifests/v1`)).status, 404);
});

test('/v2 push: an append-only host pushes new tags in its prefix only; others are denied before anything is read', async (t) => {
  const repo = `hosts/web1/${unique('push')}`;
  const config = configBlob();
  const layer = randomBlob();
  for (const b of [config, layer]) t.is((await pushBlobAs('web1', repo, b)).status, 201);
  const manifest = ociManifest({ config, layers: [layer] });
  t.is((await putManifestAs('web1', repo, 'v1', manifest)).status, 201);
  t.is(await tagDigest(repo, 'v1'), manifest.digest);

  const other = `hosts/web2/${unique('push')}`;
  denied(t, await pushBlobAs('web1', other, layer), 'push', other);
  denied(t, await as('web1', `/v2/${other}/blobs/uploads/`, { method: 'POST' }), 'push', other);
  denied(t, await putManifestAs('restore', repo, 'v2', manifest), 'push', repo);
  denied(t, await putManifestAs('web1', other, 'v1', manifest), 'push', other);
  t.is(await tagDigest(repo, 'v2'), undefined);
});

test('/v2 overwrite: without it a tag holding other content is not moved (403), by tag, by digest with ?tag= and with If-Match; the same manifest again is no overwrite', async (t) => {
  const repo = `hosts/web1/${unique('overwrite')}`;
  const first = await image(repo);
  const second = await image(repo);
  t.is((await putManifestAs('web1', repo, 'daily', first.manifest)).status, 201);

  denied(t, await putManifestAs('web1', repo, 'daily', second.manifest), 'overwrite', repo);
  denied(t, await putManifestAs('web1', repo, `${second.manifest.digest}?tag=daily`, second.manifest), 'overwrite', repo);
  denied(t, await putManifestAs('web1', repo, 'daily', second.manifest, { 'If-Match': `"${first.manifest.digest}"` }), 'overwrite', repo);
  t.is(await tagDigest(repo, 'daily'), first.manifest.digest, 'the tag still holds the first push');

  // the identical manifest again moves nothing: allowed
  t.is((await putManifestAs('web1', repo, 'daily', first.manifest)).status, 201);
  // the client's own If-None-Match: * still answers 412, as without permissions
  t.is((await putManifestAs('web1', repo, 'daily', second.manifest, { 'If-None-Match': '*' })).status, 412);
  // who may overwrite moves it
  t.is((await putManifestAs('admin', repo, 'daily', second.manifest)).status, 201);
  t.is(await tagDigest(repo, 'daily'), second.manifest.digest);
});

test('/v2 overwrite: a tag holding one schema version gets no unit of the other without it (clients accepting both would read another manifest); the same manifest again is allowed', async (t) => {
  const repo = `hosts/web1/${unique('schemas')}`;
  const { manifest, layer } = await image(repo);
  const schema1 = schema1Unsigned({ name: repo, tag: 'old', layers: [layer] });
  const bothAccepted = { Accept: `${schema1.mediaType}, ${manifest.mediaType}` };

  // a tag holding a schema-1 manifest only: a schema-2 push would change what docker reads by it
  t_ok(await putManifestAs('web1', repo, 'old', schema1), 201);
  denied(t, await putManifestAs('web1', repo, 'old', manifest), 'overwrite', repo);
  denied(t, await putManifestAs('web1', repo, `${manifest.digest}?tag=old`, manifest), 'overwrite', repo);
  const read = await as('admin', `/v2/${repo}/manifests/old`, { headers: bothAccepted });
  t.is(read.headers['docker-content-digest'], schema1.digest, 'the tag still serves the schema-1 manifest');

  // and the other way: a schema-2 tag gets no schema-1 unit beside it
  t_ok(await putManifestAs('web1', repo, 'new', manifest), 201);
  denied(t, await putManifestAs('web1', repo, 'new', schema1Unsigned({ name: repo, tag: 'new', layers: [layer] })), 'overwrite', repo);
  const units = await as('admin', `/v2/${repo}/manifests/new`, { headers: { Accept: schema1.mediaType } });
  t.is(units.status, 404, 'no schema-1 unit under the tag');

  // both units there (an admin's push): pushing either again is no overwrite
  t_ok(await putManifestAs('admin', repo, 'old', manifest), 201);
  t.is((await putManifestAs('web1', repo, 'old', manifest)).status, 201);
  t.is((await putManifestAs('web1', repo, 'old', schema1)).status, 201);
});

test('an append-only host racing a schema-1 and a schema-2 push of one new tag: at most one is kept, and a push answered 201 is the one kept', async (t) => {
  const repo = `hosts/web1/${unique('schema-race')}`;
  const { manifest, layer } = await image(repo);
  for (let round = 0; round < 8; round++) {
    const tag = `race${round}`;
    const schema1 = schema1Unsigned({ name: repo, tag, layers: [layer] });
    const [one, two] = await Promise.all([putManifestAs('web1', repo, tag, schema1), putManifestAs('web1', repo, tag, manifest)]);
    const v1 = await as('admin', `/v2/${repo}/manifests/${tag}`, { headers: { Accept: schema1.mediaType } });
    const v2 = await as('admin', `/v2/${repo}/manifests/${tag}`, { headers: { Accept: manifest.mediaType } });
    t.false(v1.status === 200 && v2.status === 200, `round ${round}: both schema versions tagged`);
    t.is(one.status === 201, v1.status === 200, `round ${round}: schema 1 answered ${one.status}`);
    t.is(two.status === 201, v2.status === 200, `round ${round}: schema 2 answered ${two.status}`);
  }
});

test('/v2 delete: tags, manifests and blobs only with delete', async (t) => {
  const repo = `hosts/web1/${unique('delete')}`;
  const { manifest, layer } = await image(repo);
  t_ok(await putManifestAs('admin', repo, 'v1', manifest), 201);
  for (const user of ['web1', 'restore', 'nobody']) {
    denied(t, await as(user, `/v2/${repo}/manifests/v1`, { method: 'DELETE' }), 'delete', repo);
    denied(t, await as(user, `/v2/${repo}/manifests/${manifest.digest}`, { method: 'DELETE' }), 'delete', repo);
    denied(t, await as(user, `/v2/${repo}/blobs/${layer.digest}`, { method: 'DELETE' }), 'delete', repo);
  }
  t.is(await tagDigest(repo, 'v1'), manifest.digest);
  t.is((await as('admin', `/v2/${repo}/manifests/v1`, { method: 'DELETE' })).status, 202);
  t.is(await tagDigest(repo, 'v1'), undefined);
});

test('an append-only host racing two pushes of one new tag: exactly one wins, the other is refused 403 and leaves nothing tagged', async (t) => {
  for (let round = 0; round < 5; round++) {
    const repo = `hosts/web1/${unique('race')}`;
    const a = await image(repo);
    const b = await image(repo);
    const replies = await Promise.all([putManifestAs('web1', repo, 'new', a.manifest), putManifestAs('web1', repo, 'new', b.manifest)]);
    const statuses = replies.map((r) => r.status).sort();
    t.deepEqual(statuses, [201, 403], replies.map((r) => r.body.toString('utf8')).join(' '));
    const loser = replies[0]!.status === 201 ? b.manifest : a.manifest;
    const winner = replies[0]!.status === 201 ? a.manifest : b.manifest;
    t.is(errorCode(replies.find((r) => r.status === 403)!), 'DENIED');
    t.is(await tagDigest(repo, 'new'), winner.digest);
    const tags = await as('admin', `/v2/${repo}/tags/list`);
    t.deepEqual(tags.json<{ tags: string[] }>().tags, ['new']);
    // the refused push kept no manifest in the repository
    t.is((await as('admin', `/v2/${repo}/manifests/${loser.digest}`, { method: 'HEAD', headers: { Accept: loser.mediaType } })).status, 404);
  }
});

async function snapshot(name: string): Promise<Buffer> {
  return tarOfFiles({ [`${name}.txt`]: Buffer.from(`${name} ${Math.random()}\n`) });
}

function putSnapshotAs(user: string, volume: string, tag: string, body: Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return as(user, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'PUT', headers, body });
}

test('/api/v1: pull, push of a new tag, overwrite (existing tag, If-Match) and delete each need their permission', async (t) => {
  const volume = `hosts/web1/${unique('vol')}`;
  const first = await putSnapshotAs('web1', volume, 'mon', await snapshot('a'));
  t.is(first.status, 201, first.body.toString('utf8'));
  const digest = first.json<{ manifestDigest: string }>().manifestDigest;

  for (const path of [`/api/v1/volumes/${volume}/tags`, `/api/v1/volumes/${volume}/tags/mon`, `/api/v1/volumes/${volume}/tags/mon/content`]) {
    t.is((await as('restore', path)).status, 200, path);
    denied(t, await as('nobody', path), 'pull', volume);
  }
  denied(t, await as('nobody', `/api/v1/volumes/${volume}/tags/mon/verify`, { method: 'POST' }), 'pull', volume);
  denied(t, await putSnapshotAs('restore', volume, 'tue', await snapshot('b')), 'push', volume);
  denied(t, await putSnapshotAs('web1', volume, 'mon', await snapshot('b')), 'overwrite', volume);
  denied(t, await putSnapshotAs('web1', volume, 'mon', await snapshot('b'), { 'If-Match': `"${digest}"` }), 'overwrite', volume);
  denied(t, await as('web1', `/api/v1/volumes/${volume}/tags/mon`, { method: 'DELETE' }), 'delete', volume);
  const still = await as('restore', `/api/v1/volumes/${volume}/tags/mon`);
  t.is(still.json<{ manifestDigest: string }>().manifestDigest, digest, 'nothing moved the tag');
  // an If-None-Match: * the client sent itself still answers 412
  t.is((await putSnapshotAs('web1', volume, 'mon', await snapshot('b'), { 'If-None-Match': '*' })).status, 412);

  t.is((await putSnapshotAs('web1', volume, 'tue', await snapshot('b'))).status, 201);
  t.is((await putSnapshotAs('admin', volume, 'mon', await snapshot('c'), { 'If-Match': `"${digest}"` })).status, 201);
  t.is((await as('admin', `/api/v1/volumes/${volume}/tags/tue`, { method: 'DELETE' })).status, 200);
});

test('/api/v1: two racing pushes of one new snapshot tag by an append-only host leave exactly one', async (t) => {
  const volume = `hosts/web1/${unique('volrace')}`;
  const [a, b] = await Promise.all([snapshot('a'), snapshot('b')]);
  const replies = await Promise.all([putSnapshotAs('web1', volume, 'nightly', a), putSnapshotAs('web1', volume, 'nightly', b)]);
  t.deepEqual(replies.map((r) => r.status).sort(), [201, 403], replies.map((r) => r.body.toString('utf8')).join(' '));
  const winner = replies.find((r) => r.status === 201)!.json<{ manifestDigest: string }>().manifestDigest;
  const list = await as('restore', `/api/v1/volumes/${volume}/tags`);
  const snapshots = list.json<{ snapshots: Array<{ tag: string; manifestDigest: string }> }>().snapshots;
  t.deepEqual(
    snapshots.map((s) => [s.tag, s.manifestDigest]),
    [['nightly', winner]],
  );
});

test('_catalog and GET /api/v1/volumes list only what the user may pull, with n, last and Link over the filtered list', async (t) => {
  const prefix = unique('cat');
  const visible = [`team/${prefix}-a`, `team/${prefix}-c`, `team/${prefix}-e`];
  const hidden = [`team/${prefix}-b/deeper`, `other/${prefix}-d`];
  for (const repo of [...visible, ...hidden]) t_ok(await putSnapshotAs('admin', repo, 'v1', await snapshot(repo.replace(/\//g, '_'))), 201);

  const pages: string[][] = [];
  let path: string | undefined = `/v2/_catalog?n=1&last=${encodeURIComponent(`team/${prefix}`)}`;
  while (path) {
    const r = await as('teamreader', path);
    t.is(r.status, 200);
    const names = r.json<{ repositories: string[] }>().repositories.filter((n) => n.includes(prefix));
    if (names.length > 0) pages.push(names);
    const link = r.headers.link as string | undefined;
    path = link ? /<([^>]+)>/.exec(link)![1] : undefined;
  }
  t.deepEqual(pages, visible.map((v) => [v]));

  const all = (await as('teamreader', '/v2/_catalog')).json<{ repositories: string[] }>().repositories;
  t.true(all.every((n) => /^team\/[^/]+$/.test(n)), all.join(' '));
  const admin = (await as('admin', '/v2/_catalog')).json<{ repositories: string[] }>().repositories;
  t.true(hidden.every((h) => admin.includes(h)));
  t.deepEqual((await as('nobody', '/v2/_catalog')).json<{ repositories: string[] }>().repositories, []);

  // this file's database holds no other team/* volume
  const listed: string[] = [];
  let next: string | undefined = '/api/v1/volumes?limit=1';
  while (next) {
    const r = await as('teamreader', next);
    const body = r.json<{ total: number; volumes: Array<{ volume: string }> }>();
    t.is(body.total, visible.length);
    listed.push(...body.volumes.map((v) => v.volume));
    const link = r.headers.link as string | undefined;
    next = link ? /<([^>]+)>/.exec(link)![1] : undefined;
  }
  t.deepEqual(listed, visible);
});

test('a cross-repository mount from a repository the user may not pull is an ordinary upload session (202), not a mount', async (t) => {
  const secret = `hosts/secret/${unique('src')}`;
  const blob = randomBlob();
  t_ok(await pushBlobAs('admin', secret, blob), 201);
  const target = `hosts/web1/${unique('mount')}`;
  const refused = await as('web1', `/v2/${target}/blobs/uploads/?mount=${blob.digest}&from=${secret}`, { method: 'POST' });
  t.is(refused.status, 202);
  t.truthy(refused.headers.location);
  t.is((await as('web1', `/v2/${target}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
  // from a repository it may pull, the mount happens
  const own = `hosts/web1/${unique('src')}`;
  t_ok(await pushBlobAs('admin', own, blob), 201);
  const mounted = await as('web1', `/v2/${target}/blobs/uploads/?mount=${blob.digest}&from=${own}`, { method: 'POST' });
  t.is(mounted.status, 201);
});

test('malformed rules are configuration errors naming their line; a file without rules lets every user do everything', async (t) => {
  const file = join(dir, 'bad');
  execFileSync('htpasswd', ['-B', '-C', '4', '-b', '-c', file, 'alice', PASSWORD], { stdio: 'ignore' });
  const cases: Array<[string, RegExp]> = [
    ['#volreg allow alice hosts/** pull,erase', /^VOLREG_AUTH_FILE: line 2: unknown action "erase"/],
    ['#volreg allow alice Hosts/** pull', /^VOLREG_AUTH_FILE: line 2: repository pattern "Hosts\/\*\*" is not/],
    ['#volreg allow alice hosts/**', /^VOLREG_AUTH_FILE: line 2: expected "#volreg allow WHO REPOSITORY-PATTERN ACTIONS"/],
    ['#volreg allow @ops ** pull', /^VOLREG_AUTH_FILE: line 2: group "ops" is not defined/],
    ['#volreg permit alice ** pull', /^VOLREG_AUTH_FILE: line 2: unknown directive "permit"/],
    ['#volreg group', /^VOLREG_AUTH_FILE: line 2: expected "#volreg group NAME USER..."/],
  ];
  for (const [line, message] of cases) {
    execFileSync('htpasswd', ['-B', '-C', '4', '-b', '-c', file, 'alice', PASSWORD], { stdio: 'ignore' });
    appendFileSync(file, `${line}\n`);
    const err = await t.throwsAsync(startTestServer({ label: 'acl_bad', env: { VOLREG_AUTH_FILE: file } }), { instanceOf: ConfigError }, line);
    t.regex(err!.message, message, line);
    t.is(err!.message.split('\n').length, 1, line);
  }

  // comments only: today's behaviour, every user may do everything
  writeFileSync(file, '');
  execFileSync('htpasswd', ['-B', '-C', '4', '-b', file, 'alice', PASSWORD], { stdio: 'ignore' });
  appendFileSync(file, '# volreg allow nobody nothing\n');
  const open = await startTestServer({ label: 'acl_open', env: { VOLREG_AUTH_FILE: file } });
  try {
    const repo = `anything/${unique('open')}`;
    const blob = randomBlob();
    const r = await request(open.url, `/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', headers: { ...auth('alice') }, body: blob.bytes });
    t.is(r.status, 201);
    t.is((await request(open.url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'DELETE', headers: auth('alice') })).status, 202);
  } finally {
    await open.close();
  }
});
