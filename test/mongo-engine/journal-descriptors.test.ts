import test from 'ava';
import { deserialize, serialize } from 'bson';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Journal, startFile, type OpenFile } from '../../src/mongo-engine/journal.ts';
import { decodeRecords, encodeHead, KIND_PUT } from '../../src/mongo-engine/journal-format.ts';

/**
 * The journal's switch to a new file while the process is out of file descriptors: nothing was
 * written, so it waits and tries again instead of refusing every write until a restart.
 */

const STORE = 'store-a';

function failing(code: string): Error {
  return Object.assign(new Error(`${code}: too many open files (injected)`), { code });
}

/** Opens files as usual, except that opening a path in `refuse` fails with its code while its count lasts. */
function opener(refuse: Map<string, { code: string; times: number }>): OpenFile & { refused: number } {
  const open = (async (p: string, flags: string) => {
    const r = refuse.get(p);
    if (r && r.times > 0) {
      r.times--;
      open.refused++;
      throw failing(r.code);
    }
    return fs.promises.open(p, flags);
  }) as OpenFile & { refused: number };
  open.refused = 0;
  return open;
}

async function journalIn(dir: string, open: OpenFile, logged: Array<{ msg: string; level?: string }>): Promise<Journal> {
  const fh = await fs.promises.open(path.join(dir, 'journal-1.log'), 'a');
  const size = await startFile(fh, encodeHead({ file: 'journal', generation: 1, store: STORE }));
  return new Journal(fh, size, true, dir, (msg, _fields, level) => logged.push({ msg, ...(level ? { level } : {}) }), open);
}

function putDocs(j: Journal, from: number, to: number): number {
  for (let i = from; i < to; i++) j.put('db.c', Buffer.from(serialize({ _id: i })));
  return j.appendedSeq();
}

/** The _ids put in a journal file, which must be whole. */
function idsIn(file: string): unknown[] {
  const decoded = decodeRecords(fs.readFileSync(file));
  if (decoded.torn) throw new Error(`${file} is torn`);
  return decoded.records.flatMap((r) => (r.kind === KIND_PUT ? [deserialize(r.doc)['_id'] as unknown] : []));
}

test('a switch refused for want of descriptors waits and goes on: writes behind it are acknowledged, in the new file, and the journal takes writes after', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'volreg-journal-fds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const next = path.join(dir, 'journal-2.log');
  const open = opener(
    new Map([
      [next, { code: 'EMFILE', times: 3 }],
      [dir, { code: 'ENFILE', times: 2 }],
    ]),
  );
  const logged: Array<{ msg: string; level?: string }> = [];
  const j = await journalIn(dir, open, logged);

  await j.waitDurable(putDocs(j, 0, 3));
  const rotated = j.rotate(next, encodeHead({ file: 'journal', generation: 2, store: STORE }));
  const behind = j.waitDurable(putDocs(j, 3, 6));
  await rotated;
  await behind;
  t.is(open.refused, 5, 'both the file and the directory were refused, and tried again');
  t.is(j.failure(), undefined);
  await j.waitDurable(putDocs(j, 6, 8));
  await j.close();

  t.deepEqual(idsIn(path.join(dir, 'journal-1.log')), [0, 1, 2]);
  t.deepEqual(idsIn(next), [3, 4, 5, 6, 7]);
  t.is(decodeRecords(fs.readFileSync(next)).head?.generation, 2);
  const warnings = logged.filter((l) => l.level === 'warn');
  t.true(warnings.length >= 1 && warnings.length <= 2, 'warned, not at every try');
  t.regex(warnings[0]!.msg, /out of file descriptors; writes wait and it tries again/);
});

test('any other refusal of the switch still stops the journal: memory may hold what the disk does not', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'volreg-journal-fds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const next = path.join(dir, 'journal-2.log');
  const open = opener(new Map([[next, { code: 'EACCES', times: 1 }]]));
  const j = await journalIn(dir, open, []);
  const rotated = j.rotate(next, encodeHead({ file: 'journal', generation: 2, store: STORE }));
  const behind = j.waitDurable(putDocs(j, 0, 2));
  await t.throwsAsync(rotated, { message: /EACCES/ });
  await t.throwsAsync(behind, { message: /EACCES/ });
  t.regex(j.failure()?.message ?? '', /EACCES/);
  await t.throwsAsync(j.waitDurable(putDocs(j, 2, 3)), { message: /EACCES/ });
  await j.close();
});
