// Replay of the OCI distribution-spec conformance suite (the Ginkgo suite, i.e.
// conformance/{setup.go,01_pull_test.go,02_push_test.go,03_discovery_test.go,04_management_test.go}
// at commit af32c8c, the last revision before "Conformance redesign" a221f94) against a registry.
//
// Usage: node test/e2e/conformance/replay.mjs [--soft] [--url http://127.0.0.1:5000] [--ns myorg/myrepo]
//          [--transcript FILE]
//   default (strict): like Gomega, the first failing Expect inside a spec aborts that spec.
//   --soft: keep going after a failed Expect inside a spec (to see every differing request).
// Writes a full request/response transcript to FILE (default: transcript-<mode>.log in the OS
// temp directory). Exit code 0 when every check passed. Run by test/e2e/oci-conformance.test.ts.
// Node 20, no dependencies.

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';

const args = process.argv.slice(2);
const SOFT = args.includes('--soft');
const argVal = (k, d) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : d; };
const ROOT = argVal('--url', process.env.OCI_ROOT_URL || 'http://127.0.0.1:5000').replace(/\/$/, '');
const NAMESPACE = argVal('--ns', process.env.OCI_NAMESPACE || 'myorg/myrepo');
const CROSSMOUNT_NS = `conformance-${crypto.randomUUID()}`;
const UA = 'distribution-spec-conformance-tests';
const TRANSCRIPT = argVal('--transcript', `${os.tmpdir()}/transcript-${SOFT ? 'soft' : 'strict'}.log`);
fs.writeFileSync(TRANSCRIPT, '');
const log = (s) => fs.appendFileSync(TRANSCRIPT, s + '\n');

// ---------------------------------------------------------------- HTTP (Go net/http + resty + reggie semantics)
const agent = new http.Agent({ keepAlive: true });
let lastExchange = null;

function encodeQuery(params) {
  // Go url.Values.Encode(): keys sorted, QueryEscape
  return Object.keys(params).sort().map((k) =>
    `${encodeURIComponent(k)}=${encodeURIComponent(params[k]).replace(/%20/g, '+')}`).join('&');
}

// reggie client.NewRequest(method, path) + resty SetQueryParam merge (RawQuery + "&" + Encode())
function buildURL(path, query) {
  let url = `${ROOT}/${path.replace(/^\//, '')}`;
  if (query && Object.keys(query).length) {
    const q = encodeQuery(query);
    url += (url.includes('?') ? '&' : '?') + q;
  }
  return url;
}

function rawRequest(method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const h = { 'User-Agent': UA, ...headers };
    // Go ignores a Content-Length set in Header and uses the body length; for POST/PUT/PATCH with
    // no body it sends "Content-Length: 0"; for GET/HEAD/DELETE with no body it sends none.
    for (const k of Object.keys(h)) if (k.toLowerCase() === 'content-length') delete h[k];
    if (body && body.length) h['Content-Length'] = String(body.length);
    else if (['POST', 'PUT', 'PATCH'].includes(method)) h['Content-Length'] = '0';
    const req = http.request({ method, hostname: u.hostname, port: u.port, path: u.pathname + u.search, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks), url }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body && body.length) req.write(body);
    req.end();
  });
}

async function doReq(method, path, { headers = {}, body = null, query = null } = {}) {
  let url = buildURL(path, query);
  let m = method, b = body ? Buffer.from(body) : null;
  let res;
  for (let i = 0; i <= 20; i++) { // resty FlexibleRedirectPolicy(20), Go redirect rules
    res = await rawRequest(m, url, headers, b);
    logExchange(m, url, headers, b, res);
    if (![301, 302, 303, 307, 308].includes(res.status) || !res.headers.location) break;
    url = new URL(res.headers.location, url).toString();
    if ([301, 302, 303].includes(res.status) && !['GET', 'HEAD'].includes(m)) { m = 'GET'; b = null; }
  }
  const r = new Resp(res, method, path, query, headers, body);
  lastExchange = r;
  return r;
}

function logExchange(m, url, headers, b, res) {
  log(`>>> ${m} ${url}`);
  for (const [k, v] of Object.entries(headers)) log(`>>> ${k}: ${v}`);
  if (b && b.length) log(`>>> [body ${b.length} bytes] ${b.length < 300 ? JSON.stringify(b.toString('latin1')) : ''}`);
  log(`<<< ${res.status}`);
  for (let i = 0; i < res.rawHeaders.length; i += 2) log(`<<< ${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
  if (res.body.length) log(`<<< [body ${res.body.length} bytes] ${res.body.length < 2000 ? res.body.toString('utf8') : res.body.toString('utf8', 0, 2000) + '...'}`);
  log('');
}

class Resp {
  constructor(res, method, path, query, reqHeaders, reqBody) {
    Object.assign(this, { res, method, path, query, reqHeaders, reqBodyLen: reqBody ? reqBody.length : 0 });
  }
  get status() { return this.res.status; }
  header(k) { const v = this.res.headers[k.toLowerCase()]; return v === undefined ? '' : Array.isArray(v) ? v[0] : v; }
  get body() { return this.res.body; }
  relLocation() { // reggie GetRelativeLocation: url.Parse(loc); Path (+ "?" + RawQuery)
    const loc = this.header('Location');
    if (!loc) return '';
    try {
      const u = /^[a-z][a-z0-9+.-]*:/i.test(loc) ? new URL(loc) : new URL(loc, 'http://x');
      if (!/^[a-z][a-z0-9+.-]*:/i.test(loc) && !loc.startsWith('/')) return loc.split('#')[0]; // relative w/o slash: Go keeps as-is
      return decodeURIComponent(u.pathname) + (u.search ? u.search : '');
    } catch { return ''; }
  }
  absLocation() { return this.header('Location'); }
  summary() {
    const hdrs = [];
    for (let i = 0; i < this.res.rawHeaders.length; i += 2) {
      const k = this.res.rawHeaders[i];
      if (/^(date|connection|keep-alive|x-request-id)$/i.test(k)) continue;
      hdrs.push(`${k}: ${this.res.rawHeaders[i + 1]}`);
    }
    const sentH = Object.entries(this.reqHeaders).map(([k, v]) => `${k}: ${v}`).join('; ');
    const bodyTxt = this.res.body.length ? this.res.body.toString('utf8').slice(0, 600) : '';
    return `${this.method} ${this.res.url}${sentH ? ` [sent ${sentH}]` : ''}${this.reqBodyLen ? ` [body ${this.reqBodyLen}B]` : ''}\n      -> ${this.res.status} {${hdrs.join(' | ')}}${bodyTxt ? `\n      body: ${bodyTxt}` : ''}`;
  }
}

// ---------------------------------------------------------------- Gomega-like checks
const results = []; // {spec, loc, what, pass, detail}
let currentSpec = '';
let specFailed = false;
class SpecAbort extends Error {}
function expect(cond, loc, what, resp = lastExchange, extra = '') {
  const pass = !!cond;
  results.push({ spec: currentSpec, loc, what, pass, detail: pass ? '' : `${extra ? extra + '\n      ' : ''}${resp ? resp.summary() : ''}` });
  if (!pass) { specFailed = true; if (!SOFT) throw new SpecAbort(`${loc}: ${what}`); }
}
const specs = [];
async function spec(name, fn, { skip = false } = {}) {
  currentSpec = name; specFailed = false;
  if (skip) { specs.push({ name, status: 'skipped' }); return; }
  try { await fn(); }
  catch (e) {
    if (!(e instanceof SpecAbort)) {
      specFailed = true;
      results.push({ spec: name, loc: '(runtime)', what: `exception: ${e.message}`, pass: false, detail: e.stack.split('\n').slice(0, 3).join(' ') });
    }
  }
  specs.push({ name, status: specFailed ? 'FAILED' : 'passed' });
}
const warnings = [];
function warn(loc, msg) { warnings.push(`${loc}: ${msg} (${currentSpec})`); }
const is2xx = (s) => s >= 200 && s < 300;
const parseJSON = (buf) => { try { return [JSON.parse(buf.toString('utf8')), null]; } catch (e) { return [null, e]; } };

// ---------------------------------------------------------------- test data (setup.go init())
const sha256 = (b) => 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');
const goJSON = (o) => Buffer.from(JSON.stringify(o, null, '\t')); // json.MarshalIndent(v, "", "\t")
const b64 = (b) => Buffer.from(b).toString('base64');
const randomString = (n) => { const L = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-'; let s = ''; for (let i = 0; i < n; i++) s += L[crypto.randomInt(L.length)]; return s; };
// descriptor struct (image.go): mediaType, digest, size, [urls], [annotations], [data], [platform], [artifactType], newUnspecifiedField (no omitempty -> null)
function desc({ mediaType, digest, size, annotations, data, artifactType, nuf = null }) {
  const d = { mediaType, digest, size };
  if (annotations) d.annotations = annotations;
  if (data) d.data = b64(data);
  if (artifactType) d.artifactType = artifactType;
  d.newUnspecifiedField = nuf === null ? null : b64(nuf);
  return d;
}
function manifestObj({ mediaType, artifactType, config, layers, subject, annotations }) {
  const m = { schemaVersion: 2 };
  if (mediaType) m.mediaType = mediaType;
  if (artifactType) m.artifactType = artifactType;
  m.config = config; m.layers = layers;
  if (subject) m.subject = subject;
  if (annotations) m.annotations = annotations;
  return m;
}
const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
const MT_CONFIG = 'application/vnd.oci.image.config.v1+json';
const MT_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const MT_EMPTY = 'application/vnd.oci.empty.v1+json';
const numWorkflows = 5; // pull, push, contentDiscovery, contentManagement, numWorkflows(=16) -> loop i<16 in Go; only [0..4] used
const configs = [];
for (let i = 0; i < numWorkflows; i++) {
  const content = goJSON({ author: randomString(16), architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
  configs.push({ content, len: String(content.length), digest: sha256(content) });
}
const layerBase64String = 'H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0' +
  'WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD' +
  'jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA';
const layerBlobData = Buffer.from(layerBase64String, 'base64');
const layerBlobDigest = sha256(layerBlobData);
const layerBlobContentLength = String(layerBlobData.length);
const layers = [desc({ mediaType: MT_LAYER, size: layerBlobData.length, digest: layerBlobDigest })];
const manifests = [];
for (let i = 0; i < numWorkflows; i++) {
  const content = goJSON(manifestObj({ mediaType: MT_MANIFEST,
    config: desc({ mediaType: MT_CONFIG, digest: configs[i].digest, size: configs[i].content.length, data: configs[i].content, nuf: Buffer.from('hello world') }),
    layers }));
  manifests.push({ content, len: String(content.length), digest: sha256(content) });
}
const emptyLayerManifestContent = goJSON(manifestObj({
  config: desc({ mediaType: MT_CONFIG, digest: configs[1].digest, size: configs[1].content.length, data: configs[1].content, nuf: Buffer.from('hello world') }),
  layers: [] }));
const emptyLayerManifestDigest = sha256(emptyLayerManifestContent);
const nonexistentManifest = '.INVALID_MANIFEST_NAME';
const invalidManifestContent = Buffer.from('blablabla');
const testBlobA = crypto.randomBytes(42), testBlobALength = '42', testBlobADigest = sha256(testBlobA);
let testBlobB, testBlobBDigest, testBlobBChunk1, testBlobBChunk1Length, testBlobBChunk2, testBlobBChunk2Length, testBlobBChunk1Range, testBlobBChunk2Range;
function setupChunkedBlob(size) {
  testBlobB = crypto.randomBytes(size); testBlobBDigest = sha256(testBlobB);
  testBlobBChunk1 = testBlobB.subarray(0, Math.floor(size / 2) + 1); testBlobBChunk1Length = String(testBlobBChunk1.length);
  testBlobBChunk1Range = `0-${testBlobBChunk1.length - 1}`;
  testBlobBChunk2 = testBlobB.subarray(Math.floor(size / 2) + 1); testBlobBChunk2Length = String(testBlobBChunk2.length);
  testBlobBChunk2Range = `${testBlobBChunk1.length}-${testBlobB.length - 1}`;
}
setupChunkedBlob(42);
const emptyJSONBlob = Buffer.from('{}');
const emptyJSONDescriptor = { mediaType: MT_EMPTY, digest: sha256(emptyJSONBlob), size: 2 };
const emptyJSONDesc = () => desc(emptyJSONDescriptor);
const testRefBlobA = Buffer.from('NHL Peanut Butter on my NHL bagel'), testRefBlobALength = String(testRefBlobA.length), testRefBlobADigest = sha256(testRefBlobA);
const testRefArtifactTypeA = 'application/vnd.nhl.peanut.butter.bagel';
const testRefBlobB = Buffer.from('NBA Strawberry Jam on my NBA croissant'), testRefBlobBLength = String(testRefBlobB.length), testRefBlobBDigest = sha256(testRefBlobB);
const testRefArtifactTypeB = 'application/vnd.nba.strawberry.jam.croissant';
const testAnnotationKey = 'org.opencontainers.conformance.test';
const testAnnotationValues = {};
const subj = (i) => desc({ mediaType: MT_MANIFEST, size: manifests[i].content.length, digest: manifests[i].digest });
function mk(obj, ann) { const c = goJSON(obj); const d = sha256(c); if (ann) testAnnotationValues[d] = ann; return { content: c, digest: d }; }
const refsAConfig = mk(manifestObj({ mediaType: MT_MANIFEST, config: desc({ mediaType: testRefArtifactTypeA, size: testRefBlobA.length, digest: testRefBlobADigest }), layers: [emptyJSONDesc()], subject: subj(4), annotations: { [testAnnotationKey]: 'test config a' } }), 'test config a');
const refsBConfig = mk(manifestObj({ mediaType: MT_MANIFEST, config: desc({ mediaType: testRefArtifactTypeB, size: testRefBlobB.length, digest: testRefBlobBDigest }), layers: [emptyJSONDesc()], subject: subj(4), annotations: { [testAnnotationKey]: 'test config b' } }), 'test config b');
const refsALayer = mk(manifestObj({ mediaType: MT_MANIFEST, artifactType: testRefArtifactTypeA, config: emptyJSONDesc(), subject: subj(4), layers: [desc({ mediaType: testRefArtifactTypeA, size: testRefBlobA.length, digest: testRefBlobADigest })], annotations: { [testAnnotationKey]: 'test layer a' } }), 'test layer a');
const refsBLayer = mk(manifestObj({ mediaType: MT_MANIFEST, artifactType: testRefArtifactTypeB, config: emptyJSONDesc(), subject: subj(4), layers: [desc({ mediaType: testRefArtifactTypeB, size: testRefBlobB.length, digest: testRefBlobBDigest })], annotations: { [testAnnotationKey]: 'test layer b' } }), 'test layer b');
const refsCLayer = mk(manifestObj({ mediaType: MT_MANIFEST, artifactType: testRefArtifactTypeB, config: emptyJSONDesc(), subject: subj(3), layers: [desc({ mediaType: testRefArtifactTypeB, size: testRefBlobB.length, digest: testRefBlobBDigest })] }));
const testRefArtifactTypeIndex = 'application/vnd.food.stand';
const refsIndex = (() => {
  const o = { schemaVersion: 2, mediaType: MT_INDEX, artifactType: testRefArtifactTypeIndex,
    manifests: [desc({ mediaType: MT_MANIFEST, size: refsAConfig.content.length, digest: refsAConfig.digest }), desc({ mediaType: MT_MANIFEST, size: refsALayer.content.length, digest: refsALayer.digest })],
    subject: subj(4), annotations: { [testAnnotationKey]: 'test index' } };
  return mk(o, 'test index');
})();
const dummyDigest = sha256(Buffer.from('hello world'));
const errorCodes = ['BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'MANIFEST_UNVERIFIED', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'TAG_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED'];
const deleteManifestBeforeBlobs = true;
const runPullSetup = true, runPushSetup = true, runContentDiscoverySetup = true, runContentManagementSetup = true;
const runAutomaticCrossmountTest = false; // OCI_AUTOMATIC_CROSSMOUNT unset (default); exercised separately in EXTRA

const N = NAMESPACE;
const blobPath = (d, ns = N) => `/v2/${ns}/blobs/${d}`;
const manPath = (r, ns = N) => `/v2/${ns}/manifests/${r}`;
const uploadsPath = (ns = N) => `/v2/${ns}/blobs/uploads/`;
const OCT = { 'Content-Type': 'application/octet-stream' };
const getTagList = (resp) => { const [j] = parseJSON(resp.body); return j && Array.isArray(j.tags) ? j.tags : (j && j.tags === null ? [] : []); };

// helper for the common "POST then PUT ?digest=" setup step
async function pushBlobPostPut(content, digest, loc, what) {
  let resp = await doReq('POST', uploadsPath());
  resp = await doReq('PUT', resp.relLocation(), { query: { digest }, headers: { ...OCT, 'Content-Length': String(content.length) }, body: content });
  expect(is2xx(resp.status), loc, `${what}: PUT upload status 2xx`, resp);
  return resp;
}
async function deleteAccept(path, loc, what, accept) {
  const resp = await doReq('DELETE', path);
  expect(accept(resp.status), loc, what, resp);
  return resp;
}
const ok2xxOr = (...codes) => (s) => is2xx(s) || codes.includes(s);

// ================================================================= 01 Pull
async function test01Pull() {
  let tag = '';
  await spec('Pull/Setup/Populate registry with test blob (config[0])', async () => {
    await pushBlobPostPut(configs[0].content, configs[0].digest, '01_pull_test.go:45', 'config[0]');
  });
  await spec('Pull/Setup/Populate registry with test blob (config[1])', async () => {
    await pushBlobPostPut(configs[1].content, configs[1].digest, '01_pull_test.go:63', 'config[1]');
  });
  await spec('Pull/Setup/Populate registry with test layer', async () => {
    await pushBlobPostPut(layerBlobData, layerBlobDigest, '01_pull_test.go:81', 'layer');
  });
  await spec('Pull/Setup/Populate registry with test manifest (tag)', async () => {
    tag = 'tagtest0';
    const r = await doReq('PUT', manPath(tag), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[0].content });
    expect(is2xx(r.status), '01_pull_test.go:96', 'PUT manifest[0] by tag -> 2xx', r);
  });
  await spec('Pull/Setup/Populate registry with test manifest (digest)', async () => {
    const r = await doReq('PUT', manPath(manifests[1].digest), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[1].content });
    expect(is2xx(r.status), '01_pull_test.go:110', 'PUT manifest[1] by digest -> 2xx', r);
  });
  await spec('Pull/Pull blobs/HEAD nonexistent blob -> 404', async () => {
    const r = await doReq('HEAD', blobPath(dummyDigest));
    expect(r.status === 404, '01_pull_test.go:132', 'status 404', r);
  });
  await spec('Pull/Pull blobs/HEAD existing blob -> 200', async () => {
    const r = await doReq('HEAD', blobPath(configs[0].digest));
    expect(r.status === 200, '01_pull_test.go:141', 'status 200', r);
    const h = r.header('Docker-Content-Digest');
    if (h) expect(h === configs[0].digest, '01_pull_test.go:143', 'Docker-Content-Digest == config[0] digest', r);
  });
  await spec('Pull/Pull blobs/GET nonexistent blob -> 404', async () => {
    const r = await doReq('GET', blobPath(dummyDigest));
    expect(r.status === 404, '01_pull_test.go:153', 'status 404', r);
  });
  await spec('Pull/Pull blobs/GET existing blob -> 200', async () => {
    const r = await doReq('GET', blobPath(configs[0].digest));
    expect(r.status === 200, '01_pull_test.go:161', 'status 200', r);
  });
  await spec('Pull/Pull manifests/HEAD nonexistent manifest -> 404', async () => {
    const r = await doReq('HEAD', manPath(nonexistentManifest));
    expect(r.status === 404, '01_pull_test.go:172', 'status 404', r);
  });
  for (const [i, l1, l2] of [[0, 181, 183], [1, 193, 195]]) {
    await spec(`Pull/Pull manifests/HEAD manifest[${i}] (digest) -> 200`, async () => {
      const r = await doReq('HEAD', manPath(manifests[i].digest), { headers: { Accept: MT_MANIFEST } });
      expect(r.status === 200, `01_pull_test.go:${l1}`, 'status 200', r);
      const h = r.header('Docker-Content-Digest');
      if (h) expect(h === manifests[i].digest, `01_pull_test.go:${l2}`, `Docker-Content-Digest == manifest[${i}] digest`, r);
    });
  }
  await spec('Pull/Pull manifests/HEAD manifest (tag) -> 200', async () => {
    expect(tag !== '', '01_pull_test.go:201', 'tag not empty', null);
    const r = await doReq('HEAD', manPath(tag), { headers: { Accept: MT_MANIFEST } });
    expect(r.status === 200, '01_pull_test.go:206', 'status 200', r);
    const h = r.header('Docker-Content-Digest');
    if (h) expect(h === manifests[0].digest, '01_pull_test.go:208', 'Docker-Content-Digest == manifest[0] digest', r);
  });
  await spec('Pull/Pull manifests/GET nonexistent manifest -> 404', async () => {
    const r = await doReq('GET', manPath(nonexistentManifest));
    expect(r.status === 404, '01_pull_test.go:218', 'status 404', r);
  });
  for (const [i, l] of [[0, 227], [1, 236]]) {
    await spec(`Pull/Pull manifests/GET manifest[${i}] (digest) -> 200`, async () => {
      const r = await doReq('GET', manPath(manifests[i].digest), { headers: { Accept: MT_MANIFEST } });
      expect(r.status === 200, `01_pull_test.go:${l}`, 'status 200', r);
    });
  }
  await spec('Pull/Pull manifests/GET manifest (tag) -> 200', async () => {
    expect(tag !== '', '01_pull_test.go:241', 'tag not empty', null);
    const r = await doReq('GET', manPath(tag), { headers: { Accept: MT_MANIFEST } });
    expect(r.status === 200, '01_pull_test.go:246', 'status 200', r);
  });
  await spec('Pull/Error codes/400 response body should contain OCI-conforming JSON message', async () => {
    const r = await doReq('GET', manPath('sha256:totallywrong'), { headers: { 'Content-Type': MT_MANIFEST }, body: invalidManifestContent });
    expect(r.status === 400 || r.status === 404, '01_pull_test.go:259', 'status 400 or 404', r);
    if (r.status === 400) {
      const [j, err] = parseJSON(r.body);
      const errs = j && Array.isArray(j.errors) ? j.errors : null;
      expect(!err && errs && errs.length > 0, '01_pull_test.go:264', 'body parses as {"errors":[...]} (non-empty)', r);
      expect(errs.length > 0, '01_pull_test.go:266', 'errors not empty', r);
      expect(errorCodes.includes(errs[0].code), '01_pull_test.go:267', 'errors[0].code is a spec error code', r);
    }
  });
  // Teardown (deleteManifestBeforeBlobs = true)
  await spec('Pull/Teardown/Delete manifest[0]', async () => {
    await deleteAccept(manPath(manifests[0].digest), '01_pull_test.go:280', 'DELETE manifest[0] -> 2xx or 405', ok2xxOr(405));
  });
  await spec('Pull/Teardown/Delete manifest[1]', async () => {
    await deleteAccept(manPath(manifests[1].digest), '01_pull_test.go:294', 'DELETE manifest[1] -> 2xx or 405', ok2xxOr(405));
  });
  await spec('Pull/Teardown/Delete config[0] blob', async () => {
    await deleteAccept(blobPath(configs[0].digest), '01_pull_test.go:310', 'DELETE config[0] -> 2xx/404/405', ok2xxOr(404, 405));
  });
  await spec('Pull/Teardown/Delete config[1] blob', async () => {
    await deleteAccept(blobPath(configs[1].digest), '01_pull_test.go:325', 'DELETE config[1] -> 2xx/404/405', ok2xxOr(404, 405));
  });
  await spec('Pull/Teardown/Delete layer blob', async () => {
    await deleteAccept(blobPath(layerBlobDigest), '01_pull_test.go:341', 'DELETE layer -> 2xx/404/405', ok2xxOr(404, 405));
  });
}

// ================================================================= 02 Push
let crossmountLastStatus = null;
async function test02Push() {
  let lastResponse = null, prevResponse = null, emptyLayerManifestRef = '';
  await spec('Push/Blob Upload Streamed/PATCH request with blob in body should yield 202', async () => {
    let r = await doReq('POST', uploadsPath());
    expect(r.header('Location') !== '', '02_push_test.go:45', 'POST Location not empty', r);
    r = await doReq('PATCH', r.relLocation(), { headers: OCT, body: testBlobA });
    expect(r.status === 202, '02_push_test.go:52', 'PATCH status 202', r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Streamed/PUT request to session URL with digest should yield 201', async () => {
    expect(lastResponse !== null, '02_push_test.go:58', 'lastResponse not nil', null);
    const r = await doReq('PUT', lastResponse.relLocation(), { query: { digest: testBlobADigest }, headers: { ...OCT, 'Content-Length': testBlobALength } });
    expect(r.status === 201, '02_push_test.go:65', 'status 201', r);
    expect(r.header('Location') !== '', '02_push_test.go:67', 'Location not empty', r);
  });
  await spec('Push/Blob Upload Monolithic/GET nonexistent blob -> 404', async () => {
    const r = await doReq('GET', blobPath(dummyDigest));
    expect(r.status === 404, '02_push_test.go:78', 'status 404', r);
  });
  await spec('Push/Blob Upload Monolithic/POST request with digest and blob should yield a 201 or 202', async () => {
    const r = await doReq('POST', uploadsPath(), { query: { digest: configs[1].digest }, headers: { 'Content-Length': configs[1].len, ...OCT }, body: configs[1].content });
    expect(r.header('Location') !== '', '02_push_test.go:91', 'Location not empty', r);
    expect(r.status === 201 || r.status === 202, '02_push_test.go:92', 'status 201 or 202', r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Monolithic/GET blob from prior request -> 200 or 404 based on response code', async () => {
    expect(lastResponse !== null, '02_push_test.go:101', 'lastResponse not nil', null);
    const r = await doReq('GET', blobPath(configs[1].digest));
    if (lastResponse.status === 202) expect(r.status === 404, '02_push_test.go:106', 'POST was 202 -> GET 404', r);
    else expect(r.status === 200, '02_push_test.go:108', `POST was ${lastResponse.status} -> GET 200`, r);
  });
  await spec('Push/Blob Upload Monolithic/POST request should yield a session ID', async () => {
    const r = await doReq('POST', uploadsPath());
    expect(r.status === 202, '02_push_test.go:117', 'status 202', r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Monolithic/PUT upload of a blob should yield a 201', async () => {
    const r = await doReq('PUT', lastResponse.relLocation(), { query: { digest: configs[1].digest }, headers: { 'Content-Length': configs[1].len, ...OCT }, body: configs[1].content });
    expect(r.header('Location') !== '', '02_push_test.go:131', 'Location not empty', r);
    expect(r.status === 201, '02_push_test.go:132', 'status 201', r);
  });
  await spec('Push/Blob Upload Monolithic/GET existing blob -> 200', async () => {
    const r = await doReq('GET', blobPath(configs[1].digest));
    expect(r.status === 200, '02_push_test.go:140', 'status 200', r);
  });
  await spec('Push/Blob Upload Monolithic/PUT upload of a layer blob should yield a 201', async () => {
    let r = await doReq('POST', uploadsPath());
    r = await doReq('PUT', r.relLocation(), { query: { digest: layerBlobDigest }, headers: { 'Content-Length': layerBlobContentLength, ...OCT }, body: layerBlobData });
    expect(r.header('Location') !== '', '02_push_test.go:156', 'Location not empty', r);
    expect(r.status === 201, '02_push_test.go:157', 'status 201', r);
  });
  await spec('Push/Blob Upload Monolithic/GET existing layer -> 200', async () => {
    const r = await doReq('GET', blobPath(layerBlobDigest));
    expect(r.status === 200, '02_push_test.go:165', 'status 200', r);
  });
  await spec('Push/Blob Upload Chunked/Out-of-order blob upload should return 416', async () => {
    let r = await doReq('POST', uploadsPath(), { headers: { 'Content-Length': '0' } });
    expect(r.header('Location') !== '', '02_push_test.go:177', 'Location not empty', r);
    const minSizeStr = r.header('OCI-Chunk-Min-Length');
    if (minSizeStr) {
      const minSize = Number.parseInt(minSizeStr, 10);
      expect(Number.isInteger(minSize) && /^[+-]?\d+$/.test(minSizeStr), '02_push_test.go:183', 'OCI-Chunk-Min-Length parses as int', r);
      if (minSize > testBlobBChunk1.length) setupChunkedBlob(minSize * 2 - 2);
    }
    r = await doReq('PATCH', r.relLocation(), { headers: { ...OCT, 'Content-Length': testBlobBChunk2Length, 'Content-Range': testBlobBChunk2Range }, body: testBlobBChunk2 });
    expect(r.status === 416, '02_push_test.go:196', 'status 416', r);
  });
  await spec('Push/Blob Upload Chunked/PATCH request with first chunk should return 202', async () => {
    let r = await doReq('POST', uploadsPath(), { headers: { 'Content-Length': '0' } });
    expect(r.header('Location') !== '', '02_push_test.go:206', 'Location not empty', r);
    prevResponse = r;
    r = await doReq('PATCH', r.relLocation(), { headers: { ...OCT, 'Content-Length': testBlobBChunk1Length, 'Content-Range': testBlobBChunk1Range }, body: testBlobBChunk1 });
    expect(r.status === 202, '02_push_test.go:215', 'status 202', r);
    expect(r.header('Range') === testBlobBChunk1Range, '02_push_test.go:216', `Range == "${testBlobBChunk1Range}"`, r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Chunked/Retry previous blob chunk should return 416', async () => {
    const r = await doReq('PATCH', prevResponse.relLocation(), { headers: { ...OCT, 'Content-Length': testBlobBChunk1Length, 'Content-Range': testBlobBChunk1Range }, body: testBlobBChunk1 });
    expect(r.status === 416, '02_push_test.go:229', 'status 416', r);
  });
  await spec('Push/Blob Upload Chunked/Get on stale blob upload should return 204 with a range and location', async () => {
    const r = await doReq('GET', prevResponse.relLocation());
    expect(r.status === 204, '02_push_test.go:237', 'status 204', r);
    expect(r.header('Location') !== '', '02_push_test.go:238', 'Location not empty', r);
    expect(r.header('Range') === testBlobBChunk1Range, '02_push_test.go:239', `Range == "${testBlobBChunk1Range}"`, r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Chunked/PATCH request with second chunk should return 202', async () => {
    const r = await doReq('PATCH', lastResponse.relLocation(), { headers: { 'Content-Length': testBlobBChunk2Length, 'Content-Range': testBlobBChunk2Range, ...OCT }, body: testBlobBChunk2 });
    const location = r.header('Location');
    expect(r.status === 202, '02_push_test.go:253', 'status 202', r);
    expect(r.header('Range') === `0-${testBlobB.length - 1}`, '02_push_test.go:254', `Range == "0-${testBlobB.length - 1}"`, r);
    expect(location !== '', '02_push_test.go:255', 'Location not empty', r);
    lastResponse = r;
  });
  await spec('Push/Blob Upload Chunked/PUT request with digest should return 201', async () => {
    const r = await doReq('PUT', lastResponse.relLocation(), { query: { digest: testBlobBDigest }, headers: { 'Content-Length': '0', ...OCT } });
    expect(r.status === 201, '02_push_test.go:267', 'status 201', r);
    expect(r.header('Location') !== '', '02_push_test.go:269', 'Location not empty', r);
  });
  await spec('Push/Cross-Repository Blob Mount/Cross-mounting of a blob without the from argument should yield session id', async () => {
    const r = await doReq('POST', uploadsPath(CROSSMOUNT_NS), { query: { mount: dummyDigest } });
    expect(r.status === 202, '02_push_test.go:281', 'status 202', r);
    expect(r.absLocation() !== '', '02_push_test.go:282', 'Location not empty', r);
  });
  await spec("Push/Cross-Repository Blob Mount/POST request to mount another repository's blob should return 201 or 202", async () => {
    const r = await doReq('POST', uploadsPath(CROSSMOUNT_NS), { query: { mount: testBlobADigest, from: N } });
    expect(r.status === 201 || r.status === 202, '02_push_test.go:293', 'status 201 or 202', r);
    lastResponse = r; crossmountLastStatus = r.status;
  });
  await spec('Push/Cross-Repository Blob Mount/GET request to test digest within cross-mount namespace should return 200', async () => {
    const want = `/v2/${CROSSMOUNT_NS}/blobs/${testBlobADigest}`;
    expect(lastResponse.relLocation() === want, '02_push_test.go:303', `relative Location == "${want}"`, lastResponse);
    const r = await doReq('GET', lastResponse.relLocation());
    expect(r.status === 200, '02_push_test.go:307', 'status 200', r);
  }, { skip: !(lastResponse && lastResponse.status === 201) });
  await spec('Push/Cross-Repository Blob Mount/Cross-mounting of nonexistent blob should yield session id', async () => {
    expect(lastResponse.relLocation().startsWith(`/v2/${CROSSMOUNT_NS}/blobs/uploads/`), '02_push_test.go:313', 'relative Location has prefix /v2/<crossmount>/blobs/uploads/', lastResponse);
  }, { skip: !(lastResponse && lastResponse.status === 202) });
  // 02_push_test.go:316-340 run only if OCI_AUTOMATIC_CROSSMOUNT is set (skipped by default)
  await spec('Push/Cross-Repository Blob Mount/Cross-mounting without from (automatic content discovery)', async () => {}, { skip: !runAutomaticCrossmountTest });
  await spec('Push/Manifest Upload/GET nonexistent manifest -> 404', async () => {
    const r = await doReq('GET', manPath(nonexistentManifest));
    expect(r.status === 404, '02_push_test.go:350', 'status 404', r);
  });
  await spec('Push/Manifest Upload/PUT should accept a manifest upload', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await doReq('PUT', manPath(`test${i}`), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[1].content });
      expect(r.header('Location') !== '', '02_push_test.go:364', `test${i}: Location not empty`, r);
      expect(r.status === 201, '02_push_test.go:365', `test${i}: status 201`, r);
    }
  });
  await spec('Push/Manifest Upload/Registry should accept a manifest upload with no layers', async () => {
    const r = await doReq('PUT', manPath('emptylayer'), { headers: { 'Content-Type': MT_MANIFEST }, body: emptyLayerManifestContent });
    if (r.status === 201) {
      emptyLayerManifestRef = r.header('Location');
      expect(emptyLayerManifestRef !== '', '02_push_test.go:380', 'Location not empty', r);
      expect(r.status === 201, '02_push_test.go:381', 'status 201', r);
    } else warn('02_push_test.go:383', `an image manifest with no layers was refused (status ${r.status})`);
  });
  await spec('Push/Manifest Upload/GET request to manifest URL (digest) should yield 200', async () => {
    const r = await doReq('GET', manPath(manifests[1].digest), { headers: { Accept: MT_MANIFEST } });
    expect(r.status === 200, '02_push_test.go:393', 'status 200', r);
  });
  await spec('Push/Teardown/Delete manifest created in tests', async () => {
    await deleteAccept(manPath(manifests[1].digest), '02_push_test.go:405', 'DELETE manifest[1] -> 2xx or 405', ok2xxOr(405));
    if (emptyLayerManifestRef) await deleteAccept(manPath(emptyLayerManifestDigest), '02_push_test.go:416', 'DELETE empty-layer manifest -> 2xx or 405', ok2xxOr(405));
  });
  await spec('Push/Teardown/Delete config blob created in tests', async () => {
    await deleteAccept(blobPath(configs[1].digest), '02_push_test.go:433', 'DELETE config[1] -> 2xx/404/405', ok2xxOr(404, 405));
  });
  await spec('Push/Teardown/Delete layer blob created in setup', async () => {
    await deleteAccept(blobPath(layerBlobDigest), '02_push_test.go:449', 'DELETE layer -> 2xx/404/405', ok2xxOr(404, 405));
  });
}

// ================================================================= 03 Content Discovery
async function test03ContentDiscovery() {
  let numTags = 4;
  let tagList = [];
  await spec('Content Discovery/Setup/Populate registry with test blob', async () => {
    await pushBlobPostPut(configs[2].content, configs[2].digest, '03_discovery_test.go:52', 'config[2]');
  });
  await spec('Content Discovery/Setup/Populate registry with test layer', async () => {
    await pushBlobPostPut(layerBlobData, layerBlobDigest, '03_discovery_test.go:70', 'layer');
  });
  await spec('Content Discovery/Setup/Populate registry with test tags', async () => {
    for (let i = 0; i < numTags; i++) {
      for (const t of [`test${i}`, `TEST${i}`]) {
        tagList.push(t);
        const r = await doReq('PUT', manPath(t), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[2].content });
        expect(is2xx(r.status), '03_discovery_test.go:87', `PUT manifest[2] tag ${t} -> 2xx`, r);
      }
    }
    const r = await doReq('GET', `/v2/${N}/tags/list`);
    tagList = getTagList(r);
  });
  await spec('Content Discovery/Setup/References setup', async () => {
    const MH = { 'Content-Type': MT_MANIFEST };
    expect(emptyJSONDescriptor.digest === 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', '03_discovery_test.go:110', 'empty JSON digest constant', null);
    await pushBlobPostPut(emptyJSONBlob, emptyJSONDescriptor.digest, '03_discovery_test.go:121', 'empty JSON blob');
    await pushBlobPostPut(testRefBlobA, testRefBlobADigest, '03_discovery_test.go:136', 'testRefBlobA');
    let r = await doReq('PUT', manPath(refsAConfig.digest), { headers: MH, body: refsAConfig.content });
    expect(is2xx(r.status), '03_discovery_test.go:147', 'PUT refsManifestAConfigArtifact (subject not yet pushed) -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[4].digest, '03_discovery_test.go:150', 'OCI-Subject == manifest[4] digest', r);
    r = await doReq('PUT', manPath(refsALayer.digest), { headers: MH, body: refsALayer.content });
    expect(is2xx(r.status), '03_discovery_test.go:159', 'PUT refsManifestALayerArtifact -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[4].digest, '03_discovery_test.go:162', 'OCI-Subject == manifest[4] digest', r);
    r = await doReq('PUT', manPath(refsIndex.digest), { headers: { 'Content-Type': MT_INDEX }, body: refsIndex.content });
    expect(is2xx(r.status), '03_discovery_test.go:171', 'PUT refsIndexArtifact (index with subject) -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[4].digest, '03_discovery_test.go:174', 'OCI-Subject == manifest[4] digest', r);
    await pushBlobPostPut(configs[4].content, configs[4].digest, '03_discovery_test.go:187', 'config[4]');
    await pushBlobPostPut(layerBlobData, layerBlobDigest, '03_discovery_test.go:202', 'layer');
    r = await doReq('PUT', manPath('tagtest0'), { headers: MH, body: manifests[4].content });
    expect(is2xx(r.status), '03_discovery_test.go:214', 'PUT manifest[4] tag tagtest0 -> 2xx', r);
    await pushBlobPostPut(testRefBlobB, testRefBlobBDigest, '03_discovery_test.go:229', 'testRefBlobB');
    r = await doReq('PUT', manPath(refsBConfig.digest), { headers: MH, body: refsBConfig.content });
    expect(is2xx(r.status), '03_discovery_test.go:240', 'PUT refsManifestBConfigArtifact -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[4].digest, '03_discovery_test.go:243', 'OCI-Subject == manifest[4] digest', r);
    r = await doReq('PUT', manPath(refsBLayer.digest), { headers: MH, body: refsBLayer.content });
    expect(is2xx(r.status), '03_discovery_test.go:252', 'PUT refsManifestBLayerArtifact -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[4].digest, '03_discovery_test.go:255', 'OCI-Subject == manifest[4] digest', r);
    r = await doReq('PUT', manPath(refsCLayer.digest), { headers: MH, body: refsCLayer.content });
    expect(is2xx(r.status), '03_discovery_test.go:264', 'PUT refsManifestCLayerArtifact (subject never pushed) -> 2xx', r);
    expect(r.header('OCI-Subject') === manifests[3].digest, '03_discovery_test.go:267', 'OCI-Subject == manifest[3] digest', r);
  });
  await spec('Content Discovery/listing tags/GET tags list -> 200, sorted', async () => {
    const r = await doReq('GET', `/v2/${N}/tags/list`);
    expect(r.status === 200, '03_discovery_test.go:277', 'status 200', r);
    tagList = getTagList(r); numTags = tagList.length;
    const lex = [...tagList].sort((a, b) => { const x = a.toLowerCase(), y = b.toLowerCase(); return x < y ? -1 : x > y ? 1 : 0; });
    const asc = [...tagList].sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
    const eq = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
    expect(eq(tagList, lex) || eq(tagList, asc), '03_discovery_test.go:288', 'tags in lexical or ASCII order', r, `tags=${JSON.stringify(tagList)}`);
  });
  await spec('Content Discovery/listing tags/GET number of tags limitable by n', async () => {
    const numResults = Math.floor(numTags / 2);
    const r = await doReq('GET', `/v2/${N}/tags/list`, { query: { n: String(numResults) } });
    expect(r.status === 200, '03_discovery_test.go:298', 'status 200', r);
    tagList = getTagList(r);
    expect(tagList.length === numResults, '03_discovery_test.go:300', `len(tags) == ${numResults}`, r);
  });
  await spec('Content Discovery/listing tags/GET start of tag is set by last', async () => {
    const numResults = Math.floor(numTags / 2);
    let r = await doReq('GET', `/v2/${N}/tags/list`, { query: { n: String(numResults) } });
    expect(r.status === 200, '03_discovery_test.go:310', 'status 200', r);
    tagList = getTagList(r);
    if (tagList.length < numResults || numResults < 1) throw new Error(`03_discovery_test.go:312 index out of range: tagList[${numResults - 1}] of ${tagList.length}`);
    const last = tagList[numResults - 1];
    r = await doReq('GET', `/v2/${N}/tags/list`, { query: { n: String(numResults), last } });
    expect(r.status === 200, '03_discovery_test.go:318', 'status 200', r);
    tagList = getTagList(r);
    expect(tagList.length <= numResults, '03_discovery_test.go:320', `len(tags) <= ${numResults}`, r);
    expect(!tagList.includes(last), '03_discovery_test.go:321', `tags do not contain last="${last}"`, r);
  });
  const checkIndex = (r, locs) => {
    expect(r.status === 200, `03_discovery_test.go:${locs[0]}`, 'status 200', r);
    expect(r.header('Content-Type') === MT_INDEX, `03_discovery_test.go:${locs[1]}`, `Content-Type == "${MT_INDEX}"`, r);
    const [j, err] = parseJSON(r.body);
    expect(!err && j && typeof j === 'object', `03_discovery_test.go:${locs[2]}`, 'body unmarshals as index', r);
    return (j && Array.isArray(j.manifests)) ? j.manifests : [];
  };
  const checkAnn = (r, ms, l1, l2) => {
    for (const m of ms) {
      expect(m.annotations && Object.keys(m.annotations).length === 1, `03_discovery_test.go:${l1}`, `manifests[${m.digest}].annotations has exactly 1 entry`, r);
      expect(m.annotations && m.annotations[testAnnotationKey] === testAnnotationValues[m.digest], `03_discovery_test.go:${l2}`, `annotation ${testAnnotationKey} for ${m.digest} == "${testAnnotationValues[m.digest]}"`, r);
    }
  };
  await spec('Content Discovery/listing references/GET referrers for nonexistent digest -> empty 200', async () => {
    const r = await doReq('GET', `/v2/${N}/referrers/${dummyDigest}`);
    const ms = checkIndex(r, [332, 333, 337]);
    expect(ms.length === 0, '03_discovery_test.go:338', 'len(manifests) == 0', r);
  });
  await spec('Content Discovery/listing references/GET referrers for manifest[4] -> 200 with 5', async () => {
    const r = await doReq('GET', `/v2/${N}/referrers/${manifests[4].digest}`);
    const ms = checkIndex(r, [347, 348, 352]);
    expect(ms.length === 5, '03_discovery_test.go:353', 'len(manifests) == 5', r);
    expect(ms[0]?.digest !== ms[1]?.digest, '03_discovery_test.go:354', 'manifests[0].digest != manifests[1].digest', r);
    checkAnn(r, ms, 356, 357);
  });
  await spec('Content Discovery/listing references/GET referrers with artifactType filter -> 200', async () => {
    const r = await doReq('GET', `/v2/${N}/referrers/${manifests[4].digest}`, { query: { artifactType: testRefArtifactTypeA } });
    const ms = checkIndex(r, [368, 369, 373]);
    if (r.header('OCI-Filters-Applied') !== '') {
      expect(ms.length === 2, '03_discovery_test.go:377', 'len(manifests) == 2', r);
      expect(r.header('OCI-Filters-Applied') === 'artifactType', '03_discovery_test.go:378', 'OCI-Filters-Applied == "artifactType"', r);
      checkAnn(r, ms, 380, 381);
    } else {
      expect(ms.length === 5, '03_discovery_test.go:384', 'len(manifests) == 5 (no filter applied)', r);
      checkAnn(r, ms, 386, 387);
      warn('03_discovery_test.go:389', 'the registry did not apply the artifactType filter (no OCI-Filters-Applied)');
    }
  });
  await spec('Content Discovery/listing references/GET referrers for missing manifest[3] -> 200 with 1', async () => {
    const r = await doReq('GET', `/v2/${N}/referrers/${manifests[3].digest}`);
    const ms = checkIndex(r, [399, 400, 404]);
    expect(ms.length === 1, '03_discovery_test.go:405', 'len(manifests) == 1', r);
    expect(ms[0]?.digest === refsCLayer.digest, '03_discovery_test.go:406', 'manifests[0].digest == refsManifestCLayerArtifact', r);
  });
  await spec('Content Discovery/Teardown/Delete created manifest & associated tags', async () => {
    for (const ref of [refsIndex.digest, manifests[2].digest, manifests[4].digest, refsAConfig.digest, refsALayer.digest, refsBConfig.digest, refsBLayer.digest, refsCLayer.digest]) {
      await deleteAccept(manPath(ref), '03_discovery_test.go:429', `DELETE manifest ${ref} -> 2xx/404/405`, ok2xxOr(404, 405));
    }
  });
  await spec('Content Discovery/Teardown/Delete config blob', async () => {
    await deleteAccept(blobPath(configs[2].digest), '03_discovery_test.go:447', 'DELETE config[2] -> 2xx/404/405', ok2xxOr(404, 405));
  });
  await spec('Content Discovery/Teardown/Delete layer blob', async () => {
    await deleteAccept(blobPath(layerBlobDigest), '03_discovery_test.go:463', 'DELETE layer -> 2xx/404/405', ok2xxOr(404, 405));
  });
  await spec('Content Discovery/Teardown/References teardown', async () => {
    const a = ok2xxOr(404, 405);
    for (const ref of [refsIndex.digest, refsAConfig.digest, refsALayer.digest, manifests[4].digest, refsBConfig.digest, refsBLayer.digest]) {
      await deleteAccept(manPath(ref), '03_discovery_test.go:510', `DELETE manifest ${ref} -> 2xx/404/405`, a);
    }
    for (const d of [configs[4].digest, testRefBlobADigest, testRefBlobBDigest, emptyJSONDescriptor.digest]) {
      await deleteAccept(blobPath(d), '03_discovery_test.go:510', `DELETE blob ${d} -> 2xx/404/405`, a);
    }
  });
}

// ================================================================= 04 Content Management
async function test04ContentManagement() {
  const defaultTagName = 'tagtest0';
  let tagToDelete = '', numTags = 0, blobDeleteAllowed = true;
  await spec('Content Management/Setup/Populate registry with test config blob', async () => {
    let r = await doReq('POST', uploadsPath());
    r = await doReq('PUT', r.relLocation(), { query: { digest: configs[3].digest }, headers: { 'Content-Length': configs[3].len, ...OCT }, body: configs[3].content });
    expect(is2xx(r.status), '04_management_test.go:48', 'PUT config[3] -> 2xx', r);
  });
  await spec('Content Management/Setup/Populate registry with test layer', async () => {
    await pushBlobPostPut(layerBlobData, layerBlobDigest, '04_management_test.go:66', 'layer');
  });
  await spec('Content Management/Setup/Populate registry with test tag', async () => {
    tagToDelete = defaultTagName;
    const r = await doReq('PUT', manPath(tagToDelete), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[3].content });
    expect(is2xx(r.status), '04_management_test.go:81', 'PUT manifest[3] tag tagtest0 -> 2xx', r);
  });
  await spec('Content Management/Setup/Check how many tags there are before anything gets deleted', async () => {
    const r = await doReq('GET', `/v2/${N}/tags/list`);
    expect(r.status === 200, '04_management_test.go:92', 'status 200', r);
    const [j, err] = parseJSON(r.body);
    expect(!err, '04_management_test.go:96', 'body is JSON', r);
    numTags = j && Array.isArray(j.tags) ? j.tags.length : 0;
  });
  await spec('Content Management/Manifest delete/DELETE manifest tag -> 202 (or 400/405)', async () => {
    const r = await doReq('DELETE', manPath(tagToDelete));
    expect([400, 202, 405].includes(r.status), '04_management_test.go:108', 'status 400, 202 or 405', r);
    if (r.status === 400) {
      const [j, err] = parseJSON(r.body);
      const errs = j && Array.isArray(j.errors) ? j.errors : null;
      expect(!err && errs && errs.length, '04_management_test.go:114', 'errors parse', r);
      expect(errs.length > 0, '04_management_test.go:115', 'errors not empty', r);
      expect(errs[0].code === 'UNSUPPORTED', '04_management_test.go:116', 'errors[0].code == UNSUPPORTED', r);
    }
  });
  await spec('Content Management/Manifest delete/DELETE manifest (digest) -> 202 unless already deleted', async () => {
    const r = await doReq('DELETE', manPath(manifests[3].digest));
    expect(r.status === 202 || r.status === 404, '04_management_test.go:126', 'status 202 or 404', r);
  });
  await spec('Content Management/Manifest delete/GET deleted manifest -> 404 (or 200)', async () => {
    const r = await doReq('GET', manPath(manifests[3].digest));
    expect(r.status === 404 || r.status === 200, '04_management_test.go:137', 'status 404 or 200', r);
  });
  await spec('Content Management/Manifest delete/GET tags list should reflect manifest deletion', async () => {
    const r = await doReq('GET', `/v2/${N}/tags/list`);
    expect(r.status === 404 || r.status === 200, '04_management_test.go:148', 'status 404 or 200', r);
    const expectTags = numTags - 1;
    if (r.status === 200) {
      const [j, err] = parseJSON(r.body);
      expect(!err, '04_management_test.go:157', 'body is JSON', r);
      const n = j && Array.isArray(j.tags) ? j.tags.length : 0;
      expect(n === expectTags, '04_management_test.go:158', `len(tags) == ${expectTags} (numTags before - 1)`, r);
    }
    if (r.status === 404) expect(expectTags === 0, '04_management_test.go:161', 'expectTags == 0 when 404', r);
  });
  await spec('Content Management/Blob delete/DELETE blob -> 202', async () => {
    let r = await doReq('DELETE', blobPath(configs[3].digest));
    expect([202, 404, 405].includes(r.status), '04_management_test.go:174', 'config[3]: status 202, 404 or 405', r);
    r = await doReq('DELETE', blobPath(layerBlobDigest));
    expect([202, 404, 405].includes(r.status), '04_management_test.go:184', 'layer: status 202, 404 or 405', r);
    if (r.status === 405) blobDeleteAllowed = false;
  });
  await spec('Content Management/Blob delete/GET deleted blob -> 404', async () => {
    const r = await doReq('GET', blobPath(configs[3].digest));
    expect(r.status === 404, '04_management_test.go:201', 'status 404', r);
  }, { skip: !blobDeleteAllowed });
}

// ================================================================= EXTRA checks (not asserted by the Ginkgo suite)
async function extras() {
  const ns = `${N}-extra-${crypto.randomBytes(3).toString('hex')}`;
  const pushBlob = async (content) => {
    let r = await doReq('POST', uploadsPath(ns));
    r = await doReq('PUT', r.relLocation(), { query: { digest: sha256(content) }, headers: { ...OCT }, body: content });
    return r;
  };
  await spec('EXTRA/setup', async () => {
    for (const b of [configs[0].content, layerBlobData]) expect((await pushBlob(b)).status === 201, 'extra', 'blob push 201');
    for (const t of ['a', 'b', 'c', 'd', 'e']) {
      const r = await doReq('PUT', manPath(t, ns), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[0].content });
      expect(r.status === 201, 'extra', `PUT tag ${t} 201`, r);
    }
  });
  await spec('EXTRA/tags list n=2: Link header (spec.md:588-591) if present must be rel="next" and followable', async () => {
    const r = await doReq('GET', `/v2/${ns}/tags/list`, { query: { n: '2' } });
    const tags = getTagList(r);
    expect(r.status === 200 && tags.length === 2, 'spec.md:588', 'n=2 returns exactly 2 (or fewer only with a Link header)', r);
    const link = r.header('Link');
    if (!link) { warn('spec.md:590', 'no Link header on a truncated tag list (MAY)'); return; }
    const m = /^<([^>]+)>;\s*rel="?next"?$/.exec(link.trim());
    expect(!!m, 'spec.md:591', 'Link is RFC5988 <url>; rel="next"', r, `Link: ${link}`);
    const r2 = await doReq('GET', m[1].startsWith('/') ? m[1] : new URL(m[1]).pathname + new URL(m[1]).search);
    const t2 = getTagList(r2);
    expect(r2.status === 200 && t2.length >= 1 && !t2.includes(tags[1]) && t2[0] === 'c', 'spec.md:591', 'following Link returns the next page (c,...)', r2);
  });
  await spec('EXTRA/tags list n=0: empty list, no Link (spec.md:592)', async () => {
    const r = await doReq('GET', `/v2/${ns}/tags/list`, { query: { n: '0' } });
    expect(r.status === 200 && getTagList(r).length === 0 && !r.header('Link'), 'spec.md:592', 'n=0 -> 200, empty list, no Link', r);
  });
  await spec('EXTRA/tags list last=b (HEAD run.go:1605-1621): every tag after last present, none <= last', async () => {
    const r = await doReq('GET', `/v2/${ns}/tags/list`, { query: { last: 'b' } });
    const t = getTagList(r);
    const all = getTagList(await doReq('GET', `/v2/${ns}/tags/list`)).slice().sort();
    const want = all.filter((x) => x > 'b');
    expect(r.status === 200 && JSON.stringify(t) === JSON.stringify(want), 'run.go:1605', `last=b -> ${JSON.stringify(want)}`, r);
  });
  await spec('EXTRA/manifest PUT referencing missing blobs (spec.md:222-223): accept (2xx) or 400 MANIFEST_BLOB_UNKNOWN', async () => {
    const missingCfg = Buffer.from('{"never":"pushed"}');
    const c = goJSON(manifestObj({ mediaType: MT_MANIFEST, config: desc({ mediaType: MT_CONFIG, digest: sha256(missingCfg), size: missingCfg.length }), layers }));
    const r = await doReq('PUT', manPath('missingblobs', ns), { headers: { 'Content-Type': MT_MANIFEST }, body: c });
    if (is2xx(r.status)) { warn('spec.md:222', `manifest referencing a missing config blob accepted with ${r.status}`); return; }
    const [j] = parseJSON(r.body);
    expect(r.status === 400 && j?.errors?.some((e) => e.code === 'MANIFEST_BLOB_UNKNOWN'), 'spec.md:223', 'rejection is 400 with MANIFEST_BLOB_UNKNOWN', r);
  });
  await spec('EXTRA/manifest with unpushed non-distributable layers (with urls) -> 201 (HEAD run.go:428-486, OCI_DATA_NONDISTRIBUTABLE default true)', async () => {
    const nd = (mt, size) => { const d = sha256(crypto.randomBytes(256)); return { mediaType: mt, digest: d, size, urls: ['https://store.example.com/blobs/sha256/' + d.slice(7)] }; };
    const c = goJSON({ schemaVersion: 2, mediaType: MT_MANIFEST, config: { mediaType: MT_CONFIG, digest: configs[0].digest, size: configs[0].content.length },
      layers: [nd('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 123456), nd('application/vnd.oci.image.layer.nondistributable.v1.tar', 12345), { mediaType: MT_LAYER, digest: layerBlobDigest, size: layerBlobData.length }] });
    const r = await doReq('PUT', manPath(sha256(c), ns), { headers: { 'Content-Type': MT_MANIFEST }, body: c });
    expect(r.status === 201, 'api.go:974', 'PUT manifest by digest with unpushed non-distributable layers -> 201', r);
  });
  await spec('EXTRA/manifest GET Content-Type/Length/DCD (HEAD api.go:893-906)', async () => {
    const r = await doReq('GET', manPath('a', ns), { headers: { Accept: `${MT_INDEX}, ${MT_MANIFEST}` } });
    expect(r.status === 200 && r.header('Content-Type') === MT_MANIFEST, 'api.go:897', `Content-Type == "${MT_MANIFEST}"`, r);
    expect(r.header('Content-Length') === manifests[0].len, 'api.go:898', 'Content-Length == manifest size', r);
    expect(Buffer.compare(r.body, manifests[0].content) === 0, 'api.go:896', 'body byte-identical', r);
    const h = r.header('Docker-Content-Digest');
    expect(!h || h === manifests[0].digest, 'api.go:180', 'Docker-Content-Digest matches (if present)', r);
    const hd = await doReq('HEAD', manPath('a', ns), { headers: { Accept: `${MT_INDEX}, ${MT_MANIFEST}` } });
    expect(hd.status === 200 && hd.header('Content-Type') === MT_MANIFEST && hd.header('Content-Length') === manifests[0].len, 'api.go:939', 'HEAD manifest Content-Type/Length', hd);
  });
  await spec('EXTRA/blob GET/HEAD Content-Length + body (HEAD api.go:229-266)', async () => {
    const r = await doReq('GET', blobPath(layerBlobDigest, ns));
    expect(r.status === 200 && Buffer.compare(r.body, layerBlobData) === 0 && r.header('Content-Length') === layerBlobContentLength, 'api.go:230', 'GET blob body + Content-Length', r);
    const h = await doReq('HEAD', blobPath(layerBlobDigest, ns));
    expect(h.status === 200 && h.header('Content-Length') === layerBlobContentLength && h.body.length === 0, 'api.go:265', 'HEAD blob Content-Length, empty body', h);
  });
  await spec('EXTRA/blob range requests (HEAD run.go:1139-1220)', async () => {
    const big = crypto.randomBytes(2048);
    expect((await pushBlob(big)).status === 201, 'run.go:1139', 'push 2048B blob');
    const d = sha256(big);
    const cases = [['bytes=500-1499', 206, big.subarray(500, 1500), ['bytes 500-1499/2048', 'bytes 500-1499/*']],
      ['bytes=500-', 206, big.subarray(500), ['bytes 500-2047/2048', 'bytes 500-2047/*']],
      ['bytes=-500', 206, big.subarray(1548), ['bytes 1548-2047/2048', 'bytes 1548-2047/*']],
      ['bytes=2000-5000', 206, big.subarray(2000), ['bytes 2000-2047/2048', 'bytes 2000-2047/*']],
      ['bytes=500-0', 416], ['bytes=5000-10000', 416]];
    for (const [rng, st, body, cr] of cases) {
      const r = await doReq('GET', blobPath(d, ns), { headers: { Range: rng } });
      let ok = r.status === st;
      if (ok && st === 206) ok = Buffer.compare(r.body, body) === 0 && r.header('Content-Length') === String(body.length) && cr.includes(r.header('Content-Range'));
      expect(ok, 'run.go:1139-1220', `Range ${rng} -> ${st}${st === 206 ? ` Content-Range ${cr[0]}` : ''}`, r);
    }
  });
  await spec('EXTRA/zero-length blob push + GET (HEAD run.go:1238)', async () => {
    const r = await pushBlob(Buffer.alloc(0));
    expect(r.status === 201, 'run.go:1238', 'empty blob POST+PUT -> 201', r);
    const g = await doReq('GET', blobPath(sha256(Buffer.alloc(0)), ns));
    expect(g.status === 200 && g.body.length === 0, 'api.go:229', 'GET empty blob 200, 0 bytes', g);
  });
  await spec('EXTRA/bad digest on PUT -> 400 (HEAD api.go:792-796)', async () => {
    let r = await doReq('POST', uploadsPath(ns));
    r = await doReq('PUT', r.relLocation(), { query: { digest: sha256(Buffer.from('x')) }, headers: OCT, body: Buffer.from('y') });
    const [j] = parseJSON(r.body);
    expect(r.status === 400 && j?.errors?.[0]?.code === 'DIGEST_INVALID', 'api.go:794', 'PUT with mismatching digest -> 400 DIGEST_INVALID', r);
  });
  await spec('EXTRA/bad digest on POST ?digest= -> 400 or 202 (HEAD api.go:689-692)', async () => {
    const r = await doReq('POST', uploadsPath(ns), { query: { digest: sha256(Buffer.from('x')) }, headers: OCT, body: Buffer.from('y') });
    expect(r.status === 400 || r.status === 202, 'api.go:691', 'status 400 or 202', r);
  });
  await spec('EXTRA/manifest PUT with digest reference that does not match body -> 400 (HEAD run.go:1680)', async () => {
    const r = await doReq('PUT', manPath('sha256:baddigeststring', ns), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[0].content });
    expect(r.status === 400, 'api.go:971', 'status 400', r);
    const g = await doReq('GET', manPath('sha256:baddigeststring', ns), { headers: { Accept: MT_MANIFEST } });
    expect(g.status === 404 || g.status === 400, 'run.go:1700', 'GET bad digest ref -> 404 or 400', g);
  });
  await spec('EXTRA/automatic cross-mount without from (02_push_test.go:316-340, OCI_AUTOMATIC_CROSSMOUNT) -> 201 or 202', async () => {
    const other = `${ns}-mnt`;
    const r = await doReq('POST', uploadsPath(other), { query: { mount: layerBlobDigest } });
    expect(r.status === 201 || r.status === 202, '02_push_test.go:326/339', `status 201 (auto crossmount on) or 202 (off) — got ${r.status}`, r);
    if (r.status === 201) { const g = await doReq('GET', r.relLocation()); expect(g.status === 200, '02_push_test.go:307', 'Location GET 200', g); }
  });
  await spec('EXTRA/chunked 3 chunks, out-of-order 416 + GET recovery, PUT last chunk (HEAD api.go:349-546)', async () => {
    let r = await doReq('POST', uploadsPath(ns), { headers: { 'Content-Length': '0' } });
    expect(r.status === 202 && r.header('Location'), 'api.go:367', 'POST 202 + Location', r);
    // run.go:941-975: blob of minChunkSize*3-5 where minChunkSize = max(1024, OCI-Chunk-Min-Length)
    const minChunk = Math.max(1024, Number(r.header('OCI-Chunk-Min-Length') || 0));
    const blob = crypto.randomBytes(minChunk * 3 - 5); const d = sha256(blob);
    let cs = Math.min(Math.max(Math.floor(blob.length / 3) + 1, minChunk), blob.length);
    let loc = r.header('Location'); let last = -1;
    while (last < blob.length - 1) {
      // out-of-order chunk
      let bs = last + 1 + cs; if (bs >= blob.length) bs = 0; const bl = Math.min(bs + cs - 1, blob.length - 1);
      r = await doReq('PATCH', new URL(loc, ROOT).pathname + new URL(loc, ROOT).search, { headers: { ...OCT, 'Content-Range': `${bs}-${bl}` }, body: blob.subarray(bs, bl + 1) });
      expect(r.status === 416, 'api.go:423', `out-of-order PATCH ${bs}-${bl} -> 416`, r);
      const uPath = new URL(loc, ROOT); const g = await doReq('GET', uPath.pathname + uPath.search);
      expect(g.status === 204 && g.header('Location'), 'api.go:434', 'GET upload status 204 + Location', g);
      const rh = g.header('Range');
      expect(rh.startsWith('0-') && /^-?\d+$/.test(rh.slice(2)) && (last < 0 || Number(rh.slice(2)) === last), 'api.go:441-452', `Range "0-<n>" with n == ${last} (after ${last + 1} bytes)`, g);
      if (g.header('Location')) loc = g.header('Location');
      const start = last + 1; last = Math.min(start + cs - 1, blob.length - 1);
      const u = new URL(loc, ROOT);
      if (last === blob.length - 1) {
        r = await doReq('PUT', u.pathname + u.search, { query: { digest: d }, headers: { ...OCT, 'Content-Range': `${start}-${last}` }, body: blob.subarray(start, last + 1) });
        expect(r.status === 201 && r.header('Location'), 'api.go:478', 'PUT last chunk with Content-Range -> 201 + Location', r);
      } else {
        r = await doReq('PATCH', u.pathname + u.search, { headers: { ...OCT, 'Content-Range': `${start}-${last}` }, body: blob.subarray(start, last + 1) });
        expect(r.status === 202 && r.header('Location'), 'api.go:486', `PATCH ${start}-${last} -> 202 + Location`, r);
      }
      loc = r.header('Location') || loc;
    }
    const u = new URL(r.header('Location'), ROOT);
    const g = await doReq('GET', u.pathname + u.search);
    expect(g.status === 200 && Buffer.compare(g.body, blob) === 0, 'api.go:827-845', 'GET returned Location -> 200 + identical body', g);
  });
  await spec('EXTRA/upload cancel DELETE session -> 204 (HEAD api.go:659-665)', async () => {
    const r = await doReq('POST', uploadsPath(ns));
    const d = await doReq('DELETE', r.relLocation(), { headers: { 'Content-Length': '0' } });
    expect(d.status === 204, 'api.go:662', 'DELETE upload session -> 204', d);
  });
  await spec('EXTRA/sha512 blob POST+PUT and GET (HEAD run.go:835, OCI_DATA_SHA512 default true)', async () => {
    const blob = crypto.randomBytes(512); const d = 'sha512:' + crypto.createHash('sha512').update(blob).digest('hex');
    let r = await doReq('POST', uploadsPath(ns));
    r = await doReq('PUT', r.relLocation(), { query: { digest: d }, headers: OCT, body: blob });
    expect(r.status === 201, 'api.go:799', 'PUT ?digest=sha512:... -> 201', r);
    const g = await doReq('GET', blobPath(d, ns));
    expect(g.status === 200 && Buffer.compare(g.body, blob) === 0, 'api.go:229', 'GET sha512 blob', g);
  });
  await spec('EXTRA/manifest PUT Location is fetchable with same Content-Type/body (HEAD api.go:1011-1031)', async () => {
    const r = await doReq('PUT', manPath('loccheck', ns), { headers: { 'Content-Type': MT_MANIFEST }, body: manifests[0].content });
    expect(r.status === 201 && r.header('Location'), 'api.go:974', 'PUT 201 + Location', r);
    const dcd = r.header('Docker-Content-Digest');
    expect(!dcd || dcd === manifests[0].digest, 'api.go:1006', 'Docker-Content-Digest matches (if present)', r);
    const u = new URL(r.header('Location'), ROOT);
    const g = await doReq('GET', u.pathname + u.search, { headers: { Accept: `${MT_INDEX}, ${MT_MANIFEST}` } });
    expect(g.status === 200 && g.header('Content-Type') === MT_MANIFEST && Buffer.compare(g.body, manifests[0].content) === 0, 'api.go:1024', 'GET Location 200, Content-Type, identical body', g);
  });
  await spec('EXTRA/missing manifest by valid tag / random digest -> 404 (HEAD run.go:1637-1676)', async () => {
    const tag = `missing-${crypto.randomBytes(8).toString('hex')}`;
    for (const ref of [tag, sha256(crypto.randomBytes(1024))]) {
      for (const m of ['GET', 'HEAD']) {
        const r = await doReq(m, manPath(ref), { headers: { Accept: `${MT_INDEX}, ${MT_MANIFEST}` } });
        expect(r.status === 404, 'run.go:1648/1666', `${m} missing manifest ${ref.slice(0, 20)}… -> 404`, r);
      }
    }
  });
  await spec('EXTRA/referrers: filter returns only matching artifactType; descriptors carry artifactType/mediaType/size (HEAD run.go:2204-2262)', async () => {
    for (const b of [emptyJSONBlob, testRefBlobA]) await pushBlob(b);
    let r = await doReq('PUT', manPath(refsALayer.digest, ns), { headers: { 'Content-Type': MT_MANIFEST }, body: refsALayer.content });
    expect(r.status === 201 && r.header('OCI-Subject') === manifests[4].digest, 'api.go:982', 'PUT referrer 201 + OCI-Subject', r);
    r = await doReq('PUT', manPath(refsAConfig.digest, ns), { headers: { 'Content-Type': MT_MANIFEST }, body: refsAConfig.content });
    r = await doReq('GET', `/v2/${ns}/referrers/${manifests[4].digest}`);
    const [j] = parseJSON(r.body);
    expect(r.status === 200 && j?.mediaType === MT_INDEX && j?.schemaVersion === 2, 'api.go:1066', 'referrers body is an OCI index (mediaType + schemaVersion 2)', r);
    const e = j?.manifests?.find((m) => m.digest === refsALayer.digest);
    expect(e && e.mediaType === MT_MANIFEST && e.size === refsALayer.content.length && e.artifactType === testRefArtifactTypeA, 'run.go:2205', 'descriptor mediaType/size/artifactType for artifactType-manifest', r);
    const e2 = j?.manifests?.find((m) => m.digest === refsAConfig.digest);
    expect(e2 && e2.artifactType === testRefArtifactTypeA, 'run.go:2205', 'artifactType taken from config.mediaType when manifest has no artifactType', r);
    const f = await doReq('GET', `/v2/${ns}/referrers/${manifests[4].digest}`, { query: { artifactType: testRefArtifactTypeB } });
    const [jf] = parseJSON(f.body);
    expect(f.status === 200 && f.header('OCI-Filters-Applied') === 'artifactType' && Array.isArray(jf?.manifests) && jf.manifests.length === 0, 'run.go:2241-2262', 'filter on a type with no matches -> empty list + OCI-Filters-Applied', f);
  });
}

// ================================================================= run
const t0 = Date.now();
console.log(`registry ${ROOT}  namespace ${N}  crossmount ${CROSSMOUNT_NS}  mode ${SOFT ? 'soft' : 'strict'}`);
await test01Pull();
await test02Push();
await test03ContentDiscovery();
await test04ContentManagement();
const suiteChecks = results.length;
await extras();

const fmt = (r) => `  [${r.loc}] ${r.spec}\n    expected: ${r.what}\n    got:      ${r.detail}`;
const suite = results.slice(0, suiteChecks), extra = results.slice(suiteChecks);
const gs = specs.filter((s) => !s.name.startsWith('EXTRA/'));
console.log(`\n=== Ginkgo suite replay: ${suite.filter((r) => r.pass).length}/${suite.length} checks passed; ${gs.length} specs: ${gs.filter((s) => s.status === 'passed').length} passed, ${gs.filter((s) => s.status === 'FAILED').length} failed, ${gs.filter((s) => s.status.startsWith('skipped')).length} skipped`);
for (const r of suite.filter((r) => !r.pass)) console.log(fmt(r));
console.log(`\n=== EXTRA (not asserted by the Ginkgo suite): ${extra.filter((r) => r.pass).length}/${extra.length} passed`);
for (const r of extra.filter((r) => !r.pass)) console.log(fmt(r));
console.log(`\n=== warnings: ${warnings.length}`);
for (const w of warnings) console.log('  ' + w);
console.log('\n=== skipped specs');
for (const s of specs.filter((s) => s.status.startsWith('skipped'))) console.log(`  ${s.name} (${s.status})`);
console.log(`\ntranscript: ${TRANSCRIPT}  (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
agent.destroy();
process.exitCode = results.some((r) => !r.pass) ? 1 : 0;
