import type { ExecutionContext } from 'ava';

/**
 * For the tests whose subject needs root: restoring owners, running the CLI as a second,
 * unprivileged user against files root owns, or podman's storage without user namespaces. As anyone else they fail, saying why, rather than
 * be skipped; `.ci/run` runs the suite as root.
 */
export function assertRoot(t: ExecutionContext, why = 'it sets owners, or runs the CLI as another user'): void {
  if (process.getuid?.() !== 0) {
    t.log('run the suite as root, as .ci/run does');
    throw new Error(`this test needs root: ${why}`);
  }
}
