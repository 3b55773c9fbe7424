import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import type { Digest } from '../../src/domain/digest.ts';
import { VolregError, isVolregError, type ErrorCode } from '../../src/domain/errors.ts';
import type { RepositoryName } from '../../src/domain/names.ts';
import type { BlobService } from '../../src/services/blob-service.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { blobFiles, bytesOf, hexOf, raw, sha256, uploadFiles } from './blobs-client.ts';

/**
 * BlobService.ingest, the one-pass upload the volume API builds on: streamed into the store
 * and, at the same time, into a validator; committed only if both agree. Exercised on the real
 * server's services, then checked through /v2 and on disk.
 */
const test = anyTest as TestFn<{ server: TestServer; blobs: BlobService }>;

test.before(async (t) => {
  t.context.server = await startTestServer({ label: 'blobs-ingest' });
  t.context.blobs = t.context.server.services.blobs!;
});

test.after.always(async (t) => {
  await t.context.server?.close();
});

const repo = (name: string) => name as RepositoryName;

function chunked(bytes: Buffer, size = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    })(),
  );
}

async function drain(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function nothingKept(t: ExecutionContext<{ server: TestServer }>, name: string, digest: string): Promise<void> {
  const { url, dataDir, db } = t.context.server;
  t.is((await raw(url, 'HEAD', `/v2/${name}/blobs/${digest}`)).status, 404);
  t.false((await blobFiles(dataDir)).includes(hexOf(digest)));
  t.is(await db.collection('units_docker_blob').countDocuments({ digest }), 0);
}

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<VolregError> {
  const err = await t.throwsAsync(p);
  t.true(isVolregError(err), String(err));
  t.is((err as VolregError).code, code);
  return err as VolregError;
}

test.serial('the validator sees exactly the stored bytes; the blob is recorded in the repository', async (t) => {
  const bytes = bytesOf(3 * 1024 * 1024 + 5, 41);
  let seen: Buffer | undefined;
  const info = await t.context.blobs.ingest(repo('ingest/ok'), chunked(bytes), {
    validate: async (tee) => {
      seen = await drain(tee);
    },
  });
  t.deepEqual(info, { digest: sha256(bytes) as Digest, size: bytes.length });
  t.true(seen!.equals(bytes));
  const got = await raw(t.context.server.url, 'GET', `/v2/ingest/ok/blobs/${info.digest}`);
  t.true(got.body.equals(bytes));
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
});

test.serial('a validator refusing early: its error is thrown, nothing is kept, no session is left', async (t) => {
  const bytes = bytesOf(8 * 1024 * 1024, 42);
  let produced = 0;
  const source = Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += 64 * 1024) {
        produced += 64 * 1024;
        yield bytes.subarray(i, i + 64 * 1024);
      }
    })(),
  );
  const err = await rejectsWith(
    t,
    t.context.blobs.ingest(repo('ingest/refused'), source, {
      validate: async (tee) => {
        for await (const c of tee) {
          void c;
          throw new VolregError('ARCHIVE_INVALID', 'not a tar');
        }
      },
    }),
    'ARCHIVE_INVALID',
  );
  t.is(err.message, 'not a tar');
  t.true(produced < bytes.length, `the source was read to its end (${produced} bytes) after the validator gave up`);
  await nothingKept(t, 'ingest/refused', sha256(bytes));
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
});

test.serial('a validator refusing at the end (after reading everything) also keeps nothing', async (t) => {
  const bytes = bytesOf(500_000, 43);
  await rejectsWith(
    t,
    t.context.blobs.ingest(repo('ingest/late'), chunked(bytes), {
      validate: async (tee) => {
        await drain(tee);
        throw new VolregError('ARCHIVE_INVALID', 'truncated');
      },
    }),
    'ARCHIVE_INVALID',
  );
  await nothingKept(t, 'ingest/late', sha256(bytes));
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
});

test.serial('a validator done early (without reading the rest) does not stop or stall the upload', async (t) => {
  const bytes = bytesOf(6 * 1024 * 1024, 44);
  const info = await t.context.blobs.ingest(repo('ingest/early'), chunked(bytes), {
    validate: async (tee) => {
      for await (const c of tee) {
        void c;
        return; // looked at the first chunk only
      }
    },
  });
  t.is(info.size, bytes.length);
  t.true((await raw(t.context.server.url, 'GET', `/v2/ingest/early/blobs/${info.digest}`)).body.equals(bytes));
});

test.serial('a slow validator holds the source back (backpressure of both consumers)', async (t) => {
  const total = 24 * 1024 * 1024;
  const piece = bytesOf(64 * 1024, 45);
  let produced = 0;
  let consumed = 0;
  let maxLead = 0;
  const source = Readable.from(
    (function* () {
      while (produced < total) {
        produced += piece.length;
        maxLead = Math.max(maxLead, produced - consumed);
        yield piece;
      }
    })(),
  );
  const info = await t.context.blobs.ingest(repo('ingest/slow'), source, {
    validate: async (tee) => {
      for await (const c of tee) {
        consumed += (c as Buffer).length;
        if (consumed % (1024 * 1024) === 0) await sleep(5);
      }
    },
  });
  t.is(info.size, total);
  t.is(consumed, total);
  t.true(maxLead < 8 * 1024 * 1024, `the source ran ${maxLead} bytes ahead of the validator`);
});

test.serial('a source failing mid-stream is BLOB_UPLOAD_INVALID; the validator is stopped; nothing kept', async (t) => {
  const bytes = bytesOf(2 * 1024 * 1024, 46);
  let validatorError: unknown;
  const source = Readable.from(
    (async function* () {
      yield bytes.subarray(0, 1024 * 1024);
      await sleep(10);
      throw new Error('client went away');
    })(),
  );
  await rejectsWith(
    t,
    t.context.blobs.ingest(repo('ingest/broken'), source, {
      validate: async (tee) => {
        try {
          await drain(tee);
        } catch (err) {
          validatorError = err;
          throw err;
        }
      },
    }),
    'BLOB_UPLOAD_INVALID',
  );
  t.truthy(validatorError, 'the validator saw the failure');
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
});

test.serial('expected digest, expected size and maxBytes are enforced; nothing kept on a mismatch', async (t) => {
  const bytes = bytesOf(100_000, 47);
  await rejectsWith(t, t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { expectedDigest: sha256('other') as Digest }), 'DIGEST_INVALID');
  await rejectsWith(t, t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { expectedSize: 99_999 }), 'SIZE_INVALID');
  await rejectsWith(t, t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { expectedSize: 100_001 }), 'SIZE_INVALID');
  await rejectsWith(t, t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { maxBytes: 99_999 }), 'TOO_LARGE');
  await rejectsWith(t, t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { maxBytes: 10, expectedSize: 100_000 }), 'TOO_LARGE');
  await nothingKept(t, 'ingest/limits', sha256(bytes));
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
  const ok = await t.context.blobs.ingest(repo('ingest/limits'), chunked(bytes), { expectedDigest: sha256(bytes) as Digest, expectedSize: 100_000, maxBytes: 100_000 });
  t.is(ok.digest as string, sha256(bytes));
});

test.serial('a validator that throws at once is reported, and nothing is kept', async (t) => {
  const bytes = bytesOf(300_000, 48);
  await rejectsWith(
    t,
    t.context.blobs.ingest(repo('ingest/throws'), chunked(bytes), {
      validate: () => {
        throw new VolregError('ARCHIVE_INVALID', 'refused before reading');
      },
    }),
    'ARCHIVE_INVALID',
  );
  await nothingKept(t, 'ingest/throws', sha256(bytes));
  t.deepEqual(await uploadFiles(t.context.server.dataDir), []);
});
