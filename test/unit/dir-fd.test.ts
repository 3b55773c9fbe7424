import { closeSync, constants, openSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { DirChain, removeTreeAt } from '../../src/cli/archive/dir-fd.ts';

let work = '';

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-dir-fd-'));
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

test('removeTreeAt removes more names than it reads at once, read-only directories and names that are not UTF-8, never following a symlink out', async (t) => {
  const parent = join(work, 'removal');
  const outside = join(parent, 'outside');
  await mkdir(outside, { recursive: true });
  await writeFile(join(outside, 'kept'), 'host file');
  const tree = join(parent, 'tree');
  await mkdir(join(tree, 'many'), { recursive: true });
  for (let i = 0; i < 700; i++) await writeFile(join(tree, 'many', `f${i}`), '');
  await mkdir(join(tree, 'many', 'sub'));
  await writeFile(Buffer.from(`${tree}/many/sub/caf\xe9`, 'latin1'), 'latin-1 name');
  await mkdir(join(tree, 'read-only', 'inner'), { recursive: true });
  await writeFile(join(tree, 'read-only', 'inner', 'f'), '');
  await chmod(join(tree, 'read-only', 'inner'), 0o555);
  await chmod(join(tree, 'read-only'), 0o500);
  await symlink(outside, join(tree, 'to-outside'));
  removeTreeAt(parent, 'tree');
  t.deepEqual(await readdir(parent), ['outside']);
  t.deepEqual(await readdir(outside), ['kept']);
  removeTreeAt(parent, 'tree'); // gone already is done
});

test('a DirChain deeper than the directories it keeps open climbs back through every level, each the one it entered', async (t) => {
  const root = join(work, 'chain');
  const depth = 600;
  const names = Array.from({ length: depth }, (_, i) => String(i)); // short: made by path here
  await mkdir(join(root, ...names), { recursive: true });
  for (let i = 0; i < depth; i++) await writeFile(join(root, ...names.slice(0, i + 1), 'here'), String(i));
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  const chain = new DirChain(rootFd);
  try {
    for (const name of names) chain.enter(name);
    const open = readdirSync('/proc/self/fd').length;
    t.true(open < 400, `${open} descriptors open at depth ${depth}`);
    for (let i = depth - 1; i >= 0; i--) {
      t.deepEqual(readdirSync(`/proc/self/fd/${chain.fd()}`).sort(), i === depth - 1 ? ['here'] : [names[i + 1]!, 'here'].sort(), `level ${i}`);
      t.is(chain.leave().toString(), names[i]);
    }
    t.is(chain.fd(), rootFd);
  } finally {
    chain.close();
    closeSync(rootFd);
  }
});
