/**
 * Every path volreg serves under /v2 and /api/v1, in one table used by the router and the
 * tests alike. Each route declares, per method, the access it needs to the repository named
 * in its `name` group, so access control is one middleware reading `ctx.state.access`.
 *
 * Repository names contain '/', so patterns match the rest of the path greedily and the name
 * is validated against the OCI grammar afterwards (see router.ts). More specific routes come
 * first: the first pattern that matches a path owns it.
 */
export type Action = 'pull' | 'push' | 'delete' | 'catalog';
export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface RouteSpec {
  readonly pattern: RegExp;
  readonly methods: Readonly<Partial<Record<HttpMethod, Action | null>>>;
}

const NAME = '(?<name>[^?#]+?)';

export const ROUTES = {
  v2Base: { pattern: /^\/v2\/?$/, methods: { GET: null, HEAD: null } },
  catalog: { pattern: /^\/v2\/_catalog$/, methods: { GET: 'catalog' } },
  uploadStart: { pattern: new RegExp(`^/v2/${NAME}/blobs/uploads/?$`), methods: { POST: 'push' } },
  upload: {
    pattern: new RegExp(`^/v2/${NAME}/blobs/uploads/(?<uuid>[^/]+)$`),
    methods: { GET: 'push', PATCH: 'push', PUT: 'push', DELETE: 'push' },
  },
  blob: {
    pattern: new RegExp(`^/v2/${NAME}/blobs/(?<digest>[^/]+)$`),
    methods: { GET: 'pull', HEAD: 'pull', DELETE: 'delete' },
  },
  manifest: {
    pattern: new RegExp(`^/v2/${NAME}/manifests/(?<reference>[^/]+)$`),
    methods: { GET: 'pull', HEAD: 'pull', PUT: 'push', DELETE: 'delete' },
  },
  tagsList: { pattern: new RegExp(`^/v2/${NAME}/tags/list$`), methods: { GET: 'pull' } },
  referrers: { pattern: new RegExp(`^/v2/${NAME}/referrers/(?<digest>[^/]+)$`), methods: { GET: 'pull' } },

  volumes: { pattern: /^\/api\/v1\/volumes\/?$/, methods: { GET: 'catalog' } },
  volumeContent: {
    pattern: new RegExp(`^/api/v1/volumes/${NAME}/tags/(?<tag>[^/]+)/content$`),
    methods: { GET: 'pull', HEAD: 'pull' },
  },
  volumeContentSha256: {
    pattern: new RegExp(`^/api/v1/volumes/${NAME}/tags/(?<tag>[^/]+)/content\\.sha256$`),
    methods: { GET: 'pull' },
  },
  volumeVerify: { pattern: new RegExp(`^/api/v1/volumes/${NAME}/tags/(?<tag>[^/]+)/verify$`), methods: { POST: 'pull' } },
  volumeTag: {
    pattern: new RegExp(`^/api/v1/volumes/${NAME}/tags/(?<tag>[^/]+)$`),
    methods: { GET: 'pull', HEAD: 'pull', PUT: 'push', DELETE: 'delete' },
  },
  volumeTags: { pattern: new RegExp(`^/api/v1/volumes/${NAME}/tags/?$`), methods: { GET: 'pull' } },
} as const satisfies Record<string, RouteSpec>;

export type RouteId = keyof typeof ROUTES;

/** Builds a concrete path for a route (used by handlers for Location headers and by tests). */
export const paths = {
  blob: (name: string, digest: string) => `/v2/${name}/blobs/${digest}`,
  uploadStart: (name: string) => `/v2/${name}/blobs/uploads/`,
  upload: (name: string, uuid: string) => `/v2/${name}/blobs/uploads/${uuid}`,
  manifest: (name: string, reference: string) => `/v2/${name}/manifests/${reference}`,
  tagsList: (name: string) => `/v2/${name}/tags/list`,
  referrers: (name: string, digest: string) => `/v2/${name}/referrers/${digest}`,
  catalog: () => '/v2/_catalog',
  volumes: () => '/api/v1/volumes',
  volumeTags: (name: string) => `/api/v1/volumes/${name}/tags`,
  volumeTag: (name: string, tag: string) => `/api/v1/volumes/${name}/tags/${tag}`,
  volumeContent: (name: string, tag: string) => `/api/v1/volumes/${name}/tags/${tag}/content`,
  volumeContentSha256: (name: string, tag: string) => `/api/v1/volumes/${name}/tags/${tag}/content.sha256`,
  volumeVerify: (name: string, tag: string) => `/api/v1/volumes/${name}/tags/${tag}/verify`,
};
