import type { Command } from 'commander';
import { addAgentOptions, AGENT_EXIT, clientFrom, parseSnapshotRef, runAgent, UsageError, type ConnectionFlags } from '../client.ts';

export function registerVerify(program: Command): void {
  addAgentOptions(
    program
      .command('verify')
      .description('have the registry re-hash a snapshot\'s config and layer and re-read its tar (exit 4 when it fails)')
      .argument('<ref>', '<name>:<tag>'),
  ).action((ref: string, flags: ConnectionFlags) =>
    runAgent('verify', async () => {
      const parsed = parseSnapshotRef(ref);
      if (!('tag' in parsed)) throw new UsageError('verify needs <name>:<tag>');
      const r = await clientFrom(flags).verify(parsed.name, parsed.tag);
      const problems = r.lastVerify?.problems ?? [];
      if (flags.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else if (r.ok) {
        if (!flags.quiet) process.stdout.write(`${ref}: ok (${r.layer.digest}, verified ${r.lastVerify?.at ?? ''})\n`);
      } else process.stderr.write(`volreg verify: ${ref}: FAILED\n${problems.map((p) => `  ${p}\n`).join('')}`);
      return r.ok ? AGENT_EXIT.OK : AGENT_EXIT.INTEGRITY;
    }),
  );
}
