import { Writable } from 'node:stream';
import { pino, type Level, type Logger } from 'pino';

/** A logger whose JSON lines are kept, parsed, in `lines` (for tests that look at what was logged). */
export function capturedLog(level: Level): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    }),
  );
  return { logger, lines };
}
