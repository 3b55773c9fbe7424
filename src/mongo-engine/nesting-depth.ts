import type { Document } from 'bson';
import { isPlainObject } from './bson-values.ts';
import { engineError } from './errors.ts';

/**
 * mongod's limits on how deep documents nest (BSONDepth; a top-level field is at depth 1). A
 * stored document may nest 180 levels (getMaxDepthForUserStorage), and that bounds every
 * recursive walk over stored documents, here and in recovery, whatever stack the thread that
 * runs the engine has. A command may nest 200 (maxBSONDepth): deeper ones are refused before
 * they reach a recursive matcher, update or pipeline.
 */
export const MAX_STORED_DEPTH = 180;
export const MAX_COMMAND_DEPTH = 200;

/** Throws Overflow (15), as mongod does, when `doc` nests deeper than `max`. */
export function checkNestingDepth(doc: Document, max: number, what: string): void {
  // iterative: the document being checked may be nested far deeper than the stack allows
  const pending: Array<[unknown, number]> = [[doc, 0]];
  while (pending.length > 0) {
    const [value, depth] = pending.pop() as [unknown, number];
    const children = Array.isArray(value) ? value : isPlainObject(value) ? Object.values(value) : undefined;
    if (!children) continue;
    if (children.length > 0 && depth + 1 > max) throw engineError('Overflow', `${what} exceeds maximum nesting depth of ${max}`);
    for (const child of children) pending.push([child, depth + 1]);
  }
}
