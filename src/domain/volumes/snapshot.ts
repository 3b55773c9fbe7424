import type { Digest } from '../digest.ts';
import type { RepositoryName, Tag } from '../names.ts';
import type { SnapshotPosition } from './listing-position.ts';
import type { Compression } from './media-types.ts';

/** What volreg knows about one snapshot (one tag of a volume), whatever pushed it. */
export interface SnapshotInfo {
  volume: RepositoryName;
  tag: Tag;
  manifestDigest: Digest;
  configDigest: Digest;
  layer: { digest: Digest; size: number; mediaType: string };
  compression: Compression;
  /** size and digest of the tar inside the compression; null when unknown (pushed through /v2 without a volume config) */
  uncompressed: { digest: Digest; size: number } | null;
  entries: number | null;
  /** entries a careful extractor refuses; null when not inspected by volreg */
  unsafeEntries: number | null;
  host: string | null;
  labels: Record<string, string>;
  /** ISO 8601 UTC */
  created: string;
  lastVerify: VerifyResult | null;
  /** `api` when its manifest was pushed through /api/v1 (its archive inspected on upload; a /v2 copy of it too), `oci` when it only came through /v2 */
  source: 'api' | 'oci';
}

/** A snapshot's index document as a reader read it: what it says, and which write it was (null: one from before revisions). */
export interface IndexedSnapshot {
  info: SnapshotInfo;
  revision: string | null;
}

export interface VerifyResult {
  ok: boolean;
  /** ISO 8601 UTC */
  at: string;
  /** what failed, when not ok */
  problems: string[];
}

export interface VolumeSummary {
  volume: RepositoryName;
  snapshots: number;
  /** sum of the snapshots' layer sizes: what downloading every snapshot would take */
  totalSize: number;
  /**
   * sum of the sizes of its distinct layers: what its snapshots hold in the blob store (a
   * directory pushed unchanged gives the same layer, stored once however many tags name it)
   */
  storedSize: number;
  latest: SnapshotInfo;
}

/** Which of a volume's snapshots a listing wants: filters, and a page by offset or position. */
export interface SnapshotListQuery {
  host?: string;
  since?: Date;
  until?: Date;
  limit: number;
  offset: number;
  /** start after this snapshot instead of skipping `offset` (listing-position.ts) */
  after?: SnapshotPosition;
}
