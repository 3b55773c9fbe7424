import test from 'ava';
import type { Document } from 'mongodb';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** create / collMod / listCollections / listDatabases / drop / dropDatabase / renameCollection and validators. */

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('collection_commands');
});
test.after.always(async () => {
  await m?.close();
});

const code = (e: unknown): number | undefined => (e as { code?: number } | undefined)?.code;

const schema = {
  bsonType: 'object',
  required: ['name', 'size'],
  additionalProperties: false,
  properties: {
    _id: {},
    name: { bsonType: 'string', pattern: '^[a-z]+$' },
    size: { bsonType: ['int', 'long'], minimum: 0 },
    kind: { enum: ['a', 'b'] },
    tags: { bsonType: 'array', items: { bsonType: 'string' }, maxItems: 2 },
    meta: { bsonType: 'object', properties: { at: { bsonType: 'date' } } },
    ratio: { bsonType: 'double', maximum: 1 },
  },
};

test('create with a $jsonSchema validator enforces it with DocumentValidationFailure (121)', async (t) => {
  await m.db.createCollection('validated', { validator: { $jsonSchema: schema } });
  const c = m.db.collection('validated');
  await c.insertOne({ name: 'ok', size: 1, kind: 'a', tags: ['x'], meta: { at: new Date() }, ratio: 0.5 });
  const bad: Document[] = [
    { size: 1 }, // required
    { name: 'ok', size: 'big' }, // bsonType
    { name: 'UPPER', size: 1 }, // pattern
    { name: 'ok', size: -1 }, // minimum
    { name: 'ok', size: 1, kind: 'c' }, // enum
    { name: 'ok', size: 1, tags: [1] }, // items
    { name: 'ok', size: 1, tags: ['a', 'b', 'c'] }, // maxItems
    { name: 'ok', size: 1, extra: true }, // additionalProperties
    { name: 'ok', size: 1, meta: { at: 'yesterday' } }, // nested properties
    { name: 'ok', size: 1, ratio: 2.5 }, // maximum
  ];
  for (const doc of bad) {
    const err = await t.throwsAsync(c.insertOne(doc), undefined, JSON.stringify(doc));
    t.is(code(err), 121, JSON.stringify(doc));
    t.is(err?.message, 'Document failed validation');
  }
  t.is(await c.countDocuments({}), 1);
  // updates are validated too
  t.is(code(await t.throwsAsync(c.updateOne({ name: 'ok' }, { $set: { size: 'x' } }))), 121);
  t.is(code(await t.throwsAsync(c.updateOne({ name: 'ok' }, { $unset: { name: '' } }))), 121);
  // bypassDocumentValidation skips it
  await c.insertOne({ size: 1 }, { bypassDocumentValidation: true });
  t.is(await c.countDocuments({}), 2);
});

test('validation failure writeErrors carry errInfo with the failing _id', async (t) => {
  await m.db.createCollection('validated_info', { validator: { $jsonSchema: { required: ['x'] } } });
  const reply = await m.db.command({ insert: 'validated_info', documents: [{ _id: 'id1', y: 1 }] });
  t.is(reply['ok'], 1);
  t.is(reply['n'], 0);
  t.is(reply['writeErrors'][0].code, 121);
  t.is(reply['writeErrors'][0].errInfo.failingDocumentId, 'id1');
  t.is(reply['writeErrors'][0].errInfo.details.operatorName, '$jsonSchema');
});

test('query-operator validators and validationAction warn', async (t) => {
  await m.db.createCollection('validated_query', { validator: { status: { $in: ['new', 'done'] } } });
  t.is(code(await t.throwsAsync(m.db.collection('validated_query').insertOne({ status: 'other' }))), 121);
  await m.db.createCollection('validated_warn', { validator: { $jsonSchema: { required: ['x'] } }, validationAction: 'warn' });
  await m.db.collection('validated_warn').insertOne({ y: 1 });
  t.is(await m.db.collection('validated_warn').countDocuments({}), 1);
});

test('create is idempotent with the same options; NamespaceExists (48) when they differ', async (t) => {
  await m.db.createCollection('dupcreate', { validator: { $jsonSchema: { required: ['a'] } } });
  await m.db.command({ create: 'dupcreate', validator: { $jsonSchema: { required: ['a'] } } });
  const err = await t.throwsAsync(m.db.command({ create: 'dupcreate', validator: { $jsonSchema: { required: ['b'] } } }));
  t.is(code(err), 48);
  await m.db.collection('implicit').insertOne({ a: 1 });
  t.is(code(await t.throwsAsync(m.db.command({ create: 'implicit', validator: { a: 1 } }))), 48);
  // the same (empty) options as the implicit creation: accepted, like mongod 7
  t.is((await m.db.command({ create: 'implicit' }))['ok'], 1);
});

test('collMod replaces the validator; listCollections shows it', async (t) => {
  await m.db.createCollection('modded', { validator: { $jsonSchema: { required: ['a'] } } });
  await m.db.command({ collMod: 'modded', validator: { $jsonSchema: { required: ['b'] } }, validationLevel: 'strict', validationAction: 'error' });
  await m.db.collection('modded').insertOne({ b: 1 });
  t.is(code(await t.throwsAsync(m.db.collection('modded').insertOne({ a: 1 }))), 121);
  const [info] = await m.db.listCollections({ name: 'modded' }).toArray();
  t.deepEqual((info as Document)['options'].validator, { $jsonSchema: { required: ['b'] } });
  t.is((info as Document)['options'].validationLevel, 'strict');
  t.is(code(await t.throwsAsync(m.db.command({ collMod: 'no_such_coll', validator: {} }))), 26);
});

test('listCollections with filter and nameOnly', async (t) => {
  await m.db.createCollection('lc_one');
  await m.db.createCollection('lc_two');
  const filtered = await m.db.listCollections({ name: { $regex: /^lc_/ } }).toArray();
  t.deepEqual(filtered.map((c) => c.name).sort(), ['lc_one', 'lc_two']);
  const full = filtered.find((c) => c.name === 'lc_one') as Document;
  t.is(full['type'], 'collection');
  t.is(full['info'].readOnly, false);
  t.truthy(full['info'].uuid);
  const names = await m.db.listCollections({ name: 'lc_two' }, { nameOnly: true }).toArray();
  t.deepEqual(names, [{ name: 'lc_two', type: 'collection' }]);
});

test('listDatabases includes this database', async (t) => {
  await m.db.collection('anything').insertOne({ x: 1 });
  const reply = await m.client.db('admin').command({ listDatabases: 1 });
  const mine = (reply['databases'] as Document[]).find((d) => d['name'] === m.dbName);
  t.truthy(mine);
  t.is(typeof mine?.['sizeOnDisk'], 'number');
  const names = await m.client.db('admin').command({ listDatabases: 1, nameOnly: true });
  t.true((names['databases'] as Document[]).some((d) => d['name'] === m.dbName));
});

test('drop removes documents and indexes; dropping a missing collection is harmless', async (t) => {
  const c = m.db.collection('dropme');
  await c.createIndex({ a: 1 });
  await c.insertOne({ a: 1 });
  t.true(await c.drop());
  t.is(await c.countDocuments({}), 0);
  t.deepEqual(await m.db.listCollections({ name: 'dropme' }).toArray(), []);
  await t.notThrowsAsync(m.db.collection('never_existed').drop());
  t.deepEqual(await m.db.listCollections({ name: 'never_existed' }).toArray(), []);
});

test('renameCollection moves documents and indexes; refuses an existing target', async (t) => {
  const c = m.db.collection('ren_src');
  await c.createIndex({ a: 1 }, { unique: true });
  await c.insertOne({ a: 1 });
  await m.db.collection('ren_taken').insertOne({ z: 1 });
  t.is(code(await t.throwsAsync(c.rename('ren_taken'))), 48);
  const renamed = await c.rename('ren_dst');
  t.is(await renamed.countDocuments({ a: 1 }), 1);
  t.is(code(await t.throwsAsync(renamed.insertOne({ a: 1 }))), 11000);
  t.deepEqual(await m.db.listCollections({ name: 'ren_src' }).toArray(), []);
});

test('dropDatabase removes every collection of a database', async (t) => {
  const other = m.client.db(`${m.dbName}_x`);
  await other.collection('a').insertOne({ a: 1 });
  await other.collection('b').insertOne({ b: 1 });
  const reply = await other.command({ dropDatabase: 1 });
  t.is(reply['ok'], 1);
  t.deepEqual(await other.listCollections().toArray(), []);
});

// mongod parses a $jsonSchema when a validator is installed, and refuses keywords and types it
// does not take: a validator that installs here must install on MongoDB 7 as well.
test('create and collMod refuse a $jsonSchema mongod would not take, with its codes', async (t) => {
  const refused: Array<[Document, number, RegExp]> = [
    [{ properties: { n: { type: 'integer' } } }, 9, /\$jsonSchema type 'integer' is not currently supported/],
    [{ properties: { at: { bsonType: 'string', format: 'date-time' } } }, 9, /\$jsonSchema keyword 'format' is not currently supported/],
    [{ $ref: '#/definitions/x' }, 9, /\$jsonSchema keyword '\$ref' is not currently supported/],
    [{ properties: { v: { const: 1 } } }, 9, /Unknown \$jsonSchema keyword: const/],
    [{ items: { examples: [] } }, 9, /Unknown \$jsonSchema keyword: examples/],
    [{ type: 'object', bsonType: 'object' }, 9, /Cannot specify both \$jsonSchema keywords 'type' and 'bsonType'/],
    [{ properties: { n: { bsonType: 'integer' } } }, 2, /Unknown type name alias: integer/],
    [{ properties: { n: { bsonType: 'number', minimum: 0, exclusiveMinimum: 0 } } }, 14, /'exclusiveMinimum' must be a boolean/],
    [{ required: [] }, 9, /'required' cannot be an empty array/],
    [{ properties: { k: { enum: [] } } }, 9, /'enum' cannot be an empty array/],
    [{ title: 3 }, 14, /'title' must be of type string/],
  ];
  let i = 0;
  for (const [schema, expected, message] of refused) {
    const name = `refused_schema_${i++}`;
    const err = await t.throwsAsync(m.db.createCollection(name, { validator: { $jsonSchema: schema } }), undefined, JSON.stringify(schema));
    t.is(code(err), expected, JSON.stringify(schema));
    t.regex(err?.message ?? '', message);
    t.false((await m.db.listCollections({ name }).toArray()).length > 0, 'nothing created');
    await m.db.createCollection(name);
    t.is(code(await t.throwsAsync(m.db.command({ collMod: name, validator: { $jsonSchema: schema } }))), expected);
  }
  // what mongod takes: draft 4 with bsonType, title and description, nested everywhere
  await m.db.createCollection('taken_schema', {
    validator: {
      $jsonSchema: {
        bsonType: 'object',
        title: 't',
        required: ['a'],
        properties: {
          a: { bsonType: ['string', 'null'], description: 'd', pattern: '^x', minLength: 1, maxLength: 4 },
          n: { bsonType: 'number', minimum: 0, exclusiveMinimum: true, maximum: 9, multipleOf: 1 },
          l: { type: 'array', items: [{ type: 'string' }], additionalItems: false, uniqueItems: true, minItems: 0, maxItems: 3 },
          o: { type: 'object', additionalProperties: { bsonType: 'int' }, patternProperties: { '^p': { enum: [1] } }, minProperties: 0 },
        },
        anyOf: [{ required: ['a'] }],
        not: { required: ['z'] },
        dependencies: { a: ['a'], n: { required: ['n'] } },
      },
    },
  });
  t.is((await m.db.listCollections({ name: 'taken_schema' }).toArray()).length, 1);
});
