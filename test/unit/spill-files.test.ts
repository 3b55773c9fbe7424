import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { SpillFiles } from '../../src/cli/archive/spill-files.ts';

test('a record appended is what is read back, even when the caller reuses its buffer before the spill files are written', async (t) => {
  const parent = await mkdtemp(join(tmpdir(), 'volreg-spill-'));
  const spill = SpillFiles.create(join(parent, 'spill'));
  try {
    const reused = Buffer.alloc(8);
    const appended: string[] = [];
    for (let i = 0; i < 3; i++) {
      reused.write(`record-${i}`.padEnd(8, '.'));
      appended.push(reused.toString());
      spill.append('names', reused);
    }
    const read: string[] = [];
    for await (const record of spill.records('names')) read.push(record.toString());
    t.deepEqual(read, appended);
  } finally {
    spill.remove();
    await rm(parent, { recursive: true, force: true });
  }
});
