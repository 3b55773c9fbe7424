import { startEngine } from './engine.ts';

/**
 * `volreg db --dbpath DIR --port N [--socket PATH]`: a durable engine in the foreground.
 * Prints exactly one line once it accepts connections and stops cleanly on SIGTERM/SIGINT.
 */
export async function runStandalone(opts: { dbPath: string; port?: number; host?: string; socketPath?: string }): Promise<void> {
  const engine = await startEngine({
    dbPath: opts.dbPath,
    port: opts.port ?? (opts.socketPath === undefined ? 0 : undefined),
    host: opts.host,
    socketPath: opts.socketPath,
    durable: true,
    log: (msg, fields, level) => void process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: level ?? 'debug', msg, ...fields }) + '\n'),
  });
  const uri = engine.port !== undefined ? `mongodb://${opts.host ?? '127.0.0.1'}:${engine.port}` : engine.uri;
  process.stdout.write(`volreg db listening on ${uri}\n`);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      engine.close().then(
        () => {
          resolve();
          process.exit(0);
        },
        (err: unknown) => {
          process.stderr.write(`volreg db: error while stopping: ${String(err)}\n`);
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
