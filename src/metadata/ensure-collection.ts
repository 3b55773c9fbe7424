import { isDeepStrictEqual } from 'node:util';
import type { Db } from 'mongodb';
import { mongoJsonSchema } from './schema-validator.ts';

/**
 * Creates a collection with the `$jsonSchema` validator of `schemas/<schemaId>.schema.json`
 * (none: null), or brings an existing one's validator up to it. Idempotent, and safe when
 * several processes run the same migration at once.
 */
export async function ensureCollection(db: Db, name: string, schemaId: string | null): Promise<void> {
  const validator = schemaId ? { $jsonSchema: mongoJsonSchema(schemaId) } : undefined;
  const [existing] = await db.listCollections({ name }).toArray();
  if (!existing) {
    try {
      await db.createCollection(name, validator ? { validator, validationLevel: 'strict', validationAction: 'error' } : {});
      return;
    } catch (err) {
      // NamespaceExists: a racing creator won; fall through to check its validator
      if ((err as { code?: unknown }).code !== 48) throw err;
    }
  }
  if (!validator) return;
  const [current] = await db.listCollections({ name }).toArray();
  const options = (current as { options?: { validator?: unknown } } | undefined)?.options;
  if (!isDeepStrictEqual(options?.validator, validator)) {
    await db.command({ collMod: name, validator, validationLevel: 'strict', validationAction: 'error' });
  }
}
