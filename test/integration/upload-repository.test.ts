import test from 'ava';
import { randomUUID } from 'node:crypto';
import { collections } from '../../src/metadata/collections.ts';
import { Migrator } from '../../src/metadata/migrator.ts';
import { UploadRepository } from '../../src/metadata/upload-repository.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** Upload sessions' records against a MongoDB-speaking backend. */

let mongo: TestMongo;
let uploads: UploadRepository;

test.before(async () => {
  mongo = await openTestMongo('upload_repository');
  await new Migrator(mongo.db).up();
  uploads = new UploadRepository(collections(mongo.db));
});
test.after.always(async () => {
  await mongo?.close();
});

test("a session's recorded offset never goes back when touches land out of order (two servers, one session)", async (t) => {
  const id = randomUUID();
  await uploads.create({ id, repo: 'team/app' });
  t.true(await uploads.touch(id, 8 << 20));
  // the touch of an earlier chunk, from the other server, arriving late
  t.true(await uploads.touch(id, 4 << 20));
  const s = await uploads.find(id);
  t.is(s?.offset, 8 << 20);
  t.true(await uploads.touch(id, 12 << 20));
  t.is((await uploads.find(id))?.offset, 12 << 20);
  t.false(await uploads.touch(randomUUID(), 1));
});
