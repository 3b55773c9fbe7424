import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import { inspectArchive } from '../../src/domain/volumes/archive-inspector.ts';
import { entryKind, normalizeEntryName, type KindedHeader } from '../../src/domain/volumes/entry-safety.ts';
import { LinkTargets } from '../../src/domain/volumes/link-targets.ts';
import { NameHashSet, NameTable } from '../../src/domain/volumes/name-hash-set.ts';
import { TreeShape } from '../../src/domain/volumes/tree-shape.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * The archive inspector's two rules on entry names (link-targets.ts, tree-shape.ts) keep their
 * names in one NameTable. Their verdicts, taken together as the inspector takes them, must be
 * those of a plain model of both rules that keeps the names themselves in a Set and a Map.
 */

type Header = KindedHeader & { linkname?: string };

/** A verdict on one entry, the same words for both sides. */
type Verdict = null | 'beneath-symlink' | { hardLinkToMissing: string } | { parentNotDirectory: string } | 'replaces-directory';

/** Both rules over one table, each entry to the hard link rule first, as archive-inspector.ts does. */
class SharedRules {
  private readonly names = new NameTable();
  private readonly links = new LinkTargets(this.names);
  private readonly shape = new TreeShape(this.names);

  admit(h: Header): Verdict {
    const missing = this.links.admit(h);
    if (missing !== null) return { hardLinkToMissing: missing };
    const fit = this.shape.admit(h);
    if (fit === null || fit === 'beneath-symlink') return fit;
    const parent = /^its parent "(.*)" is not a directory/.exec(fit.refused);
    if (parent) return { parentNotDirectory: JSON.parse(`"${parent[1]}"`) as string };
    if (/would replace a directory that holds earlier entries/.test(fit.refused)) return 'replaces-directory';
    throw new Error(`unexpected refusal: ${fit.refused}`);
  }
}

/** The same rules, told from their descriptions, on the names themselves. */
class ReferenceRules {
  /** what a hard link may name: files, symlinks, fifos, devices and links made */
  private readonly linkable = new Set<string>();
  /** what a non-directory entry made at a name (tree-shape's symlinks and others) */
  private readonly made = new Map<string, 'symlink' | 'other'>();
  /** directories holding entries */
  private readonly parents = new Set<string>();

  admit(h: Header): Verdict {
    const name = normalizeEntryName(h.name);
    const kind = entryKind(h);
    const target = kind === 'link' ? normalizeEntryName(h.linkname ?? '') : null;
    if (name === null || name === '') return null;

    if (kind === 'link' && target !== null && target !== '' && !this.linkable.has(target)) return { hardLinkToMissing: target };
    if (kind === 'link' && (target === null || target === '')) {
      // not judged by the hard link rule, and not kept by it
    } else if (kind === 'directory' || kind === 'other') this.linkable.delete(name);
    else this.linkable.add(name);

    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const ancestor = parts.slice(0, i).join('/');
      if (this.parents.has(ancestor)) continue;
      const there = this.made.get(ancestor);
      if (there === 'symlink') return 'beneath-symlink';
      if (there === 'other') return { parentNotDirectory: ancestor };
      this.parents.add(ancestor);
    }
    if (kind === 'directory') {
      this.made.delete(name);
      return null;
    }
    if (this.parents.has(name)) return 'replaces-directory';
    this.made.set(name, kind === 'symlink' || (target !== null && this.made.get(target) === 'symlink') ? 'symlink' : 'other');
    return null;
  }
}

/** Entries of `safeName`s (and a few others), `length` of them. */
function archiveEntries(safeName: fc.Arbitrary<string>, length: { minLength: number; maxLength: number }): fc.Arbitrary<Header[]> {
  // names as archivers write them: `./` in front, `/` after a directory, and now and then an unsafe one or the root
  const entryName = fc.oneof(
    { weight: 12, arbitrary: safeName },
    { weight: 2, arbitrary: safeName.map((n) => `./${n}`) },
    { weight: 2, arbitrary: safeName.map((n) => `${n}/`) },
    { weight: 1, arbitrary: fc.constantFrom('../a', '/a', 'a/../b', './', '') },
  );
  const entryType = fc.constantFrom<string | null | undefined>('file', 'file', 'directory', 'directory', 'symlink', 'link', 'link', 'fifo', 'character-device', 'block-device', 'contiguous-file', null, undefined);
  return fc.array(fc.record({ name: entryName, type: entryType, linkname: entryName }), length);
}

/** `a/b/c`, at most 3 deep, of three names: a few names met again and again */
const fewNames = fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 }).map((parts) => parts.join('/'));

/** 20 names at the top, 200 beneath them, 2,800 beneath those */
const manyNames = fc.nat({ max: 2999 }).map((i) => (i < 20 ? `n${i}` : i < 220 ? `n${i % 20}/n${i}` : `n${i % 20}/n${20 + (i % 200)}/n${i}`));

const cases = [
  // every state a name can be in, one after the other
  { what: 'short archives of a few names', entries: archiveEntries(fewNames, { minLength: 0, maxLength: 40 }), runs: fuzzRuns(3000) },
  // past 512 names the table grows (and drops the keys no set holds any more)
  { what: 'long archives of many names', entries: archiveEntries(manyNames, { minLength: 1000, maxLength: 2500 }), runs: fuzzRuns(40, 1 / 50) },
];

for (const c of cases) {
  test(`${c.what}: both rules over one table give the verdicts of a model keeping the names in a Set and a Map, entry after entry`, (t) => {
    let refused = 0;
    let beneathSymlink = 0;
    fc.assert(
      fc.property(c.entries, (hs) => {
        const shared = new SharedRules();
        const reference = new ReferenceRules();
        // every entry, also past a refusal (the inspector stops there): more states of the table are reached
        for (const [i, h] of hs.entries()) {
          const got = shared.admit(h);
          const expected = reference.admit(h);
          if (JSON.stringify(got) !== JSON.stringify(expected)) {
            throw new Error(`entry ${i} ${JSON.stringify(h)}: ${JSON.stringify(got)}, the model says ${JSON.stringify(expected)}`);
          }
          if (got === 'beneath-symlink') beneathSymlink++;
          else if (got !== null) refused++;
        }
      }),
      { seed: fuzzSeed(0x5a4e5e7), numRuns: c.runs, includeErrorInReport: true },
    );
    t.log(`${refused} refusals, ${beneathSymlink} entries beneath a symlink`);
    t.true(refused > 0 && beneathSymlink > 0, 'the generated archives reach every kind of verdict');
  });
}

test('the two rules over one table hold a name they both keep once', (t) => {
  const shared = new NameTable();
  const links = new LinkTargets(shared);
  const shape = new TreeShape(shared);
  const alone = new NameTable();
  const one = new NameHashSet(alone);
  for (let d = 0; d < 50; d++) {
    for (let f = 0; f < 100; f++) {
      const name = `d${d}/f${f}`;
      t.is(links.admit({ name, type: 'file' }), null);
      t.is(shape.admit({ name, type: 'file' }), null);
      one.add(name);
    }
    one.add(`d${d}`);
  }
  t.is(shared.byteLength, alone.byteLength);
});

test('an inspection keeps the names of both rules in one table', async (t) => {
  const newSet = NameTable.prototype.newSet;
  const tables = new Set<NameTable>();
  let sets = 0;
  NameTable.prototype.newSet = function (this: NameTable) {
    tables.add(this);
    sets++;
    return newSet.call(this);
  };
  t.teardown(() => {
    NameTable.prototype.newSet = newSet;
  });
  const tar = await buildTar([{ name: 'd/', type: 'directory' }, { name: 'd/f', body: 'x' }, { name: 'd/h', type: 'link', linkname: 'd/f' }]);
  t.is((await inspectArchive(Readable.from([tar]))).entries, 3);
  t.is(sets, 4, 'the sets of link-targets.ts and tree-shape.ts');
  t.is(tables.size, 1);
});
