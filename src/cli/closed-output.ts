/**
 * The rule for a reader of volreg's output that goes away before the end (`volreg ls | head -1`,
 * `grep -q`, a pager quit early, a log pipe closed): writing on then fails with EPIPE, which Node
 * (it ignores SIGPIPE) raises as an 'error' event on the stream, and unheard it would end the
 * command with a stack trace. The output is no longer wanted, so the rest of it is dropped
 * quietly; the command itself is not cut short (a backup or restore stopped between two steps by
 * its log reader would be worse than one that finishes) and exits with its own status, which a
 * `set -o pipefail` script still sees (`ls --stale` exit 8). Any other write failure stays loud.
 */
export function dropOutputOnClosedPipe(streams: NodeJS.WriteStream[] = [process.stdout, process.stderr]): void {
  for (const stream of streams) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      // EPIPE the first time; a write after the stream is gone, each time after
      if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
      throw err;
    });
  }
}
