import { VolregError } from './errors.ts';
import { isDigest, parseDigest, type Digest } from './digest.ts';

export type RepositoryName = string & { readonly __brand: 'RepositoryName' };
export type Tag = string & { readonly __brand: 'Tag' };

// OCI distribution-spec grammar for <name>; at most 255 characters in all.
const NAME_GRAMMAR = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

export function parseRepositoryName(input: string): RepositoryName {
  if (input.length === 0 || input.length > MAX_NAME_LENGTH || !NAME_GRAMMAR.test(input)) {
    throw new VolregError('NAME_INVALID', 'invalid repository name', { name: String(input).slice(0, 300) });
  }
  return input as RepositoryName;
}

export function isTag(input: string): boolean {
  return typeof input === 'string' && TAG_GRAMMAR.test(input);
}

export function parseTag(input: string): Tag {
  if (!isTag(input)) {
    throw new VolregError('TAG_INVALID', 'invalid tag', { tag: String(input).slice(0, 200) });
  }
  return input as Tag;
}

export type Reference = { kind: 'tag'; tag: Tag } | { kind: 'digest'; digest: Digest };

/** Does a manifest reference name a digest (it contains ':'), rather than a tag? */
export function isDigestReference(input: string): boolean {
  return input.includes(':');
}

/** A manifest reference: a digest when it contains ':', a tag otherwise. */
export function parseReference(input: string): Reference {
  if (isDigestReference(input)) return { kind: 'digest', digest: parseDigest(input) };
  if (!isTag(input)) throw new VolregError('TAG_INVALID', 'invalid tag', { tag: input.slice(0, 200) });
  return { kind: 'tag', tag: input as Tag };
}

/**
 * A reference to look a manifest up by (GET, HEAD, DELETE): as parseReference, except that a
 * tag outside the grammar names no manifest, so it is 404 MANIFEST_UNKNOWN (what distribution
 * and zot answer, and the OCI conformance suite expects) rather than TAG_INVALID, which stays
 * the answer to a push. A malformed digest is DIGEST_INVALID either way, as for blobs.
 */
export function parseLookupReference(input: string): Reference {
  if (!isDigestReference(input) && !isTag(input)) {
    throw new VolregError('MANIFEST_UNKNOWN', 'manifest unknown: the reference is not a valid tag', { tag: input.slice(0, 200) });
  }
  return parseReference(input);
}

export { isDigest };
