import type { ExecutionContext } from 'ava';

/**
 * For the tests whose subject needs root: restoring owners, or running the CLI as a second,
 * unprivileged user against files root owns. As anyone else they fail, saying why, rather than
 * be skipped; `.ci/run` runs the suite as root.
 */
export function assertRoot(t: ExecutionContext): void {
  if (process.getuid?.() !== 0) {
    t.log('run the suite as root, as .ci/run does');
    throw new Error('this test needs root: it sets owners, or runs the CLI as another user');
  }
}
