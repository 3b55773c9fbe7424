import { type Command, InvalidArgumentError } from 'commander';

export function registerDb(program: Command): void {
  program
    .command('db')
    .description('run the embedded MongoDB-compatible engine standalone (for several volreg processes, or mongosh)')
    .requiredOption('--dbpath <dir>', 'data directory of the engine')
    .option('--port <n>', 'TCP port on 127.0.0.1 (0 picks a free one; default 27017 unless --socket is given)', parsePort)
    .option('--socket <path>', 'listen on this unix socket (and on TCP too when --port is given)')
    .action(async (opts: { dbpath: string; port?: number; socket?: string }) => {
      const { runStandalone } = await import('../../mongo-engine/index.ts');
      const port = opts.port ?? (opts.socket === undefined ? 27017 : undefined);
      await runStandalone({ dbPath: opts.dbpath, port, socketPath: opts.socket });
    });
}

function parsePort(value: string): number {
  const n = /^[0-9]{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 65535)) throw new InvalidArgumentError('not a port number (0-65535)');
  return n;
}
