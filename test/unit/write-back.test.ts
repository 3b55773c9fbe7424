import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { WriteBack } from '../../src/storage/write-back.ts';

const MIB = 1024 * 1024;

function failing(code: string): Error {
  return Object.assign(new Error(`${code}: injected`), { code });
}

test('a failed background fdatasync is kept for the commit: settle rethrows it, and again later', async (t) => {
  let syncs = 0;
  const wb = new WriteBack(async () => ({
    datasync: async () => {
      syncs++;
      throw failing('EIO');
    },
    close: async () => undefined,
  }));
  wb.wrote('bad', '/data', 32 * MIB);
  const err = await t.throwsAsync(wb.settle('bad'));
  t.is((err as NodeJS.ErrnoException).code, 'EIO');
  t.true(syncs >= 1);
  // Still failed later: Linux reports a writeback error once, so it must not be forgotten.
  await t.throwsAsync(wb.settle('bad'));
});

test('a flush that cannot open the file (out of descriptors) lost nothing: no failure, and the next flush goes on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-write-back-'));
  try {
    const file = join(dir, 'data');
    await writeFile(file, 'x');
    let opens = 0;
    let synced = 0;
    const wb = new WriteBack(async (path) => {
      if (++opens === 1) throw failing('EMFILE');
      const fh = await open(path, 'r');
      return {
        datasync: async () => {
          synced++;
          await fh.datasync();
        },
        close: () => fh.close(),
      };
    });
    wb.wrote('s', file, 32 * MIB);
    await t.notThrowsAsync(wb.settle('s'));
    t.is(synced, 0);
    wb.wrote('s', file, 1);
    wb.appendEnded('s', file);
    await t.notThrowsAsync(wb.settle('s'));
    t.is(synced, 1);
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
