import { chmod, mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { replaceContents } from '../../src/cli/archive/switch-over.ts';
import { describeTree } from '../helpers/tree.ts';

let work = '';

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-switch-over-'));
});

test.after.always(async () => {
  await chmod(join(work, 'target', 'b'), 0o755).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

test('a switch-over that fails while moving the new entries in puts both sides back and throws that error', async (t) => {
  const old = new Date('2012-12-12T12:12:12Z');
  const target = join(work, 'target');
  const staging = join(work, 'staging');
  await mkdir(join(target, 'b'), { recursive: true });
  await mkdir(join(target, 'keep'));
  await mkdir(staging);
  await writeFile(join(target, 'a'), 'old a');
  await writeFile(join(target, 'b', 'file'), 'old b');
  await writeFile(join(target, 'keep', 'work'), 'the pull work directory stays');
  for (const rel of ['a', 'b/file', 'b', 'keep/work', 'keep']) await utimes(join(target, rel), old, old);
  await chmod(join(target, 'b'), 0o555);
  // moved in name order: a and b2 go in, then `keep` (a file) can not replace the kept directory
  for (const n of ['a', 'b2', 'keep']) await writeFile(join(staging, n), `new ${n}`);
  const targetBefore = await describeTree(target);
  const stagingBefore = await describeTree(staging);

  const aside = join(work, 'aside');
  const warnings: string[] = [];
  const err = await t.throwsAsync(replaceContents(target, staging, aside, { keep: 'keep', onWarning: (m) => warnings.push(m) }));
  t.is((err as NodeJS.ErrnoException).code, 'EISDIR', String(err));
  t.deepEqual(await describeTree(target), targetBefore);
  t.deepEqual(await describeTree(staging), stagingBefore);
  t.deepEqual(await readdir(aside), []);
  t.deepEqual(warnings, []);
});
