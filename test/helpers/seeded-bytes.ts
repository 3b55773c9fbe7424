/** `size` bytes of a xorshift stream from `seed`: the same bytes for the same seed, unlike random ones. */
export function seededBytes(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
