import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { WriteBack } from '../../src/storage/write-back.ts';

const MIB = 1024 * 1024;

test('a failed background flush is kept for the commit: settle rethrows it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-write-back-'));
  try {
    const file = join(dir, 'data');
    await writeFile(file, 'x');
    const wb = new WriteBack();
    // A path under a regular file cannot be opened (ENOTDIR): the flush fails in the background.
    wb.wrote('bad', join(file, 'below'), 32 * MIB);
    const err = await t.throwsAsync(wb.settle('bad'));
    t.is((err as NodeJS.ErrnoException).code, 'ENOTDIR');
    // Still failed later: the error is not reported once and then forgotten.
    await t.throwsAsync(wb.settle('bad'));

    wb.wrote('good', file, 1);
    wb.appendEnded('good', file);
    await t.notThrowsAsync(wb.settle('good'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a flush of a session whose file is gone (cancelled meanwhile) is no failure', async (t) => {
  const wb = new WriteBack();
  wb.wrote('gone', join(tmpdir(), 'volreg-write-back-missing', 'data'), 32 * MIB);
  await t.notThrowsAsync(wb.settle('gone'));
  wb.forget('gone');
  await t.notThrowsAsync(wb.settle('gone'));
});
