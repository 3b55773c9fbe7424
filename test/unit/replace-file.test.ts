import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { replaceFile } from '../../src/storage/fs-ops.ts';

/** replaceFile leaves the old contents or the new, and no temporary file either way. */

test('the file is replaced whole, and its temporary file is gone', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-replace-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'tags'), 'old\n');
  await replaceFile(join(dir, 'tags'), join(dir, '.tags.tmp'), 'new\n');
  t.is(await readFile(join(dir, 'tags'), 'utf8'), 'new\n');
  t.deepEqual(await readdir(dir), ['tags']);
});

test('a replacement that fails leaves what was there, and no temporary file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-replace-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // a directory that is not empty can not be renamed over
  await mkdir(join(dir, 'tags'));
  await writeFile(join(dir, 'tags', 'inside'), 'kept');
  const err = await t.throwsAsync(replaceFile(join(dir, 'tags'), join(dir, '.tags.tmp'), 'new\n'));
  t.regex((err as NodeJS.ErrnoException | undefined)?.code ?? '', /^(EISDIR|ENOTEMPTY|EEXIST)$/);
  t.deepEqual(await readdir(dir), ['tags']);
  t.is(await readFile(join(dir, 'tags', 'inside'), 'utf8'), 'kept');
});
