import type { ExecutionContext } from 'ava';

/**
 * Asserts that `actual` holds exactly the bytes of `expected`, as `t.deepEqual` on two Buffers
 * does, but compared with Buffer.equals: ava's deepEqual describes a Buffer key by key, which
 * for a few MiB costs seconds of CPU (and gigabytes of garbage) per comparison. A mismatch
 * names both lengths and the first byte that differs, with the bytes around it.
 */
export function sameBytes(t: ExecutionContext, actual: Uint8Array, expected: Uint8Array, message = 'the bytes differ'): boolean {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  const equal = a.equals(e);
  return t.true(equal, equal ? message : `${message}: ${difference(a, e)}`);
}

/** Both lengths and where `a` first differs from `e`, with the bytes around it. */
function difference(a: Buffer, e: Buffer): string {
  let at = 0;
  while (at < a.length && at < e.length && a[at] === e[at]) at++;
  const around = (b: Buffer): string => b.subarray(Math.max(0, at - 8), at + 8).toString('hex');
  return `${a.length} bytes, expected ${e.length}; first difference at byte ${at} (from byte ${Math.max(0, at - 8)}: ${around(a)}, expected ${around(e)})`;
}
