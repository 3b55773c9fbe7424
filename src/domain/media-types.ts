/**
 * Manifest media types and the parsing of `Content-Type` and `Accept` headers.
 *
 * Accept follows RFC 9110 section 12.5.1: comma-separated media ranges with an optional
 * `q` weight; the most specific range that matches a type decides its weight, and a weight of
 * 0 means "not acceptable". No Accept header at all is remembered as such, because old Docker
 * clients that send none can only read schema 1 (see tag-service.ts).
 */

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export type ManifestMediaType = (typeof MEDIA_TYPES)[keyof typeof MEDIA_TYPES];
export const MANIFEST_MEDIA_TYPES: readonly ManifestMediaType[] = Object.values(MEDIA_TYPES);

export const SCHEMA1_MEDIA_TYPES: readonly ManifestMediaType[] = [MEDIA_TYPES.dockerSchema1, MEDIA_TYPES.dockerSchema1Signed];
export const LIST_MEDIA_TYPES: readonly ManifestMediaType[] = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList];

/** Other media types manifests refer to. */
export const DESCRIPTOR_MEDIA_TYPES = {
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/**
 * Content types that say nothing about which manifest a body is: the manifest's own
 * `mediaType` field (or schemaVersion 1) decides then. distribution treated these the same way.
 */
export const GENERIC_CONTENT_TYPES: readonly string[] = ['', 'application/json', 'application/octet-stream', 'text/plain'];

export function isManifestMediaType(s: string): s is ManifestMediaType {
  return (MANIFEST_MEDIA_TYPES as readonly string[]).includes(s);
}

export function isListMediaType(s: string): boolean {
  return (LIST_MEDIA_TYPES as readonly string[]).includes(s);
}

export function isSchema1MediaType(s: string): boolean {
  return (SCHEMA1_MEDIA_TYPES as readonly string[]).includes(s);
}

// RFC 6838 restricted-name: what a media type may look like (also the OCI descriptor rule).
const TOKEN = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
const MEDIA_TYPE = new RegExp(`^${TOKEN}/${TOKEN}$`);

export function isWellFormedMediaType(s: string): boolean {
  return MEDIA_TYPE.test(s);
}

/**
 * The bare media type of a `Content-Type` value: parameters dropped, lower-cased. An absent or
 * empty header gives ''.
 */
export function contentTypeEssence(header: string | undefined): string {
  if (header === undefined) return '';
  const semi = header.indexOf(';');
  return (semi === -1 ? header : header.slice(0, semi)).trim().toLowerCase();
}

export interface AcceptRange {
  /** `type/subtype`, lower-cased; `*` parts are wildcards */
  type: string;
  subtype: string;
  /** weight between 0 and 1 */
  q: number;
}

const Q_VALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;
const RANGE = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)\/([A-Za-z0-9!#$%&'*+.^_`|~-]+)$/;

/** Splits a header on commas that are not inside a quoted parameter value. */
function splitList(value: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (ch === '"' && value[i - 1] !== '\\') quoted = !quoted;
    if (ch === ',' && !quoted) {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

/**
 * Parses the values of every Accept header of a request into media ranges. Malformed ranges
 * and ranges with a malformed `q` are dropped (a client cannot be assumed to want them).
 */
export function parseAccept(values: readonly string[]): AcceptRange[] {
  const ranges: AcceptRange[] = [];
  for (const value of values) {
    for (const part of splitList(value)) {
      const [rangePart, ...params] = part.split(';');
      const m = RANGE.exec((rangePart ?? '').trim());
      if (!m) continue;
      const type = m[1]!.toLowerCase();
      const subtype = m[2]!.toLowerCase();
      if (type === '*' && subtype !== '*') continue;
      let q = 1;
      let valid = true;
      for (const param of params) {
        const eq = param.indexOf('=');
        if (eq === -1) continue;
        if (param.slice(0, eq).trim().toLowerCase() !== 'q') continue;
        const raw = param.slice(eq + 1).trim();
        if (!Q_VALUE.test(raw)) valid = false;
        else q = Number(raw);
      }
      if (valid) ranges.push({ type, subtype, q });
    }
  }
  return ranges;
}

/** What a client accepts, from its Accept headers. */
export class AcceptSet {
  private constructor(
    /** false when the request had no Accept header (or only empty ones) */
    readonly explicit: boolean,
    readonly ranges: readonly AcceptRange[],
  ) {}

  /** From the raw header values (Node joins repeated headers with ", "; both forms work). */
  static from(values: readonly string[] | string | undefined): AcceptSet {
    const list = values === undefined ? [] : typeof values === 'string' ? [values] : values;
    const present = list.filter((v) => v.trim() !== '');
    return new AcceptSet(present.length > 0, parseAccept(present));
  }

  /**
   * The weight the client gives a media type: that of the most specific matching range
   * (exact, then `type/` wildcard, then the match-all range), 0 when none matches.
   */
  quality(mediaType: string): number {
    const [type, subtype] = mediaType.toLowerCase().split('/') as [string, string | undefined];
    let best = -1;
    let q = 0;
    for (const r of this.ranges) {
      let specificity: number;
      if (r.type === type && r.subtype === subtype) specificity = 2;
      else if (r.type === type && r.subtype === '*') specificity = 1;
      else if (r.type === '*' && r.subtype === '*') specificity = 0;
      else continue;
      // Among equally specific duplicates the client's highest weight wins.
      if (specificity > best || (specificity === best && r.q > q)) {
        best = specificity;
        q = r.q;
      }
    }
    return q;
  }

  accepts(mediaType: string): boolean {
    return this.quality(mediaType) > 0;
  }

  /**
   * Does the client read schema 1? Either schema-1 type, or `application/json`, which Docker
   * clients and distribution used as a schema-1 alias.
   */
  acceptsSchema1(): boolean {
    return this.accepts(MEDIA_TYPES.dockerSchema1Signed) || this.accepts(MEDIA_TYPES.dockerSchema1) || this.accepts('application/json');
  }
}
