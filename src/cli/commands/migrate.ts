import { Argument, type Command } from 'commander';
import type { Db } from 'mongodb';
import { join } from 'node:path';
import { configFromEnv } from '../config-from-env.ts';
import { EXIT } from '../exit-codes.ts';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('apply pending database migrations (up), or list them (status)')
    .addArgument(new Argument('[action]', 'up or status').choices(['up', 'status']).default('up'))
    .action(migrate);
}

async function migrate(action: 'up' | 'status'): Promise<void> {
  const config = configFromEnv();
  const { createCommandLogger, openMetadata } = await import('../../main.ts');
  const { Migrator } = await import('../../metadata/migrator.ts');
  const { loadSchemas } = await import('../../metadata/schema-validator.ts');
  const logger = createCommandLogger(config);
  if (action === 'status' && !config.mongodbUrl) {
    // Opening the embedded engine on a directory without a database creates an empty one: status
    // would then list every migration as pending and succeed, on a mistyped VOLREG_DATA_DIR, a
    // forgotten VOLREG_MONGODB_URL or a backup copy that lacks its db/ (README "Backing up
    // volreg": this is the check of a copy).
    const { holdsDatabase } = await import('../../mongo-engine/index.ts');
    const dbPath = join(config.dataDir, 'db');
    if (!holdsDatabase(dbPath)) {
      process.stderr.write(
        `volreg: migrate status: no database in ${dbPath} (nothing created there): is VOLREG_DATA_DIR the data directory, ` +
          `and VOLREG_MONGODB_URL set if its metadata is in a MongoDB? A copy of one needs its db/; a new one gets its database from volreg serve or volreg migrate\n`,
      );
      process.exit(EXIT.FAILURE);
    }
  }
  let metadata: { db: Db; close(): Promise<void> };
  try {
    loadSchemas();
    metadata = await openMetadata(config, logger);
  } catch (err) {
    process.stderr.write(`volreg: migrate: ${(err as Error).message}\n`);
    process.exit(EXIT.FAILURE);
  }
  let code: number = EXIT.OK;
  try {
    const migrator = new Migrator(metadata.db, { logger });
    if (action === 'up') {
      const applied = await migrator.up();
      process.stdout.write(applied.length === 0 ? 'nothing to apply\n' : applied.map((id) => `applied ${id}\n`).join(''));
    } else {
      const status = await migrator.status();
      for (const m of status) {
        const state = m.appliedAt ? `applied ${m.appliedAt.toISOString()}` : 'pending';
        process.stdout.write(`${m.id}\t${state}\t${m.description}\n`);
      }
      // the same refusal serve and migrate up give, so that a check before starting shows it
      if (status.some((m) => !m.known)) await migrator.requireCurrent();
    }
  } catch (err) {
    process.stderr.write(`volreg: migrate ${action}: ${(err as Error).message}\n`);
    code = EXIT.FAILURE;
  } finally {
    await metadata.close();
  }
  process.exit(code);
}
