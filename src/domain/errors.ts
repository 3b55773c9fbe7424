/**
 * The closed registry of error codes volreg can return. Each code has exactly one HTTP
 * status, so a handler never picks a status of its own: it throws a `VolregError` with a
 * code and the error middleware renders the OCI envelope `{"errors":[{code,message,detail}]}`.
 */
export const ERROR_CODES = {
  // OCI distribution-spec codes
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  // A manifest over the size limit: 413, said with the spec's MANIFEST_INVALID (DESIGN.md
  // section 2), as zot and distribution answer it; a client reads the code, not our name for it.
  MANIFEST_TOO_LARGE: { status: 413, message: 'manifest too large', wire: 'MANIFEST_INVALID' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // codes CNCF distribution adds, kept with its statuses
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UNKNOWN: { status: 500, message: 'unknown error' },
  // volreg's own
  NOT_FOUND: { status: 404, message: 'no such endpoint' },
  BAD_REQUEST: { status: 400, message: 'bad request' },
  TOO_LARGE: { status: 413, message: 'request body too large' },
  URI_TOO_LONG: { status: 414, message: 'request URI too long' },
  REQUEST_TIMEOUT: { status: 408, message: 'request timeout' },
  HEADERS_TOO_LARGE: { status: 431, message: 'request header fields too large' },
  EXPECTATION_FAILED: { status: 417, message: 'the expectation cannot be met' },
  NOT_IMPLEMENTED: { status: 501, message: 'not implemented' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'unsupported media type' },
  CONFLICT: { status: 409, message: 'conflicting request' },
  PRECONDITION_FAILED: { status: 412, message: 'a precondition of the request (If-Match, If-None-Match) does not hold' },
  // as GitLab's registry names it: a delete that would leave an index pointing at nothing
  MANIFEST_REFERENCED: { status: 409, message: 'manifest referenced by a manifest list or image index' },
  ARCHIVE_INVALID: { status: 400, message: 'body is not a complete, well-formed tar archive' },
  SNAPSHOT_UNKNOWN: { status: 404, message: 'volume snapshot unknown to registry' },
  STORAGE_FULL: { status: 507, message: "not enough free space in the registry's storage" },
} as const satisfies Record<string, { status: number; message: string; wire?: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The code a client sees for `code`: its own, or the spec's code it is a case of. */
export function wireCode(code: ErrorCode): ErrorCode {
  const entry = ERROR_CODES[code];
  return 'wire' in entry ? entry.wire : code;
}

/** A failure a client may see. `detail` must never carry internal paths or stack traces. */
export class VolregError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers (e.g. `Range` on a 416 for an upload, `Allow` on a 405). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, message?: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message ?? ERROR_CODES[code].message);
    this.name = 'VolregError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.detail = detail;
    this.headers = headers;
  }
}

export function isVolregError(err: unknown): err is VolregError {
  return err instanceof VolregError;
}

/**
 * `err` with what the caller knows said first (what became of the request's bytes, say) when
 * it is a VolregError of `code`; any other error unchanged.
 */
export function explained(err: unknown, code: ErrorCode, prefix: string, detail: Record<string, unknown> = {}): unknown {
  if (!isVolregError(err) || err.code !== code) return err;
  const base = err.detail !== null && typeof err.detail === 'object' ? (err.detail as Record<string, unknown>) : {};
  const merged = { ...base, ...detail };
  return new VolregError(code, `${prefix}: ${err.message}`, Object.keys(merged).length > 0 ? merged : undefined, { ...err.headers });
}

export interface ErrorBody {
  errors: Array<{ code: ErrorCode; message: string; detail?: unknown }>;
}

/** The one function that shapes the error envelope. */
export function errorBody(err: VolregError): ErrorBody {
  const entry: ErrorBody['errors'][number] = { code: wireCode(err.code), message: err.message };
  if (err.detail !== undefined) entry.detail = err.detail;
  return { errors: [entry] };
}
