import { Argument, type Command } from 'commander';
import type { Db } from 'mongodb';
import { configFromEnv } from '../config-from-env.ts';
import { missingEmbeddedDatabase } from '../embedded-database.ts';
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
  const missing = action === 'status' ? await missingEmbeddedDatabase(config) : null;
  if (missing !== null) {
    process.stderr.write(
      `volreg: migrate status: no database in ${missing} (nothing created there): is VOLREG_DATA_DIR the data directory, ` +
        `and VOLREG_MONGODB_URL set if its metadata is in a MongoDB? A copy of one needs its db/; a new one gets its database from volreg serve or volreg migrate\n`,
    );
    process.exit(EXIT.FAILURE);
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
