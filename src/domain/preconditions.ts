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
  /**
   * Not the client's but its permissions': a user who may not overwrite creates a tag or writes
   * again the digest it holds, never moves it. Checked and written in the same one step as
   * If-None-Match: * (tag-repository.ts), so two racing pushes of a new tag cannot both win.
   */
  createOnly?: { repository: string };
}

export function hasPreconditions(p: Preconditions | undefined): p is Preconditions {
  return p !== undefined && (p.ifMatch !== undefined || p.ifNoneMatch !== undefined || p.createOnly !== undefined);
}

/**
 * Whether the preconditions hold where the reference points at `current` (null: at nothing),
 * for a write of `writing` (what createOnly allows to be there already). `beside`: what the
 * tag's unit of the other schema version holds (null: nothing). Clients that accept both read
 * the schema-2 unit, so a new unit beside an existing one changes what such a tag serves:
 * create-only allows a new unit only where the tag holds nothing at all.
 */
export function preconditionsHold(p: Preconditions, current: Digest | null, writing?: Digest, beside: Digest | null = null): boolean {
  if (!clientPreconditionsHold(p, current)) return false;
  if (p.createOnly === undefined || (current !== null && current === writing)) return true;
  return current === null && beside === null;
}

/**
 * The refusal of a write whose preconditions do not hold at `current`: 412 when the client's
 * own If-Match / If-None-Match fail, else 403 DENIED, the user's lack of overwrite.
 */
export function refusal(p: Preconditions, current: Digest | null, what: string): VolregError {
  if (p.createOnly !== undefined && clientPreconditionsHold(p, current)) {
    const { repository } = p.createOnly;
    return new VolregError('DENIED', `permission denied: overwrite on repository ${repository} (${what} already holds other content)`, { action: 'overwrite', repository });
  }
  return preconditionFailed(what);
}

function clientPreconditionsHold(p: Preconditions, current: Digest | null): boolean {
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
