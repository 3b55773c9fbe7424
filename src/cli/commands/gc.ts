import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { Db } from 'mongodb';
import type { GcCount, GcReport } from '../../maintenance/gc.ts';
import { configFromEnv } from '../config-from-env.ts';
import { missingEmbeddedDatabase } from '../embedded-database.ts';
import { AGENT_EXIT } from '../client.ts';
import { EXIT } from '../exit-codes.ts';
import { human } from '../byte-size.ts';

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('garbage collection: delete content nothing references, and report blobs manifests use that the store lacks (exit 4); same VOLREG_* configuration as serve')
    .option('--dry-run', 'report what would be deleted, delete nothing')
    .option('--delete-untagged', 'also remove manifests no tag (or kept index) needs, and the blobs only they used (default: VOLREG_GC_DELETE_UNTAGGED)')
    .option('--no-delete-untagged', 'keep untagged manifests even where VOLREG_GC_DELETE_UNTAGGED is set')
    .addOption(new Option('--grace <duration>', 'only content older than this (e.g. 90s, 30m, 1h, 2d; a plain number is seconds; default: VOLREG_GC_GRACE, 1h)').argParser(parseDuration))
    .option('--json', 'print the report as JSON')
    .action(gc);
}

interface GcFlags {
  dryRun?: boolean;
  deleteUntagged?: boolean;
  grace?: number;
  json?: boolean;
}

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90", "90s", "30m", "1h", "2d" -> seconds. */
export function parseDuration(value: string): number {
  const m = /^([0-9]+)([smhd]?)$/.exec(value.trim());
  const n = m ? Number(m[1]) * UNITS[m[2] || 's']! : NaN;
  if (!Number.isSafeInteger(n) || n > 10 * 365 * 86400) throw new InvalidArgumentError('not a duration (e.g. 90s, 30m, 1h, 2d, or seconds)');
  return n;
}

async function gc(flags: GcFlags): Promise<void> {
  const config = configFromEnv();
  const fail = (message: string): never => {
    process.stderr.write(`volreg: gc: ${message}\n`);
    process.exit(EXIT.FAILURE);
  };
  if ((await missingEmbeddedDatabase(config)) !== null) {
    fail(`no volreg database in ${config.dataDir} (VOLREG_DATA_DIR); nothing to collect`);
  }
  const { createCommandLogger, openMetadata } = await import('../../main.ts');
  const { loadSchemas } = await import('../../metadata/schema-validator.ts');
  const { collections } = await import('../../metadata/collections.ts');
  const { FsBlobStore } = await import('../../storage/fs-driver.ts');
  const { collectGarbage } = await import('../../maintenance/gc.ts');
  const { uploadPurger } = await import('../../maintenance/upload-purger.ts');
  const { Migrator } = await import('../../metadata/migrator.ts');
  const { bindBlobStore } = await import('../../metadata/store-binding.ts');
  const logger = createCommandLogger(config);

  let metadata: { db: Db; close(): Promise<void> } | undefined;
  try {
    loadSchemas();
    metadata = await openMetadata(config, logger);
  } catch (err) {
    if ((err as Error).name === 'DbPathLockedError') {
      fail(
        `cannot open the embedded database in ${join(config.dataDir, 'db')}: a running volreg serve holds it. ` +
          'Stop the server first, or let it collect garbage itself (VOLREG_GC_INTERVAL), ' +
          'or run server and gc on a shared MongoDB (VOLREG_MONGODB_URL).',
      );
    }
    fail((err as Error).message);
  }
  try {
    await new Migrator(metadata!.db, { logger }).requireCurrent();
  } catch (err) {
    await metadata!.close();
    fail((err as Error).message);
  }
  const store = await FsBlobStore.open({ root: config.dataDir });
  try {
    // gc deletes the blobs its database does not record: only its own (metadata/store-binding.ts)
    await bindBlobStore(metadata!.db, store, { checkOnly: flags.dryRun === true });
  } catch (err) {
    store.close();
    await metadata!.close();
    fail((err as Error).message);
  }
  let code: number = EXIT.OK;
  try {
    const report = await collectGarbage({
      collections: collections(metadata!.db),
      blobStore: store,
      uploads: uploadPurger(collections(metadata!.db), store),
      logger,
      graceSeconds: flags.grace ?? config.gc.graceSeconds,
      // either flag wins over VOLREG_GC_DELETE_UNTAGGED; with neither, commander leaves it unset
      deleteUntagged: flags.deleteUntagged ?? config.gc.deleteUntagged,
      dryRun: flags.dryRun === true,
    });
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : summary(report));
    if (report.errors > 0) code = EXIT.FAILURE;
    else if (report.missingBlobs.count > 0) code = AGENT_EXIT.INTEGRITY;
  } catch (err) {
    process.stderr.write(`volreg: gc: ${(err as Error).message}\n`);
    code = EXIT.FAILURE;
  } finally {
    store.close();
    await metadata!.close();
  }
  process.exit(code);
}

function summary(r: GcReport): string {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  const line = (label: string, c: GcCount): string => `  ${label.padEnd(34)} ${String(c.count).padStart(7)}  ${human(c.bytes)}\n`;
  return (
    `gc${r.dryRun ? ' (dry run)' : ''}: content older than ${r.cutoff} (grace ${r.graceSeconds} s)${r.deleteUntagged ? ', untagged manifests too' : ''}\n` +
    `  ${verb}:\n` +
    (r.deleteUntagged ? line('untagged manifests (from repos)', r.untaggedManifests) + line('unreferenced blobs (from repos)', r.unreferencedRepoBlobs) : '') +
    line('manifest list units', r.manifestListUnits) +
    line('manifest units', r.manifestUnits) +
    `  ${'push records of gone manifests'.padEnd(34)} ${String(r.pushRecords).padStart(7)}\n` +
    `  ${'notes of refused tag writes'.padEnd(34)} ${String(r.refusedTagWrites).padStart(7)}\n` +
    line('blob units', r.blobUnits) +
    line('blob bytes', r.blobBytes) +
    line('bytes without a blob unit', r.orphanBytes) +
    `  ${'associations to missing units'.padEnd(34)} ${String(r.danglingAssociations).padStart(7)}\n` +
    `  ${r.dryRun ? 'would free' : 'freed'} ${human(r.freedBytes)} in ${r.durationMs} ms` +
    (r.raced > 0 ? `; ${r.raced} kept because a push used them meanwhile` : '') +
    (r.errors > 0 ? `; ${r.errors} errors (see the log)` : '') +
    '\n' +
    (r.restoredBlobs.count > 0
      ? `  ${r.dryRun ? 'would restore' : 'restored'} the records of ${r.restoredBlobs.count} blobs manifests use (${human(r.restoredBlobs.bytes)}), which had none\n`
      : '') +
    missingLines(r.missingBlobs)
  );
}

function missingLines(m: GcReport['missingBlobs']): string {
  if (m.count === 0) return '';
  return (
    `  MISSING: ${m.count} blobs that manifests use are not in the blob store (lost, or set aside as damaged); ` +
    'those manifests do not pull whole until the same content is uploaded again:\n' +
    m.blobs.map((b) => `    ${b.digest}  used in ${b.repositories.join(', ')}\n`).join('') +
    (m.count > m.blobs.length ? `    ... and ${m.count - m.blobs.length} more (see the log)\n` : '')
  );
}
