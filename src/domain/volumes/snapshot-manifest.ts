import { isDigest, type Digest } from '../digest.ts';
import { nestsDeeperThan } from '../json-depth.ts';
import {
  compressionOfLayerMediaType,
  CREATED_ANNOTATION,
  LAYER_MEDIA_TYPES,
  OCI_MANIFEST_MEDIA_TYPE,
  TITLE_ANNOTATION,
  VOLUME_ARTIFACT_TYPE,
  VOLUME_CONFIG_MEDIA_TYPE,
  type Compression,
} from './media-types.ts';

/** The OCI image manifest of a snapshot: one config blob, one tar layer. */
export interface SnapshotManifestInput {
  config: { digest: Digest; size: number };
  layer: { digest: Digest; size: number; compression: Compression; title: string };
  created: string;
}

export function buildSnapshotManifest(input: SnapshotManifestInput): Buffer {
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST_MEDIA_TYPE,
    artifactType: VOLUME_ARTIFACT_TYPE,
    config: { mediaType: VOLUME_CONFIG_MEDIA_TYPE, digest: input.config.digest, size: input.config.size },
    layers: [
      {
        mediaType: LAYER_MEDIA_TYPES[input.layer.compression],
        digest: input.layer.digest,
        size: input.layer.size,
        annotations: { [TITLE_ANNOTATION]: input.layer.title },
      },
    ],
    annotations: { [CREATED_ANNOTATION]: input.created },
  };
  return Buffer.from(JSON.stringify(manifest), 'utf8');
}

/** What a volume artifact's manifest says, whoever pushed it. */
export interface SnapshotManifestView {
  configDigest: Digest;
  configSize: number;
  configMediaType: string;
  layer: { digest: Digest; size: number; mediaType: string; compression: Compression; title: string | null };
  created: string | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function descriptor(v: unknown): { mediaType: string; digest: Digest; size: number; annotations: Record<string, unknown> } | null {
  if (!isObject(v)) return null;
  const { mediaType, digest, size, annotations } = v;
  if (typeof mediaType !== 'string' || typeof digest !== 'string' || !isDigest(digest)) return null;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return null;
  return { mediaType, digest: digest as Digest, size, annotations: isObject(annotations) ? annotations : {} };
}

/**
 * Recognises a volume snapshot among manifests: an OCI image manifest whose artifact type (or,
 * for manifests without one, config media type) is the volume type, with exactly one tar layer. Anything else is null: it is not a snapshot.
 */
export function readSnapshotManifest(body: Buffer): SnapshotManifestView | null {
  if (nestsDeeperThan(body)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (!isObject(raw) || raw.schemaVersion !== 2) return null;
  if (raw.mediaType !== undefined && raw.mediaType !== OCI_MANIFEST_MEDIA_TYPE) return null;
  const config = descriptor(raw.config);
  if (!config) return null;
  // Without artifactType, OCI 1.1 takes the config's media type as the artifact's type; a
  // volreg config blob says "volume" just as well.
  const isVolume =
    typeof raw.artifactType === 'string'
      ? raw.artifactType === VOLUME_ARTIFACT_TYPE
      : config.mediaType === VOLUME_ARTIFACT_TYPE || config.mediaType === VOLUME_CONFIG_MEDIA_TYPE;
  if (!isVolume) return null;
  if (!Array.isArray(raw.layers) || raw.layers.length !== 1) return null;
  const layer = descriptor(raw.layers[0]);
  if (!layer) return null;
  const compression = compressionOfLayerMediaType(layer.mediaType);
  if (compression === null) return null;
  const title = layer.annotations[TITLE_ANNOTATION];
  const annotations = isObject(raw.annotations) ? raw.annotations : {};
  const created = annotations[CREATED_ANNOTATION];
  return {
    configDigest: config.digest,
    configSize: config.size,
    configMediaType: config.mediaType,
    layer: {
      digest: layer.digest,
      size: layer.size,
      mediaType: layer.mediaType,
      compression,
      title: typeof title === 'string' ? title : null,
    },
    created: typeof created === 'string' && !Number.isNaN(Date.parse(created)) ? new Date(created).toISOString() : null,
  };
}
