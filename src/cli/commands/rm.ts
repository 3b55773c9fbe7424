import type { Command } from 'commander';
import { isDigest } from '../../domain/digest.ts';
import { addAgentOptions, AGENT_EXIT, clientFrom, parseSnapshotRef, runAgent, UsageError, type ConnectionFlags } from '../client.ts';

export function registerRm(program: Command): void {
  addAgentOptions(
    program
      .command('rm')
      .description('delete a snapshot tag (its layer stays while another tag uses it)')
      .argument('<ref>', '<name>:<tag>')
      .option('--if-digest <digest>', "only while the tag holds the snapshot of this manifest digest (as `ls --json` shows it); exit 7 and nothing deleted otherwise"),
  ).action((ref: string, flags: ConnectionFlags & { ifDigest?: string }) =>
    runAgent('rm', async () => {
      const parsed = parseSnapshotRef(ref);
      if (!('tag' in parsed)) throw new UsageError('rm needs <name>:<tag>');
      if (flags.ifDigest !== undefined && !isDigest(flags.ifDigest)) throw new UsageError(`--if-digest: not a digest: ${flags.ifDigest}`);
      const r = await clientFrom(flags, 'rm').remove(parsed.name, parsed.tag, { ifDigest: flags.ifDigest });
      if (flags.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else if (!flags.quiet) process.stdout.write(`deleted ${ref} (${r.deleted.manifestDigest})\n`);
      return AGENT_EXIT.OK;
    }),
  );
}
