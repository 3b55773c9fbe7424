import type { Digest } from './digest.ts';
import { VolregError } from './errors.ts';

/**
 * Preconditions of a request that changes what a reference points at (If-Match, If-None-Match,
 * RFC 9110 section 13.1), over manifests whose entity tag is `"<digest>"`. They let a client
 * move or delete a tag only if it still points where the client last saw it, or create it only
 * if nobody has, without a race against other clients.
 */

/** `*` (any current representation), or the digests the entity tags name. */
export type EntityTags = '*' | readonly string[];

export interface Preconditions {
  ifMatch?: EntityTags;
  ifNoneMatch?: EntityTags;
}

export function hasPreconditions(p: Preconditions | undefined): p is Preconditions {
  return p !== undefined && (p.ifMatch !== undefined || p.ifNoneMatch !== undefined);
}

/** Whether the preconditions hold where the reference points at `current` (null: at nothing). */
export function preconditionsHold(p: Preconditions, current: Digest | null): boolean {
  if (p.ifMatch !== undefined) {
    if (current === null) return false;
    if (p.ifMatch !== '*' && !p.ifMatch.includes(current)) return false;
  }
  if (p.ifNoneMatch !== undefined && current !== null) {
    if (p.ifNoneMatch === '*' || p.ifNoneMatch.includes(current)) return false;
  }
  return true;
}

export function preconditionFailed(what: string): VolregError {
  return new VolregError('PRECONDITION_FAILED', `${what}: If-Match or If-None-Match does not hold, nothing was changed`);
}
