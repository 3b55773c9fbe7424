import { VolregError } from '../errors.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../json-depth.ts';
import type { DigestAlgorithm } from '../digest.ts';
import {
  contentTypeEssence,
  GENERIC_CONTENT_TYPES,
  isManifestMediaType,
  isSchema1MediaType,
  MANIFEST_MEDIA_TYPES,
  MEDIA_TYPES,
  type ManifestMediaType,
} from '../media-types.ts';
import { dockerManifestListHandler } from './docker-manifest-list.ts';
import { dockerSchema1ManifestHandler, dockerSchema1SignedManifestHandler } from './docker-schema1-manifest.ts';
import { dockerSchema2ManifestHandler } from './docker-schema2-manifest.ts';
import { ociImageIndexHandler } from './oci-image-index.ts';
import { ociImageManifestHandler } from './oci-image-manifest.ts';
import type { ManifestHandler, ParsedManifest } from './parsed-manifest.ts';

/** The one registry of manifest handlers, by media type. Adding a type means adding it here. */
export const MANIFEST_HANDLERS: Readonly<Record<ManifestMediaType, ManifestHandler>> = {
  [MEDIA_TYPES.ociManifest]: ociImageManifestHandler,
  [MEDIA_TYPES.ociIndex]: ociImageIndexHandler,
  [MEDIA_TYPES.dockerManifest]: dockerSchema2ManifestHandler,
  [MEDIA_TYPES.dockerManifestList]: dockerManifestListHandler,
  [MEDIA_TYPES.dockerSchema1]: dockerSchema1ManifestHandler,
  [MEDIA_TYPES.dockerSchema1Signed]: dockerSchema1SignedManifestHandler,
};

export function manifestHandler(mediaType: ManifestMediaType): ManifestHandler {
  return MANIFEST_HANDLERS[mediaType];
}

function parseJsonObject(body: Buffer): Record<string, unknown> {
  if (nestsDeeperThan(body)) throw new VolregError('MANIFEST_INVALID', `manifest nests deeper than ${MAX_JSON_DEPTH} levels`, { maxDepth: MAX_JSON_DEPTH });
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new VolregError('MANIFEST_INVALID', 'manifest is not valid JSON', { reason: (err as Error).message.slice(0, 200) });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new VolregError('MANIFEST_INVALID', 'manifest is not a JSON object');
  }
  return json as Record<string, unknown>;
}

/**
 * Which handler a pushed manifest goes to. The Content-Type header names it; a `mediaType`
 * field in the body must then agree. With a generic or absent Content-Type the `mediaType`
 * field decides, and a body without one is schema 1 only if it says `schemaVersion: 1`. A schema
 * 1 body is the signed kind exactly when it carries `signatures`.
 */
export function resolveMediaType(contentType: string | undefined, json: Record<string, unknown>): ManifestMediaType {
  const declared = contentTypeEssence(contentType);
  const field = json.mediaType;
  let mediaType: ManifestMediaType;
  if (isManifestMediaType(declared)) {
    if (typeof field === 'string' && field !== declared && !(isSchema1MediaType(declared) && isSchema1MediaType(field))) {
      throw new VolregError('MANIFEST_INVALID', 'Content-Type does not match the manifest mediaType', {
        contentType: declared,
        mediaType: field.slice(0, 200),
      });
    }
    mediaType = declared;
  } else if (GENERIC_CONTENT_TYPES.includes(declared)) {
    if (typeof field === 'string') {
      if (!isManifestMediaType(field)) {
        throw new VolregError('MANIFEST_INVALID', 'unsupported manifest media type', { mediaType: field.slice(0, 200), supported: MANIFEST_MEDIA_TYPES });
      }
      mediaType = field;
    } else if (json.schemaVersion === 1) {
      mediaType = MEDIA_TYPES.dockerSchema1;
    } else {
      throw new VolregError('MANIFEST_INVALID', 'manifest media type unknown: send Content-Type or set mediaType', {
        supported: MANIFEST_MEDIA_TYPES,
      });
    }
  } else {
    throw new VolregError('MANIFEST_INVALID', 'unsupported manifest media type', { contentType: declared.slice(0, 200), supported: MANIFEST_MEDIA_TYPES });
  }
  if (isSchema1MediaType(mediaType)) {
    const signed = json.signatures !== undefined;
    if (mediaType === MEDIA_TYPES.dockerSchema1Signed && !signed) {
      throw new VolregError('MANIFEST_INVALID', 'signed schema 1 manifest has no signatures');
    }
    mediaType = signed ? MEDIA_TYPES.dockerSchema1Signed : MEDIA_TYPES.dockerSchema1;
  }
  return mediaType;
}

/**
 * Parses and validates a pushed manifest with the handler of its media type. `alg` is the
 * digest algorithm to name it with (that of the digest in the URL when pushed by digest).
 */
export function parseManifest(body: Buffer, contentType: string | undefined, alg: DigestAlgorithm = 'sha256'): ParsedManifest {
  const json = parseJsonObject(body);
  const parsed = manifestHandler(resolveMediaType(contentType, json)).parse(body, json, alg);
  // the annotations are stored as a document whose field names are their keys, and no field name holds a NUL
  for (const key of Object.keys(parsed.annotations ?? {})) {
    if (key.includes('\u0000')) throw new VolregError('MANIFEST_INVALID', 'an annotation key contains a NUL character', { annotation: JSON.stringify(key).slice(0, 200) });
  }
  return parsed;
}
