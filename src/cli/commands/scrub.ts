import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { DamagedBlob, ScrubReport } from '../../maintenance/scrub.ts';
import { AGENT_EXIT } from '../client.ts';
import { configFromEnv } from '../config-from-env.ts';
import { EXIT } from '../exit-codes.ts';
import { human } from '../byte-size.ts';

export function registerScrub(program: Command): void {
  program
    .command('scrub')
    .description('re-hash every blob in the data directory (VOLREG_DATA_DIR) and set aside those damaged at rest; safe beside a running server (exit 4 when any is damaged)')
    .option('--dry-run', 'report damaged blobs, move nothing')
    .option('--json', 'print the report as JSON')
    .action(scrub);
}

interface ScrubFlags {
  dryRun?: boolean;
  json?: boolean;
}

async function scrub(flags: ScrubFlags): Promise<void> {
  const config = configFromEnv();
  if (!existsSync(join(config.dataDir, 'blobs'))) {
    process.stderr.write(`volreg: scrub: no blobs in ${config.dataDir} (VOLREG_DATA_DIR); nothing to scrub\n`);
    process.exit(EXIT.FAILURE);
  }
  const { FsBlobStore } = await import('../../storage/fs-driver.ts');
  const { scrubBlobs } = await import('../../maintenance/scrub.ts');
  const store = await FsBlobStore.open({ root: config.dataDir });
  let code: number = EXIT.OK;
  try {
    const onDamaged = flags.json ? undefined : (d: DamagedBlob): void => void process.stdout.write(damagedLine(d, flags.dryRun === true));
    const report = await scrubBlobs({ store, dryRun: flags.dryRun === true, ...(onDamaged ? { onDamaged } : {}) });
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report));
    if (report.unreadable.length > 0) code = EXIT.FAILURE;
    else if (report.damaged.length > 0) code = AGENT_EXIT.INTEGRITY;
  } catch (err) {
    process.stderr.write(`volreg: scrub: ${(err as Error).message}\n`);
    code = EXIT.FAILURE;
  } finally {
    store.close();
  }
  process.exit(code);
}

function damagedLine(d: DamagedBlob, dryRun: boolean): string {
  const fate = dryRun ? 'left in place (dry run)' : d.setAsideAs ? `moved to ${d.setAsideAs}` : 'stored again meanwhile: the bytes in place now are right';
  return `damaged: ${d.digest} (${human(d.size)}) hashes to ${d.actual}; ${fate}\n`;
}

function summary(r: ScrubReport): string {
  const setAside = r.damaged.filter((d) => d.setAsideAs !== null).length;
  return (
    `scrub${r.dryRun ? ' (dry run)' : ''}: ${r.blobs} blobs, ${human(r.bytes)} read in ${r.durationMs} ms: ` +
    `${r.blobs - r.damaged.length} intact, ${r.damaged.length} damaged` +
    (setAside > 0 ? ` (${setAside} set aside under quarantine/; pushing the same content again stores each again)` : '') +
    (r.vanished > 0 ? `; ${r.vanished} deleted meanwhile` : '') +
    '\n' +
    r.unreadable.map((u) => `unreadable: ${u.digest}: ${u.error}\n`).join('')
  );
}
