import { createHash, type Hash } from 'node:crypto';
import { VolregError } from './errors.ts';

export type DigestAlgorithm = 'sha256' | 'sha512';
/** `algorithm:hex`, validated. Always the digest of the exact bytes stored or served. */
export type Digest = string & { readonly __brand: 'Digest' };

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
// The OCI image-spec digest grammar: algorithm ":" encoded.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function isSupportedAlgorithm(alg: string): alg is DigestAlgorithm {
  return alg === 'sha256' || alg === 'sha512';
}

/**
 * Parses a client-supplied digest. Malformed input and a well-formed digest of an algorithm
 * volreg does not implement are both DIGEST_INVALID (400): the spec asks for 400 on any digest
 * the registry cannot use, on every route.
 */
export function parseDigest(input: string): Digest {
  if (!DIGEST_GRAMMAR.test(input)) {
    throw new VolregError('DIGEST_INVALID', 'invalid digest', { digest: String(input).slice(0, 200) });
  }
  const colon = input.indexOf(':');
  const alg = input.slice(0, colon);
  const hex = input.slice(colon + 1);
  if (!isSupportedAlgorithm(alg)) {
    throw new VolregError('DIGEST_INVALID', 'unsupported digest algorithm', { algorithm: alg.slice(0, 32) });
  }
  if (hex.length !== HEX_LENGTH[alg] || !/^[0-9a-f]+$/.test(hex)) {
    throw new VolregError('DIGEST_INVALID', `invalid ${alg} digest`, { digest: input.slice(0, 200) });
  }
  return input as Digest;
}

export function isDigest(input: string): boolean {
  try {
    parseDigest(input);
    return true;
  } catch {
    return false;
  }
}

export function splitDigest(digest: Digest): [DigestAlgorithm, string] {
  const i = digest.indexOf(':');
  return [digest.slice(0, i) as DigestAlgorithm, digest.slice(i + 1)];
}

export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return splitDigest(digest)[0];
}

export function digestHex(digest: Digest): string {
  return splitDigest(digest)[1];
}

export function createDigester(alg: DigestAlgorithm = 'sha256'): Hash {
  return createHash(alg);
}

export function digestOf(bytes: Uint8Array | string, alg: DigestAlgorithm = 'sha256'): Digest {
  return `${alg}:${createHash(alg).update(bytes).digest('hex')}` as Digest;
}

export function digestFromHash(alg: DigestAlgorithm, hash: Hash): Digest {
  return `${alg}:${hash.digest('hex')}` as Digest;
}

/** RFC 3230 `Digest` header value (`sha-256=<base64>`) for a digest. */
export function rfc3230Digest(digest: Digest): string {
  const [alg, hex] = splitDigest(digest);
  return `${alg === 'sha256' ? 'sha-256' : 'sha-512'}=${Buffer.from(hex, 'hex').toString('base64')}`;
}

/**
 * Parses an RFC 3230 `Digest` request header (values of other algorithms are ignored) into
 * its sha-256 and sha-512 digests; one that names neither is DIGEST_INVALID.
 */
export function parseRfc3230Digests(header: string): Digest[] {
  const found: Digest[] = [];
  for (const part of header.split(',')) {
    const m = /^\s*(sha-256|sha-512)=([A-Za-z0-9+/=]+)\s*$/i.exec(part);
    if (!m) continue;
    const alg: DigestAlgorithm = m[1]!.toLowerCase() === 'sha-256' ? 'sha256' : 'sha512';
    const hex = Buffer.from(m[2]!, 'base64').toString('hex');
    found.push(parseDigest(`${alg}:${hex}`));
  }
  if (found.length === 0) throw new VolregError('DIGEST_INVALID', 'Digest header names no sha-256 or sha-512 value');
  return found;
}

/**
 * The digests a client says its bytes have, at most one per algorithm: two different ones of
 * an algorithm can not both hold, and the bytes are refused at once.
 */
export function oneDigestPerAlgorithm(digests: readonly Digest[]): Digest[] {
  const byAlgorithm = new Map<DigestAlgorithm, Digest>();
  for (const d of digests) {
    const alg = digestAlgorithm(d);
    const seen = byAlgorithm.get(alg);
    if (seen !== undefined && seen !== d) throw new VolregError('DIGEST_INVALID', `two different ${alg} digests given (query and Digest header, or within the header)`);
    byAlgorithm.set(alg, d);
  }
  return [...byAlgorithm.values()];
}
