import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { SparseWriter } from '../../src/cli/archive/sparse-write.ts';

/** Writes `chunks` through a SparseWriter; the file's bytes and the bytes it allocates. */
async function writeSparse(t: ExecutionContext, chunks: Buffer[]): Promise<{ data: Buffer; allocated: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-sparse-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const fd = openSync(path, 'wx');
  try {
    const w = new SparseWriter(fd);
    for (const c of chunks) w.write(c);
    w.end();
    const allocated = fstatSync(fd).blocks * 512;
    return { data: await readFile(path), allocated };
  } finally {
    closeSync(fd);
  }
}

const MiB = 1024 * 1024;

test('blocks of zeros become holes; the bytes read back are the ones written, trailing zeros included', async (t) => {
  const chunks = [Buffer.alloc(4 * MiB), Buffer.from('middle'), Buffer.alloc(4 * MiB), randomBytes(10_000), Buffer.alloc(8 * MiB)];
  const { data, allocated } = await writeSparse(t, chunks);
  t.true(data.equals(Buffer.concat(chunks)));
  t.is(data.length, 16 * MiB + 6 + 10_000);
  t.true(allocated <= 64 * 1024, `${allocated} bytes allocated for about 16 KiB of data`);
});

test('a file of zeros only has its length and nothing allocated', async (t) => {
  const { data, allocated } = await writeSparse(t, [Buffer.alloc(MiB), Buffer.alloc(MiB + 123)]);
  t.is(data.length, 2 * MiB + 123);
  t.true(data.every((b) => b === 0));
  t.is(allocated, 0);
});

test('data in chunks of any size, misaligned with the blocks, comes back exactly', async (t) => {
  const chunks: Buffer[] = [];
  for (const n of [1, 4095, 4097, 5000, 8192, 3, 65_536, 12_345]) {
    chunks.push(randomBytes(n), Buffer.alloc(n));
  }
  const { data, allocated } = await writeSparse(t, chunks);
  const expected = Buffer.concat(chunks);
  t.true(data.equals(expected));
  t.true(allocated < expected.length + 8192, 'holes never cost more room than writing everything');
});

test('data with no zero block is written whole', async (t) => {
  const chunk = randomBytes(MiB);
  const { data, allocated } = await writeSparse(t, [chunk]);
  t.true(data.equals(chunk));
  t.true(allocated >= MiB);
});

test('blocks split across chunks that do not start on a block (gunzip pieces after a 512-byte header) still become holes', async (t) => {
  const file = Buffer.concat([randomBytes(700), Buffer.alloc(4 * MiB), randomBytes(3000), Buffer.alloc(MiB + 17)]);
  const chunks: Buffer[] = [];
  // the first piece ends 512 bytes short of a 16 KiB boundary, as the file's data follows a header
  for (let at = 0, size = 16 * 1024 - 512; at < file.length; at += size, size = 16 * 1024) chunks.push(file.subarray(at, at + size));
  const { data, allocated } = await writeSparse(t, chunks);
  t.true(data.equals(file));
  t.true(allocated <= 16 * 1024, `${allocated} bytes allocated for 3700 bytes of data`);
});
