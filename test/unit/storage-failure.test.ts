import test from 'ava';
import { fromStorageFailure } from '../../src/storage/storage-failure.ts';

const failure = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: failed`), { code, syscall: 'fsync' });

for (const code of ['EIO', 'ESTALE', 'EUCLEAN', 'EBADMSG']) {
  test(`${code} from the data filesystem is 503 UNAVAILABLE naming it`, (t) => {
    const err = fromStorageFailure(failure(code));
    t.is(err?.code, 'UNAVAILABLE');
    t.is(err?.status, 503);
    t.regex(err?.message ?? '', new RegExp(`^the data filesystem failed \\(${code}\\)`));
  });
}

test('EROFS says the filesystem is read-only', (t) => {
  t.regex(fromStorageFailure(failure('EROFS'))?.message ?? '', /^the data filesystem is read-only \(EROFS/);
});

test('anything else is not a failure of the filesystem', (t) => {
  for (const err of [failure('ENOENT'), failure('ECONNRESET'), failure('EACCES'), new Error('EIO'), null, undefined]) t.is(fromStorageFailure(err), null);
});
