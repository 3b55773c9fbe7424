import { lstat, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import { CorruptArchiveError, extractTar } from '../../src/cli/archive/safe-extract.ts';
import { inspectArchive, type ArchiveInspection } from '../../src/domain/volumes/archive-inspector.ts';
import { decompressedTar } from '../../src/domain/volumes/decompress.ts';
import { isVolregError } from '../../src/domain/errors.ts';
import {
  bodyOf,
  bounded,
  damageTar,
  describeFull,
  gnuTarExtract,
  fuzzSample,
  hostileArchives,
  treeDifferences,
  type FuzzCompression,
  type FuzzSample,
} from '../helpers/fuzz-archives.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { buildTar, type HostileEntry } from '../helpers/tree.ts';

/**
 * Property tests of the archive inspector (the server's verdict on an upload) against generated,
 * damaged archives, and of the CLI's extractor against the same bytes: the two must agree, and
 * what both take must come back as GNU tar extracts it. VOLREG_FUZZ_RUNS raises the number of
 * runs, VOLREG_FUZZ_SEED changes the seed (README, Running the tests).
 */
let work = '';
let hostile: Buffer[] = [];
let counter = 0;

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-fuzz-unit-'));
  hostile = await hostileArchives();
});

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

const sample = fuzzSample({ maxDamages: 3, maxCompressedDamages: 1 });

async function generated(s: FuzzSample): Promise<{ body: Buffer; compression: FuzzCompression }> {
  return { body: await bodyOf(s, work, hostile), compression: s.compression };
}

type Verdict = { ok: true; inspection: ArchiveInspection } | { ok: false; reason: string };

/** far more than an inspection of these small archives takes, even on a loaded machine */
const BOUND_MS = 10_000;

/** The inspector's verdict; anything it throws but its own refusal fails the property. */
async function inspect(body: Buffer): Promise<Verdict> {
  try {
    const inspection = await bounded(inspectArchive(Readable.from([body])), BOUND_MS, 'the inspection');
    return { ok: true, inspection };
  } catch (err) {
    if (isVolregError(err) && err.code === 'ARCHIVE_INVALID' && err.status === 400) return { ok: false, reason: err.message };
    throw err;
  }
}

/** What the CLI's extractor makes of the same bytes (as `volreg pull` runs it), in an empty directory. */
async function extract(body: Buffer, target: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const { tar } = await decompressedTar(Readable.from([body]));
    await bounded(extractTar(tar, target, { onWarning: () => undefined }), BOUND_MS, 'the extraction');
    return { ok: true };
  } catch (err) {
    if (err instanceof Error && err.message.endsWith(`did not end within ${BOUND_MS} ms`)) throw err;
    return { ok: false, reason: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
  }
}

/**
 * The server counts unsafe entries by their text alone (entry-safety.ts): a symlink that leaves
 * the target only through other links of the archive (`y -> .`, `l -> y/y/../../x`) is
 * found by the extractor, which resolves every link in the extracted tree, and refused there.
 * The server stores such archives as it stores every unsafe one: restore is where it is enforced.
 */
const LINKS_LEAVING = /leaves the target directory through the links it passes|does not resolve within \d+ links/;

function params(seed: number, runs: number): fc.Parameters<[FuzzSample]> {
  return { seed: fuzzSeed(seed), numRuns: fuzzRuns(runs), includeErrorInReport: true };
}

test('the inspector refuses a damaged archive only with its own ARCHIVE_INVALID, in bounded time and memory', async (t) => {
  const before = process.memoryUsage().rss;
  let refused = 0;
  let taken = 0;
  await fc.assert(
    fc.asyncProperty(sample, async (s) => {
      const { body } = await generated(s);
      const verdict = await inspect(body);
      if (verdict.ok) taken++;
      else refused++;
      // small archives: the inspection's memory must not grow with what they claim to hold
      const grown = process.memoryUsage().rss - before;
      if (grown > 512 * 1024 * 1024) throw new Error(`the process grew by ${grown} bytes`);
    }),
    params(0x5eed01, 100),
  );
  t.log(`${taken} taken, ${refused} refused`);
  t.true(taken > 0 && refused > 0, 'the generated archives are both taken and refused');
});

test('what the inspector takes the extractor restores (unless it counted unsafe entries), and what it refuses the extractor refuses', async (t) => {
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(sample, async (s) => {
      const { body } = await generated(s);
      const verdict = await inspect(body);
      const target = join(work, `x-${++counter}`);
      await mkdir(target);
      try {
        const extracted = await extract(body, target);
        if (verdict.ok && verdict.inspection.unsafeEntries === 0 && !extracted.ok && !LINKS_LEAVING.test(extracted.reason)) {
          throw new Error(`the server took the archive (${verdict.inspection.entries} entries, none unsafe), the extractor refused it: ${extracted.reason}`);
        }
        if (!verdict.ok && extracted.ok) throw new Error(`the server refused the archive (${verdict.reason}), the extractor restored it`);
      } finally {
        await rm(target, { recursive: true, force: true });
      }
    }),
    params(0x5eed02, 80),
  ));
});

test('what the inspector and the extractor take comes back as GNU tar extracts it', async (t) => {
  let compared = 0;
  await fc.assert(
    fc.asyncProperty(sample, async (s) => {
      const { body, compression } = await generated(s);
      const verdict = await inspect(body);
      if (!verdict.ok) return;
      const mine = join(work, `mine-${++counter}`);
      const theirs = join(work, `theirs-${counter}`);
      await mkdir(mine);
      await mkdir(theirs);
      try {
        if (!(await extract(body, mine)).ok) return;
        if (!(await gnuTarExtract(body, compression, theirs)).ok) return;
        compared++;
        const differences = treeDifferences(await describeFull(mine), await describeFull(theirs));
        if (differences.length > 0) throw new Error(`pull and tar -x differ (name, pull, tar): ${JSON.stringify(differences).slice(0, 2000)}`);
      } finally {
        await rm(mine, { recursive: true, force: true });
        await rm(theirs, { recursive: true, force: true });
      }
    }),
    params(0x5eed03, 80),
  );
  t.log(`${compared} archives extracted by both and compared`);
  t.true(compared > 0);
});


// ------------------------------------------------------------------ cases the properties found

/** A tar whose entry `at` (by index) has its size field set to `size` (checksum repaired). */
function withSizeField(tar: Buffer, headerOffset: number, size: number): Buffer {
  const out = Buffer.from(tar);
  out.write(`${size.toString(8).padStart(11, '0')}\0`, headerOffset + 124, 'latin1');
  out.fill(0x20, headerOffset + 148, headerOffset + 156);
  let sum = 0;
  for (const b of out.subarray(headerOffset, headerOffset + 512)) sum += b;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, headerOffset + 148, 'latin1');
  return out;
}

for (const how of ['size field', 'pax size record'] as const) {
  test(`a directory whose ${how} says it carries data is inspected and extracted as tar -x does (no data), not waited on for ever`, async (t) => {
    // found as: a ustar tree, a pax `size` record put before a directory entry, compressed with zstd
    const plain = await buildTar([{ name: 'd/', type: 'directory' }, { name: 'd/f', body: 'kept' }]);
    const tar =
      how === 'size field'
        ? withSizeField(plain, 0, 1024)
        : damageTar(plain, { op: 'pax', header: 0, key: 'size', value: '1827528641' }, []);
    const inspection = await bounded(inspectArchive(Readable.from([tar])), BOUND_MS, 'the inspection');
    t.is(inspection.entries, 2);
    const target = join(work, `dir-size-${++counter}`);
    await mkdir(target);
    await bounded(extractTar(Readable.from([tar]), target), BOUND_MS, 'the extraction');
    t.is(await readFile(join(target, 'd/f'), 'utf8'), 'kept');
  });
}

test('an extraction whose zstd stream fails after the last entry (bytes after the last frame) fails, rather than never ending', async (t) => {
  // as fast-check shrank it: a directory, a subdirectory and a symlink, two zstd frames, then 7 bytes that are not zstd
  const body = Buffer.from(
    'KLUv/QRYDQQAskUUHbAnjQFAqAhhmEBrgsbFbuSTqpFAEikl2XeShZIBilUYK1hsobFHdYbIJxG445zFmM1uU1V7JRkQzPRkSJYDgpJKE/ULkVvRxrSaKlN/AhwBEQAKTAEQCQSTHwOqDhBJrCTwWHDhA2JSEtAAmwXQXgLpBCA1EGAFAbiOT2AIRcFNmyi1L/0AWM0AAGAAdXN0YXIAMDAAMCAEAKSADyt6oGWUQBcB3/4ABqX6',
    'base64',
  );
  await t.throwsAsync(inspectArchive(Readable.from([body])), { message: /invalid zstd data/ });
  const target = join(work, `zstd-tail-${++counter}`);
  await mkdir(target);
  const { tar } = await decompressedTar(Readable.from([body]));
  await t.throwsAsync(bounded(extractTar(tar, target), BOUND_MS, 'the extraction'), { instanceOf: CorruptArchiveError, message: /invalid zstd data/ });
});

test('extractTar of a stream that fails before the extraction has started reading rejects with its error, rather than throwing it as an uncaught error', async (t) => {
  // as a gunzip whose check fails does, found while extractTar makes its spill directory
  const target = join(work, `early-failure-${++counter}`);
  await mkdir(target);
  const tar = new Readable({ read: () => undefined });
  setImmediate(() => tar.destroy(new Error('incorrect data check')));
  await t.throwsAsync(extractTar(tar, target), { instanceOf: CorruptArchiveError, message: /incorrect data check/ });
});

test('entries that do not fit together as a tree are refused on push as the extractor refuses them; one beneath a symlink is counted as unsafe', async (t) => {
  // as fast-check shrank it: GNU tar of a directory y holding a fifo, then a second archive with y as a symlink
  const cases: Array<{ entries: HostileEntry[]; refused?: RegExp; entry: string }> = [
    { entries: [{ name: 'y/', type: 'directory' }, { name: 'y/a', type: 'fifo' }, { name: 'y', type: 'symlink', linkname: '.' }], refused: /would replace a directory that holds earlier entries/, entry: 'y' },
    { entries: [{ name: 'd/x', body: 'x' }, { name: 'd', body: 'now a file' }], refused: /would replace a directory that holds earlier entries/, entry: 'd' },
    { entries: [{ name: 'a', body: 'a file' }, { name: 'a/b', body: 'beneath it' }], refused: /its parent "a" is not a directory/, entry: 'a/b' },
    { entries: [{ name: 'f', type: 'fifo' }, { name: 'h', type: 'link', linkname: 'f' }, { name: 'h/b', type: 'directory' }], refused: /its parent "h" is not a directory/, entry: 'h/b' },
    { entries: [{ name: 'd/', type: 'directory' }, { name: 's', type: 'symlink', linkname: 'd' }, { name: 's/x', body: 'through the link' }], entry: 's/x' },
  ];
  for (const c of cases) {
    const tar = await buildTar(c.entries);
    const target = join(work, `shape-${++counter}`);
    await mkdir(target);
    const pulled = await t.throwsAsync(extractTar(Readable.from([tar]), target));
    t.regex(pulled?.message ?? '', new RegExp(`"${c.entry}"`));
    if (c.refused) {
      const refused = await t.throwsAsync(inspectArchive(Readable.from([tar])), { message: c.refused });
      t.deepEqual((refused as { detail?: { entry?: string } } | undefined)?.detail?.entry, JSON.stringify(c.entry));
    } else {
      t.is((await inspectArchive(Readable.from([tar]))).unsafeEntries, 1, `${c.entry}: counted as unsafe`);
    }
  }
  // and what does fit is taken: a directory replaced by a directory, an empty one by a file, a file by a directory
  const fits = await buildTar([
    { name: 'd/x', body: 'x' },
    { name: 'd/', type: 'directory' },
    { name: 'e/', type: 'directory' },
    { name: 'e', body: 'was empty' },
    { name: 'f', body: 'a file first' },
    { name: 'f/', type: 'directory' },
    { name: 'f/g', body: 'then beneath it' },
  ]);
  const inspection = await inspectArchive(Readable.from([fits]));
  t.is(inspection.unsafeEntries, 0);
  const target = join(work, `shape-${++counter}`);
  await mkdir(target);
  await extractTar(Readable.from([fits]), target);
  t.is(await readFile(join(target, 'f/g'), 'utf8'), 'then beneath it');
});

test('a header whose mtime, uid, gid or mode field is not a number is refused on push and by the extractor, as GNU tar fails on it', async (t) => {
  // as fast-check shrank it: GNU tar of an empty directory, its root entry's mtime field set to "K"
  for (const field of ['mtime', 'uid', 'gid', 'mode'] as const) {
    const tar = damageTar(await buildTar([{ name: './', type: 'directory' }, { name: 'f', body: 'x' }]), { op: 'field', header: 0, field, value: 'K', fixChecksum: true }, []);
    await t.throwsAsync(inspectArchive(Readable.from([tar])), { message: new RegExp(`its header's ${field} field is not a number`) }, field);
    const target = join(work, `field-${++counter}`);
    await mkdir(target);
    await t.throwsAsync(extractTar(Readable.from([tar]), target), { message: new RegExp(`its header's ${field} field is not a number`) }, field);
  }
  // a pax record in its place is what tar applies: taken
  const covered = damageTar(await buildTar([{ name: 'f', body: 'x', pax: { mtime: '12345' } }]), { op: 'field', header: 1, field: 'mtime', value: 'K', fixChecksum: true }, []);
  t.is((await inspectArchive(Readable.from([covered]))).entries, 1);
});

test('a mode, uid, gid or mtime field whose digits are followed by something else is refused on push and by the extractor, as GNU tar fails on it', async (t) => {
  // tar-stream reads the digits and drops the rest ("7K" as 7, "0649" as 0o64): a restore by volreg and one by GNU tar would differ
  for (const field of ['mode', 'uid', 'gid', 'mtime'] as const) {
    for (const value of ['7K', '0649']) {
      const tar = damageTar(await buildTar([{ name: './', type: 'directory' }, { name: 'f', body: 'x' }]), { op: 'field', header: 1, field, value, fixChecksum: true }, []);
      const message = new RegExp(`malformed ${field} field "${value}" in tar header \\(entry 2\\)`);
      await t.throwsAsync(inspectArchive(Readable.from([tar])), { message }, `${field} ${value}`);
      const target = join(work, `junk-field-${++counter}`);
      await mkdir(target);
      await t.throwsAsync(extractTar(Readable.from([tar]), target), { message }, `${field} ${value}`);
    }
  }
  // a device's numbers too (tar reads them for devices only)
  for (const field of ['devmajor', 'devminor'] as const) {
    const tar = damageTar(await buildTar([{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }]), { op: 'field', header: 0, field, value: '1K', fixChecksum: true }, []);
    await t.throwsAsync(inspectArchive(Readable.from([tar])), { message: new RegExp(`malformed ${field} field "1K" in tar header \\(entry 1\\)`) }, field);
  }
  // digits then a space and anything, or NULs: what every tar reads as the digits
  const spaced = damageTar(await buildTar([{ name: 'f', body: 'x' }]), { op: 'field', header: 0, field: 'mode', value: '644 x', fixChecksum: true }, []);
  t.is((await inspectArchive(Readable.from([spaced]))).entries, 1);
  const target = join(work, `junk-field-${++counter}`);
  await mkdir(target);
  await extractTar(Readable.from([spaced]), target);
  t.is((await lstat(join(target, 'f'))).mode & 0o7777, 0o644);
});

test('a fifo with the sticky, setuid or setgid bit is restored with its whole mode, not refused by mkfifo', async (t) => {
  // as fast-check shrank it: GNU tar of a fifo, its mode field set to 1000 (sticky)
  for (const mode of [0o1000, 0o1644, 0o4755, 0o2750]) {
    const tar = await buildTar([{ name: 'p', type: 'fifo', mode }]);
    t.is((await inspectArchive(Readable.from([tar]))).entries, 1);
    const target = join(work, `fifo-mode-${++counter}`);
    await mkdir(target);
    await extractTar(Readable.from([tar]), target);
    const st = await lstat(join(target, 'p'));
    t.true(st.isFIFO());
    t.is(st.mode & 0o7777, mode, mode.toString(8));
  }
});
