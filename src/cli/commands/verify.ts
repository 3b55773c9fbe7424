import type { Command } from 'commander';
import { addAgentOptions, AGENT_EXIT, checkedVolume, clientFrom, describeError, isMissing, parseSnapshotRef, runAgent, UsageError, type ConnectionFlags, type SnapshotJson, type VolregClient } from '../client.ts';

interface VerifyFlags extends ConnectionFlags {
  all?: boolean;
}

interface Outcome {
  snapshot: string;
  ok: boolean;
  /** false when the check could not be made (the registry or the network failed): no finding either way */
  checked: boolean;
  layer?: string;
  at?: string;
  problems: string[];
}

// the largest page /api/v1 lists
const PAGE = 1000;
const USAGE = 'verify needs <name>:<tag>, <name>, or --all';

/**
 * Every item of a paged /api/v1 listing, each page starting after the position the previous
 * one named: snapshots pushed or deleted while a long verify runs move nothing across pages,
 * so none is skipped or checked twice (as offsets would).
 */
async function* allPages<T>(page: (limit: number, after: string | undefined) => Promise<{ items: T[]; next: string | null }>): AsyncGenerator<T> {
  for (let after: string | undefined; ; ) {
    const { items, next } = await page(PAGE, after);
    yield* items;
    if (!next) return;
    after = next;
  }
}

/** Every snapshot of a volume, as listed. */
function snapshotsOf(client: VolregClient, name: string): AsyncGenerator<SnapshotJson> {
  return allPages(async (limit, after) => {
    const page = await client.list(name, { limit, after });
    return { items: page.snapshots, next: page.next };
  });
}

/** Every volume. */
function volumesOf(client: VolregClient): AsyncGenerator<string> {
  return allPages(async (limit, after) => {
    const page = await client.listVolumes({ limit, after });
    return { items: page.volumes.map((v) => v.volume), next: page.next };
  });
}

function outcomeOf(snapshot: string, r: SnapshotJson & { ok: boolean }): Outcome {
  return { snapshot, ok: r.ok, checked: true, layer: r.layer.digest, ...(r.lastVerify ? { at: r.lastVerify.at } : {}), problems: r.lastVerify?.problems ?? [] };
}

/** Null when the snapshot was deleted since it was listed. */
async function verifyOne(client: VolregClient, listed: SnapshotJson): Promise<Outcome | null> {
  const snapshot = `${listed.volume}:${listed.tag}`;
  try {
    return outcomeOf(snapshot, await client.verify(listed.volume, listed.tag, listed));
  } catch (err) {
    if (isMissing(err)) return null;
    // one snapshot that cannot be verified (a server or network error) is no finding on it: it
    // is reported as not verified (exit 1, not 4: nothing says it is damaged), the others go on
    return { snapshot, ok: false, checked: false, problems: [describeError(err)] };
  }
}

export function registerVerify(program: Command): void {
  addAgentOptions(
    program
      .command('verify')
      .description("have the registry re-hash snapshots' config and layer and re-read their tar: one snapshot, every snapshot of a volume, or --all (exit 4 when any fails, 1 when any could not be verified)")
      .argument('[ref]', '<name>:<tag>, or <name> for all its snapshots')
      .option('--all', 'every snapshot of every volume'),
  ).action((ref: string | undefined, flags: VerifyFlags) =>
    runAgent('verify', async () => {
      if ((ref === undefined) === !flags.all) throw new UsageError(USAGE);
      const client = clientFrom(flags, 'verify');
      const outcomes: Outcome[] = [];
      const report = (o: Outcome): void => {
        outcomes.push(o);
        if (flags.json) return;
        if (o.ok) {
          if (!flags.quiet) process.stdout.write(`${o.snapshot}: ok (${o.layer ?? ''}, verified ${o.at ?? ''})\n`);
        } else process.stderr.write(`volreg verify: ${o.snapshot}: ${o.checked ? 'FAILED' : 'NOT VERIFIED'}\n${o.problems.map((p) => `  ${p}\n`).join('')}`);
      };

      if (ref !== undefined && ref.includes(':')) {
        const parsed = parseSnapshotRef(ref);
        if (!('tag' in parsed)) throw new UsageError(USAGE);
        // a single snapshot: a missing one is an error of its own (exit 3), as for pull and rm
        const r = await client.verify(parsed.name, parsed.tag);
        report(outcomeOf(ref, r));
        if (flags.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return r.ok ? AGENT_EXIT.OK : AGENT_EXIT.INTEGRITY;
      }

      const volumes = ref !== undefined ? [checkedVolume(ref, ref)] : volumesOf(client);
      for await (const name of volumes) {
        try {
          for await (const listed of snapshotsOf(client, name)) {
            const outcome = await verifyOne(client, listed);
            if (outcome) report(outcome);
          }
        } catch (err) {
          if (ref !== undefined) throw err; // the volume asked for: its error is the answer
          // with --all, a volume that can not be listed fails, and the others are still checked
          if (isMissing(err)) continue; // deleted since listed
          report({ snapshot: name, ok: false, checked: false, problems: [`its snapshots can not be listed: ${describeError(err)}`] });
        }
      }
      if (ref !== undefined && outcomes.length === 0) {
        process.stderr.write(`volreg verify: ${ref}: no snapshots\n`);
        return AGENT_EXIT.NOT_FOUND;
      }
      const failed = outcomes.filter((o) => o.checked && !o.ok).length;
      const notVerified = outcomes.filter((o) => !o.checked).length;
      if (flags.json) process.stdout.write(`${JSON.stringify({ verified: outcomes.length, failed, notVerified, snapshots: outcomes }, null, 2)}\n`);
      else if (!flags.quiet || failed + notVerified > 0) {
        const ok = outcomes.length - failed - notVerified;
        process.stderr.write(`verified ${outcomes.length} snapshot${outcomes.length === 1 ? '' : 's'}: ${ok} ok, ${failed} failed${notVerified > 0 ? `, ${notVerified} not verified` : ''}\n`);
      }
      // a finding on the bytes outweighs a check that could not be made
      return failed > 0 ? AGENT_EXIT.INTEGRITY : notVerified > 0 ? AGENT_EXIT.FAILURE : AGENT_EXIT.OK;
    }),
  );
}
