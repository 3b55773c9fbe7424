import type { Catalog, StoredRecord } from './collection-store.ts';
import type { LogFn } from './engine-state.ts';
import { pathValues } from './bson-values.ts';

/**
 * Background removal of documents whose TTL index field (a date, or an array holding
 * dates, of which the earliest counts) is older than expireAfterSeconds, like mongod's TTL monitor.
 */
export function sweepExpired(catalog: Catalog, now: number, log: LogFn): number {
  let removed = 0;
  for (const colls of catalog.dbs.values()) {
    for (const coll of colls.values()) {
      for (const ix of coll.indexes.values()) {
        const secs = ix.expireAfterSeconds;
        if (secs === undefined || ix.fields.length !== 1) continue;
        const field = ix.fields[0] as string;
        const cutoff = now - secs * 1000;
        const expired: StoredRecord[] = [];
        for (const rec of coll.records.values()) {
          let earliest = Infinity;
          for (const v of pathValues(rec.view, field)) if (v instanceof Date) earliest = Math.min(earliest, v.getTime());
          if (earliest <= cutoff) expired.push(rec);
        }
        for (const rec of expired) coll.delete(rec);
        if (expired.length > 0) log('ttl removed expired documents', { ns: coll.ns, index: ix.name, count: expired.length });
        removed += expired.length;
      }
    }
  }
  return removed;
}
