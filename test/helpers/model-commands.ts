import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { MT } from './manifest-fixtures.ts';
import { request, type Reply } from './oci-client.ts';
import { ARTIFACT, BLOB_NAMES, BLOBS, MANIFEST_NAMES, MANIFESTS, type BlobName, type ManifestName, type ModelManifest } from './model-content.ts';
import { acceptHeader, byteOrder, expectedForTag, RegistryModel, type AcceptItem } from './model-registry.ts';

/**
 * The fast-check commands of the model-based /v2 test: each sends real requests to a running
 * server and compares every answer with what RegistryModel says the contract requires, then
 * updates the model. A mismatch throws, and fast-check shrinks the sequence to a short one.
 */

export interface ModelState {
  model: RegistryModel;
  /** repository names of this run: a prefix of their own, so runs sharing a server do not meet */
  prefix: string;
  /** how many more `volreg gc` runs this sequence may make (each spawns the CLI) */
  gcBudget: number;
  /** upload sessions opened by OpenSession, in order (null once finished or cancelled) */
  sessions?: Array<{ repo: string; location: string; blob: BlobName; sent: number } | null>;
  /** where each closed session was */
  sessionLocations?: string[];
}

export interface Real {
  url: string;
  /** runs `volreg gc --grace 0 --json [--delete-untagged]` on the server's database and data directory */
  gc?: (deleteUntagged: boolean) => Promise<{ code: number; stdout: string; stderr: string }>;
}

type Cmd = fc.AsyncCommand<ModelState, Real>;

function fail(what: string, r: Reply | undefined, detail: unknown = ''): never {
  const body = r ? r.body.toString('utf8').slice(0, 400) : '';
  throw new Error(`${what}${r ? ` (status ${r.status}: ${body})` : ''} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
}

function expectStatus(what: string, r: Reply, status: number): void {
  if (r.status !== status) fail(`${what}: expected ${status}`, r);
}

function expectError(what: string, r: Reply, status: number, code: string): void {
  expectStatus(what, r, status);
  let parsed: unknown;
  try {
    parsed = r.json();
  } catch {
    fail(`${what}: error body is not JSON`, r);
  }
  const errors = (parsed as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors;
  if (!Array.isArray(errors) || errors.length === 0 || typeof errors[0]!.message !== 'string') fail(`${what}: not an OCI error envelope`, r);
  if (errors[0]!.code !== code) fail(`${what}: expected error ${code}`, r);
}

function header(r: Reply, name: string): string | undefined {
  const v = r.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

function expectHeader(what: string, r: Reply, name: string, value: string): void {
  if (header(r, name) !== value) fail(`${what}: ${name} is ${JSON.stringify(header(r, name))}, expected ${value}`, r);
}

/** A GET or HEAD of a manifest: `expected` exactly as pushed, or 404 MANIFEST_UNKNOWN when null. */
function expectManifestReply(what: string, r: Reply, method: 'GET' | 'HEAD', expected: ModelManifest | null): void {
  if (!expected) {
    if (method === 'HEAD') expectStatus(what, r, 404);
    else expectError(what, r, 404, 'MANIFEST_UNKNOWN');
    return;
  }
  expectStatus(what, r, 200);
  if (header(r, 'docker-content-digest') !== expected.digest) fail(`${what}: expected ${expected.name}`, r, { got: header(r, 'docker-content-digest'), type: header(r, 'content-type') });
  expectHeader(what, r, 'content-type', expected.mediaType);
  expectHeader(what, r, 'content-length', String(expected.size));
  if (method === 'GET' && !r.body.equals(expected.bytes)) fail(`${what}: bytes differ from those pushed`, r);
}

export const REPO_SUFFIXES = ['app', 'app/sub', 'app-b'] as const;
export const TAGS = ['latest', 'v1', 'V1', 'v1.0', '_x', 'a-b'] as const;
const repoOf = (s: ModelState, suffix: string): string => `${s.prefix}/${suffix}`;

// ---- blobs ----------------------------------------------------------------------------------

export type UploadMode = 'post' | 'session' | 'chunked' | 'mount';

class PushBlob implements Cmd {
  constructor(
    readonly repo: string,
    readonly blob: BlobName,
    readonly mode: UploadMode,
    readonly from: string,
    readonly chunks: number,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const from = repoOf(s, this.from);
    const b = BLOBS[this.blob];
    const what = `push blob ${this.blob} to ${repo} (${this.mode})`;
    let done: Reply;
    const open = async (query = ''): Promise<Reply> => request(real.url, `/v2/${repo}/blobs/uploads/${query}`, { method: 'POST' });
    const sessionOf = (r: Reply): string => {
      expectStatus(`${what}: open`, r, 202);
      const loc = header(r, 'location');
      if (!loc) fail(`${what}: no Location`, r);
      return loc;
    };
    const finish = (loc: string, body?: Buffer): Promise<Reply> =>
      request(real.url, `${loc}${loc.includes('?') ? '&' : '?'}digest=${b.digest}`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/octet-stream' },
        ...(body ? { body } : { body: Buffer.alloc(0) }),
      });
    if (this.mode === 'post') {
      done = await request(real.url, `/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: b.bytes });
    } else if (this.mode === 'session') {
      done = await finish(sessionOf(await open()), b.bytes);
    } else if (this.mode === 'chunked') {
      const loc = sessionOf(await open());
      const size = Math.max(1, Math.ceil(b.size / this.chunks));
      let at = 0;
      // all but the last chunk as PATCH; the last one (maybe empty) rides on the PUT
      while (b.size - at > size) {
        const part = b.bytes.subarray(at, at + size);
        const r = await request(real.url, loc, { method: 'PATCH', headers: { 'Content-Range': `${at}-${at + part.length - 1}`, 'Content-Type': 'application/octet-stream' }, body: part });
        expectStatus(`${what}: PATCH ${at}`, r, 202);
        expectHeader(`${what}: PATCH ${at}`, r, 'range', `0-${at + part.length - 1}`);
        at += part.length;
      }
      done = await finish(loc, b.bytes.subarray(at));
    } else {
      const r = await open(`?mount=${b.digest}&from=${from}`);
      if (s.model.repo(from).blobs.has(this.blob)) {
        done = r;
      } else {
        done = await finish(sessionOf(r), b.bytes);
      }
    }
    expectStatus(what, done, 201);
    expectHeader(what, done, 'docker-content-digest', b.digest);
    expectHeader(what, done, 'location', `/v2/${repo}/blobs/${b.digest}`);
    const r = s.model.repo(repo);
    r.blobs.add(this.blob);
    r.exists = true;
  }
  toString = (): string => `PushBlob(${this.repo},${this.blob},${this.mode}${this.mode === 'mount' ? ` from ${this.from}` : ''}${this.mode === 'chunked' ? ` x${this.chunks}` : ''})`;
}

class ReadBlob implements Cmd {
  constructor(
    readonly repo: string,
    readonly blob: BlobName,
    readonly method: 'GET' | 'HEAD',
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const b = BLOBS[this.blob];
    const what = `${this.method} blob ${this.blob} in ${repo}`;
    const r = await request(real.url, `/v2/${repo}/blobs/${b.digest}`, { method: this.method });
    if (!s.model.repo(repo).blobs.has(this.blob)) {
      if (this.method === 'HEAD') expectStatus(what, r, 404);
      else expectError(what, r, 404, 'BLOB_UNKNOWN');
      return;
    }
    expectStatus(what, r, 200);
    expectHeader(what, r, 'docker-content-digest', b.digest);
    expectHeader(what, r, 'content-length', String(b.size));
    if (this.method === 'GET' && !r.body.equals(b.bytes)) fail(`${what}: bytes differ from those pushed`, r);
  }
  toString = (): string => `ReadBlob(${this.repo},${this.blob},${this.method})`;
}

class DeleteBlob implements Cmd {
  constructor(
    readonly repo: string,
    readonly blob: BlobName,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `DELETE blob ${this.blob} in ${repo}`;
    const r = await request(real.url, `/v2/${repo}/blobs/${BLOBS[this.blob].digest}`, { method: 'DELETE' });
    const held = s.model.repo(repo).blobs;
    if (!held.has(this.blob)) return expectError(what, r, 404, 'BLOB_UNKNOWN');
    expectStatus(what, r, 202);
    held.delete(this.blob);
  }
  toString = (): string => `DeleteBlob(${this.repo},${this.blob})`;
}

/** An upload session left open, for the session commands below to carry on. */
class OpenSession implements Cmd {
  constructor(
    readonly repo: string,
    readonly blob: BlobName,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `open a session in ${repo}`;
    const r = await request(real.url, `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expectStatus(what, r, 202);
    expectHeader(what, r, 'range', '0-0');
    const location = header(r, 'location');
    const uuid = header(r, 'docker-upload-uuid');
    if (!location || !uuid || !location.endsWith(`/${uuid}`)) fail(`${what}: Location ${location} and Docker-Upload-UUID ${uuid}`, r);
    (s.sessions ??= []).push({ repo, location, blob: this.blob, sent: 0 });
  }
  toString = (): string => `OpenSession(${this.repo},${this.blob})`;
}

type SessionStep = 'chunk' | 'chunk-wrong-start' | 'status' | 'status-other-repo' | 'finish' | 'finish-wrong-digest' | 'finish-no-digest' | 'cancel';

/** One request on an open session (by its index among those opened): each as README "Blobs and uploads" says. */
class OnSession implements Cmd {
  constructor(
    readonly pick: number,
    readonly step: SessionStep,
    readonly size: number,
  ) {}
  check = (s: Readonly<ModelState>): boolean => (s.sessions ?? []).length > 0;
  async run(s: ModelState, real: Real): Promise<void> {
    const index = this.pick % s.sessions!.length;
    const session = s.sessions![index];
    const what = `${this.step} on session ${index}`;
    if (!session) {
      // finished or cancelled: gone
      const r = await request(real.url, s.sessionLocations![index]!, { method: 'GET' });
      return expectError(`${what} (gone)`, r, 404, 'BLOB_UPLOAD_UNKNOWN');
    }
    const b = BLOBS[session.blob];
    const range = (): string => (session.sent === 0 ? '0-0' : `0-${session.sent - 1}`);
    const part = b.bytes.subarray(session.sent, Math.min(b.size, session.sent + this.size));
    if (this.step === 'chunk' || this.step === 'chunk-wrong-start') {
      if (part.length === 0) return;
      const start = this.step === 'chunk' ? session.sent : session.sent + 1 + (this.size % 3);
      const r = await request(real.url, session.location, { method: 'PATCH', headers: { 'Content-Range': `${start}-${start + part.length - 1}`, 'Content-Type': 'application/octet-stream' }, body: part });
      if (this.step === 'chunk-wrong-start') {
        expectError(what, r, 416, 'RANGE_INVALID');
        return expectHeader(what, r, 'range', range());
      }
      expectStatus(what, r, 202);
      session.sent += part.length;
      return expectHeader(what, r, 'range', range());
    }
    if (this.step === 'status' || this.step === 'status-other-repo') {
      const loc = this.step === 'status' ? session.location : session.location.replace(`/v2/${session.repo}/`, `/v2/${session.repo}-other/`);
      const r = await request(real.url, loc);
      if (this.step === 'status-other-repo') return expectError(what, r, 404, 'BLOB_UPLOAD_UNKNOWN');
      expectStatus(what, r, 204);
      return expectHeader(what, r, 'range', range());
    }
    if (this.step === 'cancel') {
      const r = await request(real.url, session.location, { method: 'DELETE' });
      expectStatus(what, r, 204);
      return this.close(s, index);
    }
    const rest = b.bytes.subarray(session.sent);
    const digest = this.step === 'finish' ? b.digest : this.step === 'finish-wrong-digest' ? BLOBS[session.blob === 'l0' ? 'l1' : 'l0'].digest : null;
    const r = await request(real.url, `${session.location}${digest ? `?digest=${digest}` : ''}`, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: rest });
    if (this.step === 'finish-no-digest') {
      // the session stays for a retry, without the bytes of this request
      return expectError(what, r, 400, 'DIGEST_INVALID');
    }
    if (this.step === 'finish-wrong-digest') {
      expectError(what, r, 400, 'DIGEST_INVALID');
      return this.close(s, index);
    }
    expectStatus(what, r, 201);
    expectHeader(what, r, 'docker-content-digest', b.digest);
    const repo = s.model.repo(session.repo);
    repo.blobs.add(session.blob);
    repo.exists = true;
    this.close(s, index);
  }
  private close(s: ModelState, index: number): void {
    (s.sessionLocations ??= [])[index] = s.sessions![index]!.location;
    s.sessions![index] = null;
  }
  toString = (): string => `OnSession(${this.pick},${this.step},${this.size})`;
}

// ---- manifests -------------------------------------------------------------------------------

/** If-Match / If-None-Match of a request, as entity tags `"<digest>"` (README "Conditional pushes and deletes") */
export interface Conditions {
  ifMatch?: string;
  ifNoneMatch?: string;
}

function conditionHeaders(c: Conditions | null): Record<string, string> {
  return { ...(c?.ifMatch ? { 'If-Match': c.ifMatch } : {}), ...(c?.ifNoneMatch ? { 'If-None-Match': c.ifNoneMatch } : {}) };
}

/** RFC 9110: If-Match compares strongly (a weak tag never matches), If-None-Match weakly. */
function conditionsHold(c: Conditions | null, current: string | undefined): boolean {
  if (!c) return true;
  const opaque = (tag: string): string => tag.replace(/^W\//, '').replace(/^"|"$/g, '');
  if (c.ifMatch !== undefined) {
    if (c.ifMatch === '*' ? current === undefined : c.ifMatch.startsWith('W/') || opaque(c.ifMatch) !== current) return false;
  }
  if (c.ifNoneMatch !== undefined) {
    if (c.ifNoneMatch === '*' ? current !== undefined : opaque(c.ifNoneMatch) === current) return false;
  }
  return true;
}

class PutManifest implements Cmd {
  constructor(
    readonly repo: string,
    readonly manifest: ManifestName,
    readonly tag: string | null,
    readonly sendType: boolean,
    readonly conditions: Conditions | null = null,
    /** ?tag= of a push by digest */
    readonly extraTags: string[] = [],
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const m = MANIFESTS[this.manifest];
    const ref = this.tag ?? m.digest;
    const extra = this.tag === null ? [...new Set(this.extraTags)] : [];
    const query = extra.length > 0 ? `?${extra.map((t) => `tag=${t}`).join('&')}` : '';
    const what = `PUT ${this.manifest} to ${repo}:${ref}${query} ${JSON.stringify(this.conditions)}`;
    const r = await request(real.url, `/v2/${repo}/manifests/${ref}${query}`, {
      method: 'PUT',
      headers: { ...(this.sendType ? { 'Content-Type': m.mediaType } : {}), ...conditionHeaders(this.conditions) },
      body: m.bytes,
    });
    const model = s.model.repo(repo);
    const units = this.tag === null ? undefined : model.tags.get(this.tag);
    const current = this.tag === null ? (model.manifests.has(this.manifest) ? m.digest : undefined) : m.schemaVersion === 1 ? (units?.s1 && MANIFESTS[units.s1].digest) : units?.s2 && MANIFESTS[units.s2].digest;
    if (!conditionsHold(this.conditions, current || undefined)) return expectError(what, r, 412, 'PRECONDITION_FAILED');
    const missing = s.model.missingFor(repo, m);
    if (missing.length > 0) {
      expectError(what, r, 400, 'MANIFEST_BLOB_UNKNOWN');
      const detail = r.json<{ errors: Array<{ detail?: { missing?: string[] } }> }>().errors[0]!.detail;
      if (!isDeepStrictEqual([...(detail?.missing ?? [])].sort(), [...missing].sort())) fail(`${what}: detail.missing`, r, { expected: missing });
      return;
    }
    expectStatus(what, r, 201);
    expectHeader(what, r, 'docker-content-digest', m.digest);
    expectHeader(what, r, 'location', `/v2/${repo}/manifests/${m.digest}`);
    if (m.subject && header(r, 'oci-subject') !== m.subject) fail(`${what}: OCI-Subject`, r);
    if (!m.subject && header(r, 'oci-subject') !== undefined) fail(`${what}: OCI-Subject without a subject`, r);
    if (extra.length > 0 && !isDeepStrictEqual(header(r, 'oci-tag')?.split(/,\s*/).sort(), [...extra].sort())) fail(`${what}: OCI-Tag`, r);
    s.model.pushManifest(repo, m, this.tag ?? undefined);
    for (const t of extra) s.model.pushManifest(repo, m, t);
  }
  toString = (): string =>
    `PutManifest(${this.repo},${this.manifest},${this.tag ?? 'by digest'}${this.sendType ? '' : ',no Content-Type'}${this.conditions ? `,${JSON.stringify(this.conditions)}` : ''}${this.extraTags.length && this.tag === null ? `,?tag=${this.extraTags.join('+')}` : ''})`;
}

class GetByTag implements Cmd {
  constructor(
    readonly repo: string,
    readonly tag: string,
    readonly accept: AcceptItem[] | undefined,
    readonly method: 'GET' | 'HEAD',
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `${this.method} ${repo}:${this.tag} Accept: ${this.accept ? acceptHeader(this.accept) : '(none)'}`;
    const r = await request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: this.method, headers: this.accept ? { Accept: acceptHeader(this.accept) } : {} });
    const expected = expectedForTag(s.model.repo(repo).tags.get(this.tag), this.accept);
    if (!header(r, 'vary')?.toLowerCase().includes('accept')) fail(`${what}: no Vary: Accept`, r);
    expectManifestReply(what, r, this.method, expected);
  }
  toString = (): string => `GetByTag(${this.repo},${this.tag},${this.accept ? JSON.stringify(acceptHeader(this.accept)) : 'no Accept'},${this.method})`;
}

class GetByDigest implements Cmd {
  constructor(
    readonly repo: string,
    readonly manifest: ManifestName,
    readonly accept: AcceptItem[] | undefined,
    readonly method: 'GET' | 'HEAD',
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const m = MANIFESTS[this.manifest];
    const what = `${this.method} ${repo}@${this.manifest}`;
    const r = await request(real.url, `/v2/${repo}/manifests/${m.digest}`, { method: this.method, headers: this.accept ? { Accept: acceptHeader(this.accept) } : {} });
    expectManifestReply(what, r, this.method, s.model.repo(repo).manifests.has(this.manifest) ? m : null);
  }
  toString = (): string => `GetByDigest(${this.repo},${this.manifest},${this.accept ? JSON.stringify(acceptHeader(this.accept)) : 'no Accept'},${this.method})`;
}

class DeleteTag implements Cmd {
  constructor(
    readonly repo: string,
    readonly tag: string,
    readonly conditions: Conditions | null = null,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `DELETE ${repo}:${this.tag} ${JSON.stringify(this.conditions)}`;
    const r = await request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'DELETE', headers: conditionHeaders(this.conditions) });
    const tags = s.model.repo(repo).tags;
    const units = tags.get(this.tag);
    if (!units) return expectError(what, r, 404, 'MANIFEST_UNKNOWN');
    // each unit on its own: the conditions name the manifest a client saw the tag at
    const goes = (['s1', 's2'] as const).filter((k) => units[k] !== undefined && conditionsHold(this.conditions, MANIFESTS[units[k]!].digest));
    if (goes.length === 0) return expectError(what, r, 412, 'PRECONDITION_FAILED');
    expectStatus(what, r, 202);
    for (const k of goes) delete units[k];
    if (!units.s1 && !units.s2) tags.delete(this.tag);
  }
  toString = (): string => `DeleteTag(${this.repo},${this.tag}${this.conditions ? `,${JSON.stringify(this.conditions)}` : ''})`;
}

class DeleteManifest implements Cmd {
  constructor(
    readonly repo: string,
    readonly manifest: ManifestName,
    readonly conditions: Conditions | null = null,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const m = MANIFESTS[this.manifest];
    const what = `DELETE ${repo}@${this.manifest} ${JSON.stringify(this.conditions)}`;
    const r = await request(real.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE', headers: conditionHeaders(this.conditions) });
    if (!s.model.repo(repo).manifests.has(this.manifest)) return expectError(what, r, 404, 'MANIFEST_UNKNOWN');
    if (!conditionsHold(this.conditions, m.digest)) return expectError(what, r, 412, 'PRECONDITION_FAILED');
    if (s.model.listedBy(repo, this.manifest).length > 0) return expectError(what, r, 409, 'MANIFEST_REFERENCED');
    expectStatus(what, r, 202);
    s.model.deleteManifest(repo, this.manifest);
  }
  toString = (): string => `DeleteManifest(${this.repo},${this.manifest}${this.conditions ? `,${JSON.stringify(this.conditions)}` : ''})`;
}

/** What a client pushing an image does: the blobs and entries the repository lacks, then the manifest. */
class PushWhole implements Cmd {
  constructor(
    readonly repo: string,
    readonly manifest: ManifestName,
    readonly tag: string | null,
    readonly mode: UploadMode,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const push = async (name: ManifestName, tag: string | null): Promise<void> => {
      const m = MANIFESTS[name];
      for (const child of m.children) if (!s.model.repo(repo).manifests.has(child)) await push(child, null);
      for (const b of new Set(m.blobs)) if (!s.model.repo(repo).blobs.has(b)) await new PushBlob(this.repo, b, this.mode, REPO_SUFFIXES[0], 2).run(s, real);
      await new PutManifest(this.repo, name, tag, true).run(s, real);
    };
    await push(this.manifest, this.tag);
  }
  toString = (): string => `PushWhole(${this.repo},${this.manifest},${this.tag ?? 'by digest'},${this.mode})`;
}

/**
 * Two pushes of schema 2 manifests to one tag and a delete of that tag, all at once. Any order
 * of the three is right; the tag must end as one order leaves it (its schema 1 unit goes only
 * with the delete), and each request answers as its turn in that order says.
 */
class RaceOnTag implements Cmd {
  constructor(
    readonly repo: string,
    readonly tag: string,
    readonly a: ManifestName,
    readonly b: ManifestName,
  ) {}
  check = (s: Readonly<ModelState>): boolean => {
    const r = s.model.repo(repoOf(s as ModelState, this.repo));
    return [this.a, this.b].every((m) => MANIFESTS[m].schemaVersion === 2 && s.model.missingFor(repoOf(s as ModelState, this.repo), MANIFESTS[m]).length === 0) && r.exists;
  };
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `race on ${repo}:${this.tag} (${this.a}, ${this.b}, delete)`;
    const put = (m: ManifestName): Promise<Reply> => request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'PUT', headers: { 'Content-Type': MANIFESTS[m].mediaType }, body: MANIFESTS[m].bytes });
    const [pa, pb, del] = await Promise.all([put(this.a), put(this.b), request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'DELETE' })]);
    expectStatus(`${what}: PUT ${this.a}`, pa, 201);
    expectStatus(`${what}: PUT ${this.b}`, pb, 201);
    const units = s.model.repo(repo).tags.get(this.tag);
    const before = units ? { ...units } : undefined;
    // the delete found something unless it ran first on a tag that did not exist
    if (del.status === 404 && before) fail(`${what}: DELETE of a tag that existed`, del);
    if (del.status !== 202 && del.status !== 404) fail(`${what}: DELETE`, del);
    const s2 = await request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'HEAD', headers: { Accept: [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ') } });
    const s1 = await request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'HEAD', headers: { Accept: MT.schema1 } });
    const holder = [this.a, this.b].find((m) => MANIFESTS[m].digest === header(s2, 'docker-content-digest'));
    if (s2.status === 200 && !holder) fail(`${what}: the tag holds neither pushed manifest`, s2, { got: header(s2, 'docker-content-digest') });
    for (const m of [this.a, this.b]) s.model.pushManifest(repo, MANIFESTS[m]);
    if (s2.status !== 200) {
      // the delete came last: both units gone
      if (s1.status === 200) fail(`${what}: the delete came last but left the schema 1 unit`, s1);
      if (del.status !== 202) fail(`${what}: the tag is gone but the delete found nothing`, del);
      s.model.repo(repo).tags.delete(this.tag);
      return;
    }
    const kept = s1.status === 200 && before?.s1 !== undefined;
    if (s1.status === 200 && !kept) fail(`${what}: schema 1 unit from nowhere`, s1);
    s.model.repo(repo).tags.set(this.tag, { s2: holder!, ...(kept ? { s1: before!.s1! } : {}) });
  }
  toString = (): string => `RaceOnTag(${this.repo},${this.tag},${this.a},${this.b})`;
}

/**
 * `volreg gc --grace 0` while the server runs (on its shared database): without
 * --delete-untagged nothing a repository holds goes; with it, what no tag, kept index or kept
 * subject/referrer needs goes, then the blobs only those used (README "Garbage collection").
 */
class CollectGarbage implements Cmd {
  constructor(readonly deleteUntagged: boolean) {}
  check = (s: Readonly<ModelState>): boolean => s.gcBudget > 0;
  async run(s: ModelState, real: Real): Promise<void> {
    if (!real.gc) return;
    s.gcBudget--;
    const r = await real.gc(this.deleteUntagged);
    if (r.code !== 0) fail(`volreg gc exited ${r.code}: ${r.stderr.slice(-2000)}`, undefined);
    // idle upload sessions are abandoned past the grace period (here none): each one is gone or intact
    for (const [i, session] of (s.sessions ?? []).entries()) {
      if (!session) continue;
      const status = await request(real.url, session.location);
      if (status.status === 404) {
        (s.sessionLocations ??= [])[i] = session.location;
        s.sessions![i] = null;
      } else {
        expectStatus(`after gc: session ${i}`, status, 204);
        expectHeader(`after gc: session ${i}`, status, 'range', session.sent === 0 ? '0-0' : `0-${session.sent - 1}`);
      }
    }
    if (this.deleteUntagged) {
      // what it may take, it may also keep (grace): the model follows what the server holds
      for (const [repo, garbage] of s.model.untaggedGarbage()) {
        const r = s.model.repo(repo);
        for (const m of garbage.manifests) {
          const head = await request(real.url, `/v2/${repo}/manifests/${MANIFESTS[m].digest}`, { method: 'HEAD' });
          if (head.status === 404) r.manifests.delete(m);
          else expectStatus(`after gc: HEAD ${repo}@${m}`, head, 200);
        }
        for (const b of garbage.blobs) {
          const head = await request(real.url, `/v2/${repo}/blobs/${BLOBS[b].digest}`, { method: 'HEAD' });
          if (head.status === 404) r.blobs.delete(b);
          else expectStatus(`after gc: HEAD ${repo} blob ${b}`, head, 200);
        }
        // a manifest kept keeps the blobs it uses that the repository held
        for (const m of r.manifests) for (const b of MANIFESTS[m].blobs) if (garbage.blobs.includes(b) && !r.blobs.has(b)) fail(`after gc: ${repo} keeps ${m} but lost its blob ${b}`, undefined);
      }
    }
    await new CheckAll().run(s, real);
  }
  toString = (): string => `CollectGarbage(${this.deleteUntagged ? '--delete-untagged' : ''})`;
}

/**
 * A push of a manifest to a tag racing a delete of the same manifest by digest: either order is
 * right, but no tag may be left that does not pull (README "Manifests and tags").
 */
class RaceDeleteByDigest implements Cmd {
  constructor(
    readonly repo: string,
    readonly tag: string,
    readonly manifest: ManifestName,
  ) {}
  check = (s: Readonly<ModelState>): boolean => {
    const repo = repoOf(s as ModelState, this.repo);
    return s.model.missingFor(repo, MANIFESTS[this.manifest]).length === 0 && s.model.listedBy(repo, this.manifest).length === 0;
  };
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const m = MANIFESTS[this.manifest];
    const what = `race: PUT ${this.manifest} to ${repo}:${this.tag} and DELETE it by digest`;
    const heldBefore = s.model.repo(repo).manifests.has(this.manifest);
    const [put, del] = await Promise.all([
      request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes }),
      request(real.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' }),
    ]);
    expectStatus(`${what}: PUT`, put, 201);
    if (del.status === 404 && heldBefore) fail(`${what}: DELETE found nothing though the manifest was held`, del);
    if (del.status !== 202 && del.status !== 404) fail(`${what}: DELETE`, del);
    const held = (await request(real.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'HEAD' })).status === 200;
    if (held) {
      // the delete went first (or found nothing): it took the manifest's other tags, the push holds and tags it again
      if (del.status === 202) s.model.deleteManifest(repo, this.manifest);
      s.model.pushManifest(repo, m, this.tag);
    } else {
      if (del.status !== 202) fail(`${what}: the manifest is gone but the delete found nothing`, del);
      s.model.pushManifest(repo, m, this.tag);
      s.model.deleteManifest(repo, this.manifest);
    }
    // every tag listed still pulls
    for (const tag of s.model.tagNames(repo)) {
      const r = await request(real.url, `/v2/${repo}/manifests/${tag}`, { method: 'HEAD' });
      expectStatus(`${what}: HEAD ${tag} afterwards`, r, 200);
    }
    const listed = await request(real.url, `/v2/${repo}/tags/list`);
    if (!isDeepStrictEqual(listed.json<{ tags: string[] }>().tags, s.model.tagNames(repo))) fail(`${what}: tags afterwards`, listed, { expected: s.model.tagNames(repo) });
  }
  toString = (): string => `RaceDeleteByDigest(${this.repo},${this.tag},${this.manifest})`;
}

/**
 * A push racing a delete of one of the blobs it references: the push is taken before the
 * delete (201, the blob then gone from the repository) or refused after it (400
 * MANIFEST_BLOB_UNKNOWN, nothing of it written).
 */
class RaceBlobDelete implements Cmd {
  constructor(
    readonly repo: string,
    readonly tag: string,
    readonly manifest: ManifestName,
    readonly pick: number,
  ) {}
  check = (s: Readonly<ModelState>): boolean => {
    const repo = repoOf(s as ModelState, this.repo);
    return MANIFESTS[this.manifest].blobs.length > 0 && s.model.missingFor(repo, MANIFESTS[this.manifest]).length === 0;
  };
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const m = MANIFESTS[this.manifest];
    const blob = m.blobs[this.pick % m.blobs.length]!;
    const what = `race: PUT ${this.manifest} to ${repo}:${this.tag} and DELETE its blob ${blob}`;
    const [put, del] = await Promise.all([
      request(real.url, `/v2/${repo}/manifests/${this.tag}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes }),
      request(real.url, `/v2/${repo}/blobs/${BLOBS[blob].digest}`, { method: 'DELETE' }),
    ]);
    expectStatus(`${what}: DELETE`, del, 202);
    s.model.repo(repo).blobs.delete(blob);
    if (put.status === 201) s.model.pushManifest(repo, m, this.tag);
    else expectError(`${what}: PUT`, put, 400, 'MANIFEST_BLOB_UNKNOWN');
    const listed = await request(real.url, `/v2/${repo}/tags/list`);
    if (!isDeepStrictEqual(listed.json<{ tags: string[] }>().tags, s.model.tagNames(repo))) fail(`${what}: tags afterwards`, listed, { expected: s.model.tagNames(repo) });
    await new GetByTag(this.repo, this.tag, undefined, 'HEAD').run(s, real);
    await new GetByDigest(this.repo, this.manifest, undefined, 'HEAD').run(s, real);
  }
  toString = (): string => `RaceBlobDelete(${this.repo},${this.tag},${this.manifest},${this.pick})`;
}

// ---- listings -------------------------------------------------------------------------------

/** Follows `Link` from `first` to the end; every page at most `n` long. */
async function walk(real: Real, first: string, n: number, key: 'tags' | 'repositories', what: string): Promise<string[]> {
  const out: string[] = [];
  let next: string | undefined = first;
  for (let pages = 0; next !== undefined; pages++) {
    if (pages > 200) fail(`${what}: more than 200 pages`, undefined);
    const r = await request(real.url, next);
    expectStatus(what, r, 200);
    const page = (r.json<Record<string, unknown>>()[key] ?? []) as string[];
    if (!Array.isArray(page)) fail(`${what}: ${key} is not an array`, r);
    if (page.length > n) fail(`${what}: a page of ${page.length} for n=${n}`, r);
    out.push(...page);
    const link = header(r, 'link');
    if (link === undefined) break;
    const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
    if (!m) fail(`${what}: malformed Link ${link}`, r);
    if (page.length === 0) fail(`${what}: an empty page with a Link`, r);
    next = m[1];
  }
  return out;
}

class ListTags implements Cmd {
  constructor(
    readonly repo: string,
    readonly n: number | null,
    readonly last: string | null,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const what = `tags/list of ${repo} n=${this.n} last=${this.last}`;
    const query = [...(this.n === null ? [] : [`n=${this.n}`]), ...(this.last === null ? [] : [`last=${this.last}`])].join('&');
    const path = `/v2/${repo}/tags/list${query ? `?${query}` : ''}`;
    const r = s.model.repo(repo);
    if (!r.exists) return expectError(what, await request(real.url, path), 404, 'NAME_UNKNOWN');
    const last = this.last;
    const expected = s.model.tagNames(repo).filter((t) => last === null || byteOrder(t, last) > 0);
    if (this.n === 0) {
      const page = await request(real.url, path);
      expectStatus(what, page, 200);
      if (!isDeepStrictEqual(page.json(), { name: repo, tags: [] })) fail(`${what}: n=0`, page);
      return;
    }
    const got = await walk(real, path, this.n ?? Infinity, 'tags', what);
    if (!isDeepStrictEqual(got, expected)) fail(`${what}: tags`, undefined, { got, expected });
  }
  toString = (): string => `ListTags(${this.repo},n=${this.n},last=${this.last})`;
}

/**
 * _catalog walked from `last=<prefix>`: the run's own repositories come right after it, and
 * runs before it (sorted before: the prefix counts with leading zeros) are not walked again.
 */
class Catalog implements Cmd {
  constructor(readonly n: number | null) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const what = `_catalog n=${this.n}`;
    if (this.n === 0) {
      const page = await request(real.url, `/v2/_catalog?n=0&last=${s.prefix}`);
      expectStatus(what, page, 200);
      if (!isDeepStrictEqual(page.json(), { repositories: [] })) fail(`${what}: n=0`, page);
      return;
    }
    const first = await request(real.url, `/v2/_catalog?n=${this.n ?? 1000}`);
    expectStatus(what, first, 200);
    const firstPage = first.json<{ repositories: string[] }>().repositories;
    if (!isDeepStrictEqual(firstPage, [...firstPage].sort(byteOrder))) fail(`${what}: first page not in byte order`, first);
    const all = await walk(real, `/v2/_catalog?${this.n === null ? '' : `n=${this.n}&`}last=${s.prefix}`, this.n ?? Infinity, 'repositories', what);
    const sorted = [...all].sort(byteOrder);
    if (!isDeepStrictEqual(all, sorted) || new Set(all).size !== all.length) fail(`${what}: not in byte order, each once`, undefined, all);
    const expected = [...s.model.repos].filter(([, r]) => r.exists).map(([name]) => name).sort(byteOrder);
    if (!isDeepStrictEqual(all, expected)) fail(`${what}: repositories`, undefined, { got: all, expected });
  }
  toString = (): string => `Catalog(n=${this.n})`;
}

class Referrers implements Cmd {
  constructor(
    readonly repo: string,
    readonly subject: ManifestName | 'ghost',
    readonly artifactType: string | null,
  ) {}
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    const repo = repoOf(s, this.repo);
    const digest = this.subject === 'ghost' ? MANIFESTS.refGone.subject! : MANIFESTS[this.subject].digest;
    const what = `referrers of ${this.subject} in ${repo} artifactType=${this.artifactType}`;
    const r = await request(real.url, `/v2/${repo}/referrers/${digest}${this.artifactType === null ? '' : `?artifactType=${encodeURIComponent(this.artifactType)}`}`);
    expectStatus(what, r, 200);
    expectHeader(what, r, 'content-type', MT.ociIndex);
    if (this.artifactType !== null) expectHeader(what, r, 'oci-filters-applied', 'artifactType');
    const index = r.json<{ schemaVersion: number; mediaType: string; manifests: Array<{ digest: string; mediaType: string; size: number; artifactType?: string }> }>();
    if (index.schemaVersion !== 2 || index.mediaType !== MT.ociIndex) fail(`${what}: not an index`, r);
    const got = index.manifests.map((d) => ({ digest: d.digest, mediaType: d.mediaType, size: d.size, artifactType: d.artifactType })).sort((a, b) => byteOrder(a.digest, b.digest));
    const expected = s.model
      .referrers(repo, digest, this.artifactType ?? undefined)
      .map((m) => ({ digest: m.digest, mediaType: m.mediaType, size: m.size, artifactType: m.artifactType }))
      .sort((a, b) => byteOrder(a.digest, b.digest));
    if (!isDeepStrictEqual(got, expected)) fail(`${what}: descriptors`, r, { expected });
  }
  toString = (): string => `Referrers(${this.repo},${this.subject},${this.artifactType})`;
}

/** Nothing the model holds has gone: every manifest by digest, every blob, every tag. */
export class CheckAll implements Cmd {
  check = (): boolean => true;
  async run(s: ModelState, real: Real): Promise<void> {
    for (const [repo, r] of s.model.repos) {
      const suffix = repo.slice(s.prefix.length + 1);
      for (const m of r.manifests) await new GetByDigest(suffix, m, undefined, 'GET').run(s, real);
      for (const b of r.blobs) await new ReadBlob(suffix, b, 'HEAD').run(s, real);
      for (const tag of r.tags.keys()) await new GetByTag(suffix, tag, undefined, 'HEAD').run(s, real);
    }
  }
  toString = (): string => 'CheckAll';
}

// ---- generators -----------------------------------------------------------------------------

const repoArb = fc.constantFrom(...REPO_SUFFIXES);
const tagArb = fc.constantFrom(...TAGS);
const ACCEPT_RANGES = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList, MT.schema1, MT.schema1Signed, 'application/json', '*/*'];
const REFUSABLE = new Set<string>([MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList, '*/*']);
export const acceptArb: fc.Arbitrary<AcceptItem[] | undefined> = fc.option(
  fc
    .uniqueArray(fc.constantFrom(...ACCEPT_RANGES), { minLength: 1, maxLength: 5 })
    .chain((ranges) => fc.tuple(...ranges.map((range) => fc.record({ range: fc.constant(range), refused: REFUSABLE.has(range) ? fc.boolean() : fc.constant(false) })))),
  { nil: undefined, freq: 4 },
);
const pageArb = fc.option(fc.integer({ min: 0, max: 7 }), { nil: null, freq: 3 });

const conditionsArb: fc.Arbitrary<Conditions | null> = fc.option(
  fc
    .record(
      {
        ifMatch: fc.oneof(fc.constant('*'), fc.constantFrom(...MANIFEST_NAMES).map((m) => `"${MANIFESTS[m].digest}"`), fc.constantFrom(...MANIFEST_NAMES).map((m) => `W/"${MANIFESTS[m].digest}"`)),
        ifNoneMatch: fc.oneof(fc.constant('*'), fc.constantFrom(...MANIFEST_NAMES).map((m) => `"${MANIFESTS[m].digest}"`), fc.constantFrom(...MANIFEST_NAMES).map((m) => `W/"${MANIFESTS[m].digest}"`)),
      },
      { requiredKeys: [] },
    )
    .filter((c) => c.ifMatch !== undefined || c.ifNoneMatch !== undefined),
  { nil: null, freq: 2 },
);

export function commandArbs(): Array<fc.Arbitrary<Cmd>> {
  const manifestArb = fc.constantFrom(...MANIFEST_NAMES);
  return [
    fc.tuple(repoArb, fc.constantFrom(...BLOB_NAMES), fc.constantFrom<UploadMode>('post', 'session', 'chunked', 'mount'), repoArb, fc.integer({ min: 1, max: 4 })).map((a) => new PushBlob(...a)),
    fc.tuple(repoArb, fc.constantFrom(...BLOB_NAMES), fc.constantFrom<UploadMode>('post', 'mount'), repoArb, fc.constant(1)).map((a) => new PushBlob(...a)),
    fc.tuple(repoArb, fc.constantFrom(...BLOB_NAMES), fc.constantFrom<'GET' | 'HEAD'>('GET', 'HEAD')).map((a) => new ReadBlob(...a)),
    fc.tuple(repoArb, fc.constantFrom(...BLOB_NAMES)).map((a) => new OpenSession(...a)),
    fc
      .tuple(fc.nat(), fc.constantFrom<SessionStep>('chunk', 'chunk', 'chunk', 'chunk-wrong-start', 'status', 'status-other-repo', 'finish', 'finish', 'finish-wrong-digest', 'finish-no-digest', 'cancel'), fc.integer({ min: 1, max: 1500 }))
      .map((a) => new OnSession(...a)),
    fc.tuple(repoArb, fc.constantFrom(...BLOB_NAMES)).map((a) => new DeleteBlob(...a)),
    fc.tuple(repoArb, manifestArb, fc.option(tagArb, { nil: null, freq: 3 }), fc.boolean()).map((a) => new PutManifest(...a)),
    fc.tuple(repoArb, manifestArb, fc.option(tagArb, { nil: null, freq: 3 }), fc.constant(true)).map((a) => new PutManifest(...a)),
    fc.tuple(repoArb, manifestArb, fc.option(tagArb, { nil: null, freq: 5 }), fc.constantFrom<UploadMode>('post', 'session', 'chunked', 'mount')).map((a) => new PushWhole(...a)),
    fc.tuple(repoArb, manifestArb, fc.option(tagArb, { nil: null, freq: 5 }), fc.constantFrom<UploadMode>('post', 'mount')).map((a) => new PushWhole(...a)),
    fc.tuple(repoArb, tagArb, fc.constantFrom<ManifestName>('ociA', 'ociB', 'dockA', 'ociIdx', 'mixedIdx'), fc.constantFrom<ManifestName>('ociB', 'dockB', 'dockList', 'sbomA')).map((a) => new RaceOnTag(...a)),
    fc.tuple(repoArb, tagArb, manifestArb).map((a) => new RaceDeleteByDigest(...a)),
    fc.tuple(repoArb, tagArb, manifestArb, fc.nat()).map((a) => new RaceBlobDelete(...a)),
    fc.tuple(repoArb, tagArb, acceptArb, fc.constantFrom<'GET' | 'HEAD'>('GET', 'HEAD')).map((a) => new GetByTag(...a)),
    fc.tuple(repoArb, manifestArb, acceptArb, fc.constantFrom<'GET' | 'HEAD'>('GET', 'HEAD')).map((a) => new GetByDigest(...a)),
    fc.tuple(repoArb, tagArb, conditionsArb).map((a) => new DeleteTag(...a)),
    fc.tuple(repoArb, manifestArb, conditionsArb).map((a) => new DeleteManifest(...a)),
    fc.tuple(repoArb, manifestArb, fc.option(tagArb, { nil: null, freq: 2 }), fc.constant(true), conditionsArb, fc.array(tagArb, { maxLength: 3 })).map((a) => new PutManifest(...a)),
    fc.tuple(repoArb, pageArb, fc.option(fc.constantFrom(...TAGS, 'A', 'latesT', 'v1.', 'zzz', '_'), { nil: null, freq: 2 })).map((a) => new ListTags(...a)),
    pageArb.map((n) => new Catalog(n)),
    fc
      .tuple(repoArb, fc.constantFrom<ManifestName | 'ghost'>('ociA', 'ociB', 'dockA', 'ghost'), fc.option(fc.constantFrom(ARTIFACT.sbom, ARTIFACT.sig, ARTIFACT.att, MT.ociConfig, MT.dockerConfig), { nil: null }))
      .map((a) => new Referrers(...a)),
    fc.constant(new CheckAll()),
    fc.boolean().map((d) => new CollectGarbage(d)),
  ];
}
