import { writeSync } from 'node:fs';

/**
 * write(2) until all of `data[from, to)` is taken: a write may take part of what it is given
 * (a signal, a filesystem near full), and one that takes nothing would loop for ever, so it is an
 * error. At `position` in the file, or at the descriptor's own offset when null (an O_APPEND
 * descriptor, a file written in order).
 */
export function writeFullySync(fd: number, data: Uint8Array, from = 0, to = data.length, position: number | null = null): void {
  for (let done = from; done < to; ) {
    const written = writeSync(fd, data, done, to - done, position === null ? null : position + (done - from));
    if (written === 0) throw new Error('the file took no bytes of a write');
    done += written;
  }
}
