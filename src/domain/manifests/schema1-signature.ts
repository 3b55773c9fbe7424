import { createPublicKey, verify, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { VolregError } from '../errors.ts';

/**
 * libtrust "pretty" JWS, the signature format of signed Docker schema 1 manifests
 * (`application/vnd.docker.distribution.manifest.v1+prettyjws`).
 *
 * The signatures sit inside the manifest JSON under `signatures`; each one's protected header
 * carries `formatLength` and `formatTail`, which rebuild the signed payload: the first
 * `formatLength` bytes of the manifest followed by the base64url-decoded `formatTail`. That
 * payload is what the signatures cover and what the manifest's digest is computed over.
 */

export interface Schema1SignatureJson {
  header: { alg: string; jwk?: Record<string, unknown>; x5c?: string[] };
  signature: string;
  protected: string;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;

function invalid(message: string): VolregError {
  return new VolregError('MANIFEST_INVALID', message);
}

function protectedHeader(sig: Schema1SignatureJson): { formatLength: number; formatTail: string } {
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(sig.protected, 'base64url').toString('utf8'));
  } catch {
    throw invalid('signature protected header is not JSON');
  }
  const h = header as { formatLength?: unknown; formatTail?: unknown } | null;
  if (typeof h !== 'object' || h === null) throw invalid('signature protected header is not an object');
  if (typeof h.formatLength !== 'number' || !Number.isSafeInteger(h.formatLength) || h.formatLength <= 0) {
    throw invalid('signature protected header has no valid formatLength');
  }
  if (typeof h.formatTail !== 'string' || !BASE64URL.test(h.formatTail)) {
    throw invalid('signature protected header has no valid formatTail');
  }
  return { formatLength: h.formatLength, formatTail: h.formatTail };
}

/** Rebuilds the signed payload; every signature must describe the same one. */
export function signedPayload(body: Buffer, signatures: readonly Schema1SignatureJson[]): Buffer {
  if (signatures.length === 0) throw invalid('signed schema 1 manifest has no signatures');
  let format: { formatLength: number; formatTail: string } | undefined;
  for (const sig of signatures) {
    const f = protectedHeader(sig);
    if (format && (format.formatLength !== f.formatLength || format.formatTail !== f.formatTail)) {
      throw invalid('signatures disagree on the signed payload');
    }
    format = f;
  }
  const { formatLength, formatTail } = format!;
  if (formatLength > body.length) throw invalid('signature formatLength is beyond the end of the manifest');
  return Buffer.concat([body.subarray(0, formatLength), Buffer.from(formatTail, 'base64url')]);
}

const ALGORITHMS: Readonly<Record<string, { hash: string; kind: 'ec' | 'rsa' }>> = {
  ES256: { hash: 'sha256', kind: 'ec' },
  ES384: { hash: 'sha384', kind: 'ec' },
  ES512: { hash: 'sha512', kind: 'ec' },
  RS256: { hash: 'sha256', kind: 'rsa' },
  RS384: { hash: 'sha384', kind: 'rsa' },
  RS512: { hash: 'sha512', kind: 'rsa' },
};

function signingKey(sig: Schema1SignatureJson): KeyObject {
  try {
    if (sig.header.jwk) return createPublicKey({ key: sig.header.jwk as JsonWebKey, format: 'jwk' });
    if (sig.header.x5c && sig.header.x5c.length > 0) return new X509Certificate(Buffer.from(sig.header.x5c[0]!, 'base64')).publicKey;
  } catch {
    throw invalid('signature key is not a valid public key');
  }
  throw invalid('signature names no key (jwk or x5c)');
}

/**
 * Checks every signature over the payload (JWS signing input: `protected "." base64url(payload)`).
 * Like distribution 2.x, a manifest with a signature that does not verify is refused.
 */
export function verifySignatures(payload: Buffer, signatures: readonly Schema1SignatureJson[]): void {
  const encodedPayload = payload.toString('base64url');
  signatures.forEach((sig, i) => {
    const alg = ALGORITHMS[sig.header.alg];
    if (!alg) throw invalid(`signature ${i}: unsupported algorithm`);
    const key = signingKey(sig);
    if ((alg.kind === 'ec') !== (key.asymmetricKeyType === 'ec')) throw invalid(`signature ${i}: key does not fit the algorithm`);
    const input = Buffer.from(`${sig.protected}.${encodedPayload}`, 'ascii');
    let ok = false;
    try {
      ok = verify(alg.hash, input, alg.kind === 'ec' ? { key, dsaEncoding: 'ieee-p1363' } : key, Buffer.from(sig.signature, 'base64url'));
    } catch {
      ok = false;
    }
    if (!ok) throw invalid(`signature ${i} does not verify`);
  });
}
