import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MongoClient, ObjectId, type Db } from 'mongodb';
import { collections, COLLECTIONS, pulpFields } from '../../src/metadata/collections.ts';
import { parseManifest } from '../../src/domain/manifests/manifest-handlers.ts';
import { ManifestRepository } from '../../src/metadata/manifest-repository.ts';
import { RepoContentRepository, VOLUME_NOTE } from '../../src/metadata/repo-content-repository.ts';
import { loadMigrations, Migrator, type Migration } from '../../src/metadata/migrator.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';
import { VOLREG_BIN } from '../helpers/server.ts';
import { digestOf } from '../../src/domain/digest.ts';
import { blobPath } from '../../src/storage/paths.ts';

/**
 * Migrations against a real MongoDB-speaking backend: a fresh database, a re-run that does
 * nothing, racing runners (in one process and as two `volreg migrate` processes) that apply
 * each migration once, a stale lock, a failing migration, and status.
 */

const opened: TestMongo[] = [];
async function freshDb(label: string): Promise<TestMongo> {
  const m = await openTestMongo(label);
  opened.push(m);
  return m;
}
test.after.always(async () => {
  for (const m of opened) await m.close();
});

async function indexKeys(db: Db, coll: string): Promise<Array<{ key: Record<string, number>; unique: boolean }>> {
  const rows = await db.collection(coll).listIndexes().toArray();
  return rows.map((r) => ({ key: r.key as Record<string, number>, unique: r.unique === true }));
}

test('a fresh database gets every collection, index and validator of DESIGN.md section 3', async (t) => {
  const { db } = await freshDb('mig_fresh');
  const all = await loadMigrations();
  t.is(all[0]!.id, '0001-initial');
  const applied = await new Migrator(db).up();
  t.deepEqual(applied, all.map((m) => m.id));

  const names = (await db.listCollections().toArray()).map((c) => c.name);
  for (const name of Object.values(COLLECTIONS)) t.true(names.includes(name), name);

  const expectIndex = async (coll: string, key: Record<string, number>, unique: boolean): Promise<void> => {
    const found = (await indexKeys(db, coll)).find((i) => JSON.stringify(i.key) === JSON.stringify(key));
    t.truthy(found, `${coll} ${JSON.stringify(key)}`);
    t.is(found?.unique, unique, `${coll} ${JSON.stringify(key)} unique`);
  };
  await expectIndex('repos', { repo_id: 1 }, true);
  await expectIndex('units_docker_blob', { digest: 1 }, true);
  await expectIndex('units_docker_manifest', { digest: 1 }, true);
  await expectIndex('units_docker_manifest', { subject_digest: 1 }, false);
  await expectIndex('units_docker_manifest_list', { digest: 1 }, true);
  await expectIndex('units_docker_manifest_list', { subject_digest: 1 }, false);
  await expectIndex('units_docker_tag', { name: 1, schema_version: 1, repo_id: 1 }, true);
  await expectIndex('units_docker_tag', { repo_id: 1, name: 1 }, false);
  await expectIndex('units_docker_tag', { manifest_digest: 1 }, false);
  await expectIndex('repo_content_units', { repo_id: 1, unit_type_id: 1, unit_id: 1 }, true);
  await expectIndex('repo_content_units', { unit_type_id: 1, unit_id: 1 }, false);
  await expectIndex('uploads', { last_activity: 1 }, false);
  // 0003: what garbage collection asks before every delete
  await expectIndex('units_docker_manifest', { blob_digests: 1 }, false);
  await expectIndex('units_docker_manifest', { config_digest: 1 }, false);
  await expectIndex('units_docker_manifest_list', { manifest_digests: 1 }, false);
  // 0006: push records, which garbage collection looks at by age
  await expectIndex('volume_push_records', { recorded: 1 }, false);
  // 0007: notes of refused tag writes, by the write (their _id), the unit and age
  await expectIndex('refused_tag_writes', { unit_id: 1 }, false);
  await expectIndex('refused_tag_writes', { recorded: 1 }, false);

  const withValidator = await db.listCollections({ name: 'units_docker_tag' }).toArray();
  const schema = (withValidator[0] as { options?: { validator?: { $jsonSchema?: { required?: string[] } } } }).options?.validator?.$jsonSchema;
  t.truthy(schema);
  t.true(schema!.required!.includes('manifest_digest'));
});

type AnyDoc = { _id: string; [field: string]: unknown };

function tagDoc(name: string, schemaVersion: 1 | 2, repo: string, digest: string): AnyDoc {
  return {
    ...pulpFields('docker_tag'),
    _id: `${repo}-${name}-${schemaVersion}-${digest.slice(-4)}`,
    name,
    manifest_digest: digest,
    schema_version: schemaVersion,
    manifest_type: 'image',
    repo_id: repo,
  };
}

test('the Tag unit key is unique per (name, schema_version, repo_id); the validators refuse bad documents', async (t) => {
  const { db } = await freshDb('mig_keys');
  await new Migrator(db).up();
  const tags = db.collection<AnyDoc>(COLLECTIONS.tags);
  const d1 = `sha256:${'a'.repeat(64)}`;
  const d2 = `sha256:${'b'.repeat(64)}`;
  await tags.insertOne(tagDoc('latest', 2, 'app', d1));
  // the same name with the other schema version, and in another repository, coexist
  await tags.insertOne(tagDoc('latest', 1, 'app', d2));
  await tags.insertOne(tagDoc('latest', 2, 'other', d1));
  const dup = await t.throwsAsync(tags.insertOne(tagDoc('latest', 2, 'app', d2)));
  t.is((dup as { code?: number }).code, 11000);

  const blobs = db.collection<AnyDoc>(COLLECTIONS.blobs);
  await blobs.insertOne({ ...pulpFields('docker_blob'), _id: 'b1', digest: d1, size: 3 });
  const dupBlob = await t.throwsAsync(blobs.insertOne({ ...pulpFields('docker_blob'), _id: 'b2', digest: d1, size: 3 }));
  t.is((dupBlob as { code?: number }).code, 11000);

  // DocumentValidationFailure (121): a missing required field, a wrong type
  const noDigest = await t.throwsAsync(blobs.insertOne({ ...pulpFields('docker_blob'), _id: 'b3', size: 3 }));
  t.is((noDigest as { code?: number }).code, 121);
  const badSize = await t.throwsAsync(blobs.insertOne({ ...pulpFields('docker_blob'), _id: 'b4', digest: d2, size: 'three' }));
  t.is((badSize as { code?: number }).code, 121);
  const badType = await t.throwsAsync(tags.insertOne({ ...tagDoc('v1', 2, 'app', d1), manifest_type: 'weird' }));
  t.is((badType as { code?: number }).code, 121);
  // extra fields are fine: other areas may add some
  await blobs.insertOne({ ...pulpFields('docker_blob'), _id: 'b5', digest: d2, size: 3, extra_field: true });
  t.is(await blobs.countDocuments(), 2);
});

test('re-running is a no-op', async (t) => {
  const { db } = await freshDb('mig_rerun');
  const first = await new Migrator(db).up();
  t.true(first.length >= 1);
  const recordsBefore = await db.collection(COLLECTIONS.migrations).find().sort({ _id: 1 }).toArray();
  const indexesBefore = await indexKeys(db, COLLECTIONS.tags);
  t.deepEqual(await new Migrator(db).up(), []);
  t.deepEqual(await db.collection(COLLECTIONS.migrations).find().sort({ _id: 1 }).toArray(), recordsBefore);
  t.deepEqual(await indexKeys(db, COLLECTIONS.tags), indexesBefore);
  // the lock is not left behind
  t.is(await db.collection(COLLECTIONS.migrations).countDocuments({ _id: 'lock' as never }), 0);
  // and running the bodies again by hand changes nothing either (idempotent bodies)
  for (const m of await loadMigrations()) await m.up(db);
  t.deepEqual(await indexKeys(db, COLLECTIONS.tags), indexesBefore);
});

test('0004 notes the repositories that already hold volume snapshots, and no others', async (t) => {
  const { db } = await freshDb('mig_volume_notes');
  const all = await loadMigrations();
  const before = all.filter((m) => m.id < '0004');
  await new Migrator(db, { migrations: before }).up();
  // data as a volreg without the note left it: snapshots pushed through /v2, an image beside them
  const c = collections(db);
  const repoContent = new RepoContentRepository(c);
  const manifests = new ManifestRepository(c, repoContent);
  const digest = (ch: string): string => `sha256:${ch.repeat(64)}`;
  const manifest = (fields: Record<string, unknown>, layers: number): Buffer =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...fields,
        layers: Array.from({ length: layers }, (_, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digest(String(i + 2)), size: 10 })),
      }),
    );
  const push = async (repo: string, body: Buffer): Promise<void> => {
    await repoContent.ensureRepo(repo);
    await manifests.addToRepo(repo, await manifests.insertIfAbsent(parseManifest(body, 'application/vnd.oci.image.manifest.v1+json'), body));
  };
  const emptyConfig = { mediaType: 'application/vnd.oci.empty.v1+json', digest: digest('1'), size: 2 };
  await push('by-artifact-type', manifest({ artifactType: 'application/vnd.volreg.volume.v1', config: emptyConfig }, 1));
  await push('by-config-type', manifest({ config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', digest: digest('1'), size: 2 } }, 1));
  await push('image', manifest({ config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest('1'), size: 2 } }, 2));
  await repoContent.ensureRepo('empty');
  t.deepEqual(await repoContent.volumeRepos(), [], 'no notes before the migration');

  const applied = await new Migrator(db).up();
  t.true(applied.includes('0004-volume-notes'));
  t.deepEqual(applied, all.filter((m) => m.id >= '0004').map((m) => m.id));
  t.deepEqual(await repoContent.volumeRepos(), ['by-artifact-type', 'by-config-type']);
  const noted = await db.collection(COLLECTIONS.repos).findOne({ _id: 'by-artifact-type' as never });
  t.deepEqual(noted?.notes, { _repo_type: 'docker-repo', [VOLUME_NOTE]: true }, 'the Pulp repo type note stays');
});

test('0005 counts the units each repository holds into content_unit_counts; a second run changes nothing', async (t) => {
  const { db } = await freshDb('mig_unit_counts');
  const all = await loadMigrations();
  await new Migrator(db, { migrations: all.filter((m) => m.id < '0005') }).up();
  // data as a volreg that never counted left it: associations, every tally {}
  const c = collections(db);
  const at = new Date().toISOString();
  await c.repos.insertMany(['a', 'b'].map((r) => ({ _id: r, repo_id: r, created: at, notes: {}, scratchpad: { tags: [] }, content_unit_counts: {}, _ns: 'repos', _last_updated: 0 })));
  const assoc = (repo: string, type: 'docker_blob' | 'docker_manifest' | 'docker_tag', unit: string) => ({ _id: new ObjectId(), repo_id: repo, unit_type_id: type, unit_id: unit, created: at, updated: at });
  await c.repoContentUnits.insertMany([assoc('a', 'docker_blob', 'b1'), assoc('a', 'docker_blob', 'b2'), assoc('a', 'docker_manifest', 'm1'), assoc('a', 'docker_tag', 't1')]);

  const applied = await new Migrator(db).up();
  t.true(applied.includes('0005-content-unit-counts'));
  const tally = async (r: string) => (await c.repos.findOne({ _id: r }))?.content_unit_counts;
  t.deepEqual(await tally('a'), { docker_blob: 2, docker_manifest: 1, docker_tag: 1 });
  t.deepEqual(await tally('b'), {});
  // and writes keep it moving from there
  await new RepoContentRepository(c).associate('b', 'docker_blob', 'b1');
  t.deepEqual(await tally('b'), { docker_blob: 1 });
  for (const m of all.filter((x) => x.id === '0005-content-unit-counts')) await m.up(db);
  t.deepEqual(await tally('a'), { docker_blob: 2, docker_manifest: 1, docker_tag: 1 });
  t.deepEqual(await tally('b'), { docker_blob: 1 });
});

function countingMigrations(counts: Map<string, number>, delayMs: number): Migration[] {
  return ['0001-a', '0002-b', '0003-c'].map((id) => ({
    id,
    description: `test migration ${id}`,
    up: async (db: Db) => {
      counts.set(id, (counts.get(id) ?? 0) + 1);
      await db.collection('race_log').insertOne({ id, at: new Date() });
      await new Promise((r) => setTimeout(r, delayMs));
    },
  }));
}

test('racing runners on separate connections apply each migration once', async (t) => {
  const mongo = await freshDb('mig_race');
  const clients = await Promise.all([0, 1, 2, 3].map(() => new MongoClient(mongo.uri).connect()));
  t.teardown(async () => {
    for (const c of clients) await c.close();
  });
  const counts = new Map<string, number>();
  const runners = clients.map((c) => new Migrator(c.db(mongo.dbName), { migrations: countingMigrations(counts, 80) }));
  const results = await Promise.all(runners.map((r) => r.up()));
  t.deepEqual(results.flat().sort(), ['0001-a', '0002-b', '0003-c']);
  t.deepEqual([...counts.values()], [1, 1, 1]);
  t.is(await mongo.db.collection('race_log').countDocuments(), 3);
  const status = await runners[0]!.status();
  t.true(status.every((s) => s.appliedAt instanceof Date));
});

test('racing runners with the real migrations: each recorded once, schema complete', async (t) => {
  const mongo = await freshDb('mig_race_real');
  const clients = await Promise.all([0, 1].map(() => new MongoClient(mongo.uri).connect()));
  t.teardown(async () => {
    for (const c of clients) await c.close();
  });
  const results = await Promise.all(clients.map((c) => new Migrator(c.db(mongo.dbName)).up()));
  const all = (await loadMigrations()).map((m) => m.id);
  t.deepEqual(results.flat().sort(), all);
  const records = await mongo.db.collection(COLLECTIONS.migrations).find({ applied_at: { $exists: true } }).toArray();
  t.deepEqual(records.map((r) => r._id).sort(), all);
  t.truthy((await indexKeys(mongo.db, COLLECTIONS.tags)).find((i) => i.unique && 'schema_version' in i.key));
});

test('a lock whose lease expired is taken over; a live one makes the runner wait, then give up', async (t) => {
  const { db } = await freshDb('mig_lock');
  const locks = db.collection<{ _id: string; owner: string; expires_at: Date }>(COLLECTIONS.migrations);
  await locks.insertOne({ _id: 'lock', owner: 'dead-process', expires_at: new Date(Date.now() - 1000) });
  const counts = new Map<string, number>();
  t.deepEqual(await new Migrator(db, { migrations: countingMigrations(counts, 0).slice(0, 1) }).up(), ['0001-a']);
  t.is(await locks.countDocuments({ _id: 'lock' }), 0);

  await locks.insertOne({ _id: 'lock', owner: 'busy-process', expires_at: new Date(Date.now() + 60_000) });
  const started = Date.now();
  const err = await t.throwsAsync(new Migrator(db, { migrations: countingMigrations(counts, 0), waitMs: 400 }).up());
  t.regex(err!.message, /timed out waiting for the migration lock held by busy-process/);
  t.true(Date.now() - started >= 400);
  t.is(counts.get('0002-b'), undefined);
});

test('a failing migration is not recorded, releases the lock, and runs again next time', async (t) => {
  const { db } = await freshDb('mig_fail');
  let attempts = 0;
  const flaky: Migration[] = [
    { id: '0001-ok', description: 'fine', up: async () => {} },
    {
      id: '0002-flaky',
      description: 'fails once',
      up: async (d) => {
        attempts++;
        await d.collection('flaky').updateOne({ _id: 'x' as never }, { $set: { v: 1 } }, { upsert: true });
        if (attempts === 1) throw new Error('disk on fire');
      },
    },
  ];
  const err = await t.throwsAsync(new Migrator(db, { migrations: flaky }).up());
  t.is(err!.message, 'disk on fire');
  const status = await new Migrator(db, { migrations: flaky }).status();
  t.deepEqual(
    status.map((s) => [s.id, s.appliedAt !== null]),
    [
      ['0001-ok', true],
      ['0002-flaky', false],
    ],
  );
  t.deepEqual(await new Migrator(db, { migrations: flaky }).up(), ['0002-flaky']);
  t.is(attempts, 2);
  t.is(await db.collection('flaky').countDocuments(), 1);
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [VOLREG_BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('volreg migrate: two processes racing apply each migration once; status lists them', async (t) => {
  const mongo = await freshDb('mig_cli');
  const env = { VOLREG_MONGODB_URL: mongo.uri, VOLREG_MONGODB_DATABASE: mongo.dbName };
  const all = (await loadMigrations()).map((m) => m.id);

  const pending = await runCli(['migrate', 'status'], env);
  t.is(pending.code, 0, pending.stderr);
  t.deepEqual(
    pending.stdout.trim().split('\n').map((l) => l.split('\t').slice(0, 2)),
    all.map((id) => [id, 'pending']),
  );

  const [a, b] = await Promise.all([runCli(['migrate', 'up'], env), runCli(['migrate'], env)]);
  t.is(a.code, 0, a.stderr);
  t.is(b.code, 0, b.stderr);
  const appliedLines = `${a.stdout}${b.stdout}`.split('\n').filter((l) => l.startsWith('applied '));
  t.deepEqual(appliedLines.map((l) => l.slice('applied '.length)).sort(), all);

  const after = await runCli(['migrate', 'status'], env);
  for (const line of after.stdout.trim().split('\n')) t.regex(line, /^\d{4}-[a-z0-9-]+\tapplied \d{4}-\d\d-\d\dT/);
  const again = await runCli(['migrate', 'up'], env);
  t.is(again.stdout, 'nothing to apply\n');

  const bad = await runCli(['migrate', 'sideways'], env);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /sideways/);
});

test('a database a newer volreg migrated is refused: volreg migrate and volreg serve exit 1 and change nothing', async (t) => {
  const mongo = await freshDb('mig_newer');
  const env = { VOLREG_MONGODB_URL: mongo.uri, VOLREG_MONGODB_DATABASE: mongo.dbName };
  t.is((await runCli(['migrate', 'up'], env)).code, 0);
  await mongo.db.collection(COLLECTIONS.migrations).insertOne({ _id: '9999-from-a-newer-version' as never, description: 'later', applied_at: new Date() });
  const before = await mongo.db.collection(COLLECTIONS.migrations).find({}).toArray();

  const up = await runCli(['migrate', 'up'], env);
  t.is(up.code, 1);
  t.regex(up.stderr, /the database was migrated by a newer volreg \(migrations 9999-from-a-newer-version, which this version does not know\); refusing to go on/);
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-mig-newer-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const serve = await runCli(['serve'], { ...env, VOLREG_ADDR: '127.0.0.1:0', VOLREG_DATA_DIR: dataDir });
  t.is(serve.code, 1);
  t.regex(serve.stdout + serve.stderr, /migrated by a newer volreg/);
  t.deepEqual(await mongo.db.collection(COLLECTIONS.migrations).find({}).toArray(), before);
});

/** Bytes under dataDir with no record: what a gc that runs with --grace 0 deletes. */
async function orphanBytes(dataDir: string): Promise<string> {
  const bytes = Buffer.from('bytes without a record');
  const file = blobPath(dataDir, digestOf(bytes));
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, bytes);
  return file;
}

test('volreg gc refuses a database a newer volreg migrated, and one with migrations pending; migrate status shows the unknown one', async (t) => {
  const mongo = await freshDb('mig_gc');
  const env = { VOLREG_MONGODB_URL: mongo.uri, VOLREG_MONGODB_DATABASE: mongo.dbName };
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-mig-gc-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const orphan = await orphanBytes(dataDir);
  const gc = (): ReturnType<typeof runCli> => runCli(['gc', '--grace', '0', '--delete-untagged'], { ...env, VOLREG_DATA_DIR: dataDir });

  const pending = await gc();
  t.is(pending.code, 1);
  t.regex(pending.stderr, /migrations this version would apply first \(0001-initial, .*\): run volreg migrate/);
  t.true(existsSync(orphan), 'nothing collected');

  t.is((await runCli(['migrate', 'up'], env)).code, 0);
  await mongo.db.collection(COLLECTIONS.migrations).insertOne({ _id: '9999-from-a-newer-version' as never, description: 'later', applied_at: new Date() });
  const newer = await gc();
  t.is(newer.code, 1);
  t.regex(newer.stderr, /migrated by a newer volreg \(migrations 9999-from-a-newer-version/);
  t.true(existsSync(orphan), 'nothing collected');

  const status = await runCli(['migrate', 'status'], env);
  t.is(status.code, 1);
  t.regex(status.stdout, /^9999-from-a-newer-version\tapplied \S+\tapplied by a newer volreg; unknown to this version$/m);
  t.regex(status.stderr, /migrated by a newer volreg/);

  // at this version's schema: a store holding only bytes this database never recorded is not
  // taken for its own (metadata/store-binding.ts: it may be another database's)...
  await mongo.db.collection(COLLECTIONS.migrations).deleteOne({ _id: '9999-from-a-newer-version' as never });
  const foreign = await gc();
  t.is(foreign.code, 1);
  t.regex(foreign.stderr, /records none of/);
  t.true(existsSync(orphan), 'nothing collected');
  // ...while one bound to it (by a run when it held nothing) is collected by the same command
  const aside = join(dataDir, 'orphan-aside');
  await rename(orphan, aside);
  t.is((await gc()).code, 0);
  await rename(aside, orphan);
  t.is((await gc()).code, 0);
  t.false(existsSync(orphan));
});

test('0006 records what pushes through /api/v1 found in their archives from the snapshot documents; a second run changes nothing', async (t) => {
  const { db } = await freshDb('mig_push_records');
  const all = await loadMigrations();
  await new Migrator(db, { migrations: all.filter((m) => m.id < '0006') }).up();
  // snapshot documents as a volreg without push records left them
  const digest = (ch: string): string => `sha256:${ch.repeat(64)}`;
  const snapshot = (repo: string, tag: string, manifest: string, source: 'api' | 'oci', unsafe: number | null): Record<string, unknown> => ({
    _id: `${repo}:${tag}`,
    repo_id: repo,
    tag,
    manifest_digest: manifest,
    config_digest: digest('c'),
    layer_digest: digest('e'),
    layer_size: 10,
    layer_media_type: 'application/vnd.oci.image.layer.v1.tar+gzip',
    compression: 'gzip',
    uncompressed_digest: null,
    uncompressed_size: null,
    entries: 3,
    unsafe_entries: unsafe,
    host: null,
    labels: {},
    created: new Date(),
    source,
    last_verify: null,
    _last_updated: 0,
  });
  const snapshots = db.collection(COLLECTIONS.volumeSnapshots);
  await snapshots.insertMany([
    snapshot('db', 'daily', digest('1'), 'api', 2),
    snapshot('db', 'latest', digest('1'), 'api', 2), // another tag of the same manifest
    snapshot('db', 'weekly', digest('2'), 'api', 0),
    snapshot('web', 'copied', digest('3'), 'oci', null),
  ] as never[]);

  const applied = await new Migrator(db).up();
  t.true(applied.includes('0006-volume-push-records'));
  const records = db.collection(COLLECTIONS.volumePushRecords);
  const read = async () => (await records.find({}, { projection: { recorded: 0 } }).sort({ _id: 1 }).toArray()) as unknown[];
  t.deepEqual(await read(), [
    { _id: digest('1'), repo_id: 'db', unsafe_entries: 2 },
    { _id: digest('2'), repo_id: 'db', unsafe_entries: 0 },
  ]);
  // the validator holds the collection to its schema
  await t.throwsAsync(records.insertOne({ _id: digest('4'), repo_id: 'db', unsafe_entries: -1, recorded: new Date() } as never));
  for (const m of all.filter((x) => x.id === '0006-volume-push-records')) await m.up(db);
  t.is((await read()).length, 2);
});

const validatorOf = async (db: Db, name: string) =>
  ((await db.listCollections({ name }).toArray())[0] as { options?: { validator?: { $jsonSchema?: { properties?: Record<string, unknown> } } } }).options?.validator?.$jsonSchema;

async function dropWriteIdFromTagValidator(db: Db): Promise<void> {
  const older = structuredClone(await validatorOf(db, COLLECTIONS.tags))!;
  delete older.properties!['write_id'];
  await db.command({ collMod: COLLECTIONS.tags, validator: { $jsonSchema: older } });
}

const tagUnit = (id: string, writeId: unknown) => ({ _id: id, name: `t${id}`, manifest_digest: `sha256:${'a'.repeat(64)}`, schema_version: 2, manifest_type: 'image', repo_id: 'r', write_id: writeId, ...pulpFields('docker_tag') });

test('0007 creates refused_tag_writes and brings the tag units\' validator up to write_id; a second run changes nothing', async (t) => {
  const { db } = await freshDb('mig_refused_tags');
  const all = await loadMigrations();
  await new Migrator(db, { migrations: all.filter((m) => m.id < '0007') }).up();
  await dropWriteIdFromTagValidator(db); // the tag validator as a volreg before write_id set it
  await db.collection(COLLECTIONS.tags).insertOne(tagUnit('1', 7) as never); // taken before 0007

  const applied = await new Migrator(db, { migrations: all.filter((m) => m.id < '0008') }).up();
  t.deepEqual(applied, ['0007-refused-tag-writes']);
  t.truthy((await validatorOf(db, COLLECTIONS.tags))?.properties?.['write_id']);
  await t.throwsAsync(db.collection(COLLECTIONS.tags).insertOne(tagUnit('2', 7) as never), undefined, 'a write_id that is not a string is refused');
  await db.collection(COLLECTIONS.tags).insertOne(tagUnit('3', 'w') as never);
  const { _id: _ignored, ...fields } = tagUnit('4', 'w');
  await t.throwsAsync(db.collection(COLLECTIONS.refusedTagWrites).insertOne({ _id: 'w', ...fields } as never), undefined, 'refused_tag_writes is held to its schema');
  for (const m of all.filter((x) => x.id === '0007-refused-tag-writes')) await m.up(db);
  t.truthy((await validatorOf(db, COLLECTIONS.refusedTagWrites))?.properties?.['previous_digest']);
});

test('0008 brings the tag validator up to write_id in a database that applied 0007 before 0007 installed it; a second run changes nothing', async (t) => {
  const { db } = await freshDb('mig_current_validators');
  const all = await loadMigrations();
  await new Migrator(db, { migrations: all.filter((m) => m.id < '0008') }).up();
  await dropWriteIdFromTagValidator(db); // what a volreg whose 0007 did not yet touch the tag validator left: 0007 recorded, no write_id

  t.deepEqual(await new Migrator(db).up(), ['0008-current-validators']);
  t.truthy((await validatorOf(db, COLLECTIONS.tags))?.properties?.['write_id']);
  await t.throwsAsync(db.collection(COLLECTIONS.tags).insertOne(tagUnit('1', 7) as never), undefined, 'a write_id that is not a string is refused');
  await db.collection(COLLECTIONS.tags).insertOne(tagUnit('2', 'w') as never);
  const before = await db.listCollections().toArray();
  for (const m of all.filter((x) => x.id === '0008-current-validators')) await m.up(db);
  t.deepEqual(await db.listCollections().toArray(), before);
});
