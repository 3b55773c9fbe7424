import { fstatSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { eachDirectory } from '../../src/cli/archive/durable-tree.ts';

/** device:inode of every directory below `dir`, itself included, found by path */
async function directoriesBelow(dir: string): Promise<string[]> {
  const st = await stat(dir);
  const found = [`${st.dev}:${st.ino}`];
  for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) found.push(...(await directoriesBelow(join(dir, e.name))));
  return found;
}

test('the directory walk visits every directory once, also where a directory holds more subdirectories than one listing keeps', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-each-dir-'));
  try {
    // wide levels (11 subdirectories and files between them) under a bound of 3 names per listing
    for (let i = 0; i < 11; i++) {
      const sub = join(root, `d${i}`);
      await mkdir(sub);
      await writeFile(join(root, `f${i}`), 'x');
      for (let j = 0; j < i % 5; j++) {
        await mkdir(join(sub, `e${j}`));
        await writeFile(join(sub, `e${j}`, 'file'), 'y');
      }
      for (let k = 0; k < 7 && i === 4; k++) await mkdir(join(sub, 'e0', `deep${k}`), { recursive: true });
    }
    await symlink('d1', join(root, 'link-to-d1')); // not a directory of the tree: never entered
    const visited: string[] = [];
    await eachDirectory(
      root,
      async (fd) => {
        const st = fstatSync(fd);
        visited.push(`${st.dev}:${st.ino}`);
      },
      3,
    );
    const expected = await directoriesBelow(root);
    t.is(expected.length, 1 + 11 + 20 + 7);
    t.deepEqual([...visited].sort(), [...expected].sort());
    t.is(new Set(visited).size, visited.length, 'none twice');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
