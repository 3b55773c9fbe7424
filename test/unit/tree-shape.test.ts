import test from 'ava';
import { ancestorKeys, nameKey, NameHashSet } from '../../src/domain/volumes/name-hash-set.ts';
import { TreeShape } from '../../src/domain/volumes/tree-shape.ts';

type Entry = { name: string; type: 'file' | 'directory' | 'symlink' | 'link' | 'fifo'; linkname?: string };

/** The verdict on each entry, in order, until the first refusal. */
function verdicts(entries: Entry[]): Array<string | null> {
  const shape = new TreeShape();
  const out: Array<string | null> = [];
  for (const e of entries) {
    const v = shape.admit(e);
    out.push(v === null ? null : typeof v === 'string' ? v : `refused: ${v.refused}`);
    if (v !== null && typeof v !== 'string') break;
  }
  return out;
}

test('ancestorKeys gives the key of every ancestor, outermost first, as nameKey does of each', (t) => {
  for (const name of ['a/b/c', 'ünï/çødé/ファイル/x', 'one', 'x/' + 'd/'.repeat(50) + 'f']) {
    const parts = name.split('/');
    const expected = parts.slice(0, -1).map((_, i) => nameKey(parts.slice(0, i + 1).join('/')));
    t.deepEqual(ancestorKeys(name), expected, name);
  }
  t.deepEqual(ancestorKeys('one'), []);
});

test('entries that do not fit together as a tree are refused; one beneath a symlink is told apart', (t) => {
  t.deepEqual(verdicts([{ name: 'a', type: 'file' }, { name: 'a/b', type: 'file' }]), [null, 'refused: its parent "a" is not a directory but an earlier entry of the archive: tar -x can not create it']);
  t.deepEqual(verdicts([{ name: 'd/x', type: 'file' }, { name: 'd', type: 'symlink', linkname: '.' }]).at(-1), 'refused: it would replace a directory that holds earlier entries of the archive: tar -x removes a directory only while it is empty');
  t.deepEqual(verdicts([{ name: 's', type: 'symlink', linkname: 'elsewhere' }, { name: 's/x', type: 'file' }]), [null, 'beneath-symlink']);
  t.deepEqual(verdicts([{ name: 's', type: 'symlink', linkname: 'x' }, { name: 'h', type: 'link', linkname: 's' }, { name: 'h/y', type: 'file' }]).at(-1), 'beneath-symlink');
  // a directory entry replaces a file or symlink, as tar -x does
  t.deepEqual(verdicts([{ name: 'a', type: 'file' }, { name: 'a', type: 'directory' }, { name: 'a/b', type: 'file' }]), [null, null, null]);
  // below a deep directory already known to hold entries, a non-directory is still caught
  t.deepEqual(
    verdicts([
      { name: 'p/q/r/x', type: 'file' },
      { name: 'p/q/r/f', type: 'fifo' },
      { name: 'p/q/r/f/g', type: 'file' },
    ]).at(-1),
    'refused: its parent "p/q/r/f" is not a directory but an earlier entry of the archive: tar -x can not create it',
  );
});

test('a chain 3,000 directories deep, a file at every level, costs lookups in proportion to its entries, not to its depth squared', (t) => {
  // Building and looking up every ancestor of every entry took a minute for a 1,500-deep tree
  // pushed with curl; counted here rather than timed.
  const has = NameHashSet.prototype.has;
  let lookups = 0;
  NameHashSet.prototype.has = function (this: NameHashSet, name) {
    lookups++;
    return has.call(this, name);
  };
  t.teardown(() => {
    NameHashSet.prototype.has = has;
  });
  const shape = new TreeShape();
  const depth = 3000;
  let dir = 'v';
  let refusals = 0;
  for (let i = 0; i < depth; i++) {
    if (shape.admit({ name: dir, type: 'directory' }) !== null) refusals++;
    if (shape.admit({ name: `${dir}/f`, type: 'file' }) !== null) refusals++;
    dir += '/d';
  }
  t.is(refusals, 0);
  t.true(lookups < 10 * 2 * depth, `${lookups} lookups for ${2 * depth} entries`);
});
