import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ByteBudget } from '../../src/storage/byte-budget.ts';
import { WRITE_BATCH_BYTES, copyInto } from '../../src/storage/pipelined-copy.ts';

test('socket chunks of uneven sizes are gathered into batches no larger than a write batch (one slot of the hashing ring each), in order', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-copy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // reads off a socket end where the bytes did: 54 KiB on average rather than a divisor of the batch
  const pieces = Array.from({ length: 60 }, (_, i) => randomBytes(40 * 1024 + ((i * 7919) % (24 * 1024))));
  const body = Buffer.concat(pieces);
  const hashed: Buffer[] = [];
  const fh = await open(join(dir, 'data'), 'w+');
  try {
    const n = await copyInto(Readable.from(pieces, { objectMode: false }), fh, 0, {
      hash: async (bufs, total) => {
        hashed.push(Buffer.concat(bufs, total));
      },
      written: () => undefined,
      room: async () => undefined,
      budget: new ByteBudget(64 * 1024 * 1024),
      limits: {},
    });
    t.is(n, body.length);
  } finally {
    await fh.close();
  }
  t.true(hashed.length > 1, 'the body took several batches');
  for (const batch of hashed) t.true(batch.length <= WRITE_BATCH_BYTES, `a batch of ${batch.length} bytes`);
  t.true(Buffer.concat(hashed).equals(body), 'hashed in order, every byte once');
  t.true((await readFile(join(dir, 'data'))).equals(body));
});
