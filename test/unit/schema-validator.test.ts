import test from 'ava';
import { Binary, Decimal128, Double, Int32, Long, ObjectId } from 'mongodb';
import { VolregError } from '../../src/domain/errors.ts';
import { pulpFields } from '../../src/metadata/collections.ts';
import { assertValid, mongoJsonSchema, schemaIds, validate } from '../../src/metadata/schema-validator.ts';

/** schemas/ compiled by ajv, with MongoDB's bsonType taught to it, and turned into $jsonSchema. */

const digest = `sha256:${'c'.repeat(64)}`;

test('every stored collection has a schema', (t) => {
  const ids = schemaIds();
  for (const id of ['stored-repo', 'stored-docker-blob', 'stored-docker-manifest', 'stored-docker-manifest-list', 'stored-docker-tag', 'stored-repo-content-unit', 'stored-upload']) {
    t.true(ids.includes(id), id);
  }
});

test('a valid tag unit passes; extra fields are allowed', (t) => {
  const doc = { ...pulpFields('docker_tag'), _id: 'u1', name: 'latest', manifest_digest: digest, schema_version: 2, manifest_type: 'image', repo_id: 'app', added_later: 1 };
  t.deepEqual(validate('stored-docker-tag', doc), []);
  t.notThrows(() => assertValid('stored-docker-tag', doc));
});

test('problems name the path; assertValid throws the registered code given', (t) => {
  const doc = { ...pulpFields('docker_tag'), _id: 'u1', name: '-bad tag', manifest_digest: digest, schema_version: 3, manifest_type: 'image' };
  const problems = validate('stored-docker-tag', doc);
  t.deepEqual(problems.map((p) => p.path).sort(), ['/name', '/repo_id', '/schema_version']);
  const err = t.throws(() => assertValid('stored-docker-tag', doc, 'MANIFEST_INVALID'), { instanceOf: VolregError });
  t.is(err!.code, 'MANIFEST_INVALID');
  t.is(err!.status, 400);
  t.like(err!.detail, { schema: 'stored-docker-tag' });
  const plain = t.throws(() => assertValid('stored-docker-tag', null), { instanceOf: VolregError });
  t.is(plain!.code, 'BAD_REQUEST');
});

const bsonCases: Array<[string, unknown, boolean]> = [
  ['a JS integer', 5, true],
  ['a float', 1.5, true],
  ['an Int32', new Int32(5), true],
  ['a Long', Long.fromNumber(5), true],
  ['a Double', new Double(5), true],
  ['a Decimal128', Decimal128.fromString('5'), true],
  ['a bigint', 5n, true],
  ['a numeric string', '5', false],
  ['NaN', Number.NaN, false],
  ['Infinity', Number.POSITIVE_INFINITY, false],
  ['null', null, false],
];
for (const [what, size, ok] of bsonCases) {
  test(`bsonType number: ${what} is ${ok ? 'accepted' : 'refused'}`, (t) => {
    const doc = { ...pulpFields('docker_blob'), _id: 'b', digest, size };
    t.is(validate('stored-docker-blob', doc).length === 0, ok);
  });
}

test('bsonType date, objectId and binData match the driver types only', (t) => {
  const upload = { _id: 'x', repo_id: 'r', offset: 0, started: new Date(), last_activity: new Date() };
  t.deepEqual(validate('stored-upload', upload), []);
  t.is(validate('stored-upload', { ...upload, started: new Date().toISOString() })[0]!.path, '/started');
  t.is(validate('stored-upload', { ...upload, started: new Date(Number.NaN) })[0]!.path, '/started');

  const rcu = { _id: new ObjectId(), repo_id: 'r', unit_id: 'u', unit_type_id: 'docker_blob', created: 'c', updated: 'u' };
  t.deepEqual(validate('stored-repo-content-unit', rcu), []);
  t.is(validate('stored-repo-content-unit', { ...rcu, _id: 'not-an-oid' })[0]!.path, '/_id');
  t.is(validate('stored-repo-content-unit', { ...rcu, unit_type_id: 'docker_image' })[0]!.path, '/unit_type_id');

  const manifest = {
    ...pulpFields('docker_manifest'),
    _id: 'm',
    digest,
    schema_version: 2,
    media_type: 'application/vnd.oci.image.manifest.v1+json',
    size: 2,
    config_digest: null,
    blob_digests: [],
    subject_digest: null,
    artifact_type: null,
    annotations: null,
    content: new Binary(Buffer.from('{}')),
  };
  t.deepEqual(validate('stored-docker-manifest', manifest), []);
  t.deepEqual(validate('stored-docker-manifest', { ...manifest, content: Buffer.from('{}') }), []);
  t.is(validate('stored-docker-manifest', { ...manifest, content: '{}' })[0]!.path, '/content');
  // an object is a plain document, not a Date or a BSON value
  t.is(validate('stored-docker-manifest', { ...manifest, annotations: new Date() })[0]!.path, '/annotations');
  t.is(validate('stored-docker-manifest', { ...manifest, annotations: new ObjectId() })[0]!.path, '/annotations');
});

test('mongoJsonSchema drops what MongoDB refuses and keeps the rest', (t) => {
  const s = mongoJsonSchema('stored-docker-tag');
  const text = JSON.stringify(s);
  for (const k of ['"$id"', '"$schema"', '"format"', '"default"', '"$ref"']) t.false(text.includes(k), k);
  t.is(s.bsonType, 'object');
  t.true((s.required as string[]).includes('manifest_digest'));
  t.deepEqual((s.properties as Record<string, unknown>).manifest_type, { bsonType: 'string', enum: ['image', 'list'] });
});

test('unknown schema ids are a programming error, not a client error', (t) => {
  const err = t.throws(() => validate('no-such-schema', {}));
  t.false(err instanceof VolregError);
});
