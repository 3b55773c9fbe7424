import type { Command } from 'commander';
import { addAgentOptions, AGENT_EXIT, clientFrom, parseSnapshotRef, runAgent, UsageError, type ConnectionFlags } from '../client.ts';

export function registerRm(program: Command): void {
  addAgentOptions(
    program
      .command('rm')
      .description('delete a snapshot tag (its layer stays while another tag uses it)')
      .argument('<ref>', '<name>:<tag>'),
  ).action((ref: string, flags: ConnectionFlags) =>
    runAgent('rm', async () => {
      const parsed = parseSnapshotRef(ref);
      if (!('tag' in parsed)) throw new UsageError('rm needs <name>:<tag>');
      const r = await clientFrom(flags).remove(parsed.name, parsed.tag);
      if (flags.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else if (!flags.quiet) process.stdout.write(`deleted ${ref} (${r.deleted.manifestDigest})\n`);
      return AGENT_EXIT.OK;
    }),
  );
}
