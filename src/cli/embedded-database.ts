import { join } from 'node:path';
import type { Config } from '../config/config.ts';

/**
 * The embedded engine's directory (DATA_DIR/db) when `config` uses the embedded engine and no
 * database is there yet; null otherwise. Opening the engine there would create an empty one:
 * right for `serve` and `migrate up`, wrong for a command that reads or cleans what exists
 * (`gc`, `migrate status`), where it means a mistyped VOLREG_DATA_DIR, a forgotten
 * VOLREG_MONGODB_URL, or a copy of a data directory without its db/.
 */
export async function missingEmbeddedDatabase(config: Config): Promise<string | null> {
  if (config.mongodbUrl) return null;
  const dbPath = join(config.dataDir, 'db');
  const { holdsDatabase } = await import('../mongo-engine/index.ts');
  return holdsDatabase(dbPath) ? null : dbPath;
}
