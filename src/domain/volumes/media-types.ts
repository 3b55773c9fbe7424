import { createHash } from 'node:crypto';

/**
 * The media types of a volume snapshot (DESIGN.md section 4). A snapshot is an OCI 1.1
 * artifact: an image manifest with this artifact type, one config blob and one tar layer.
 */
export const VOLUME_ARTIFACT_TYPE = 'application/vnd.volreg.volume.v1';
export const VOLUME_CONFIG_MEDIA_TYPE = 'application/vnd.volreg.volume.config.v1+json';
export const OCI_MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const TITLE_ANNOTATION = 'org.opencontainers.image.title';
export const CREATED_ANNOTATION = 'org.opencontainers.image.created';

export const COMPRESSIONS = ['none', 'gzip', 'zstd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export const LAYER_MEDIA_TYPES: Readonly<Record<Compression, string>> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

const FILE_EXTENSIONS: Readonly<Record<Compression, string>> = { none: '.tar', gzip: '.tar.gz', zstd: '.tar.zst' };

export function compressionOfLayerMediaType(mediaType: string): Compression | null {
  for (const c of COMPRESSIONS) if (LAYER_MEDIA_TYPES[c] === mediaType) return c;
  // Docker's own layer type is a gzip tar too; an OCI client may push a volume with it.
  if (mediaType === 'application/vnd.docker.image.rootfs.diff.tar.gzip') return 'gzip';
  return null;
}

/**
 * The longest file name a snapshot gets: 255 bytes is what Linux file systems take for one name
 * (NAME_MAX), and `<file>.sha256` (the checksum file's name) must fit too.
 */
export const MAX_SNAPSHOT_FILE_NAME = 255 - '.sha256'.length;

/**
 * The download file name of a snapshot: `<volume with '/' replaced by '-'>-<tag>.<ext>`.
 * Repository names and tags are already restricted to `[a-zA-Z0-9._/-]`, so the result needs
 * no quoting beyond the double quotes of Content-Disposition. A volume name (up to 255
 * characters) and a tag (up to 128) can make one too long to save, so a long one keeps its
 * start and gets a hash of the whole instead of the rest (two long names stay apart).
 */
export function snapshotFileName(volume: string, tag: string, compression: Compression): string {
  const stem = `${volume.replace(/\//g, '-')}-${tag}`;
  const ext = FILE_EXTENSIONS[compression];
  if (stem.length + ext.length <= MAX_SNAPSHOT_FILE_NAME) return `${stem}${ext}`;
  const hash = createHash('sha256').update(stem).digest('hex').slice(0, 16);
  return `${stem.slice(0, MAX_SNAPSHOT_FILE_NAME - ext.length - hash.length - 1)}-${hash}${ext}`;
}
