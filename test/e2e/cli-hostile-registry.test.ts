import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';

/**
 * The host agent against a registry that answers wrongly (broken, misconfigured or hostile):
 * whatever it sends, `pull` writes nothing into the target, leaves nothing behind, says what
 * went wrong in one line and exits non-zero.
 */
let work = '';
let archive: Buffer;
let digest = '';
let server: Server;
let url = '';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
/** How the registry answers a snapshot's metadata, its content (the blob GET of its layer), and an upload, by volume name (`h/<name>`). */
const metadataOf = new Map<string, Handler>();
const contentOf = new Map<string, Handler>();
const uploadOf = new Map<string, Handler>();
/** /v2 replies, by `h/<name>/manifests/<digest>` or `h/<name>/blobs/<digest>` */
const v2Of = new Map<string, Handler>();
/** POST .../tags/v1/verify, by volume name */
const verifyOf = new Map<string, Handler>();

/** A registry that stops answering: the connection stays open, silent, until it gives up (a client with no timeout fails later, differently). */
const stall: Handler = (req, res) => {
  req.pause();
  setTimeout(() => res.destroy(), 60_000).unref();
};

function metadata(volume: string): string {
  return JSON.stringify({
    volume,
    tag: 'v1',
    digest: `sha256:${'0'.repeat(64)}`,
    manifestDigest: `sha256:${'0'.repeat(64)}`,
    layer: { digest, size: archive.length, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' },
    size: archive.length,
    compression: 'gzip',
  });
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'volreg-hostile-'));
  const src = join(work, 'src');
  await mkdir(src);
  await writeFile(join(src, 'file'), 'a small volume\n');
  archive = execFileSync('tar', ['-C', src, '-czf', '-', '.']);
  digest = `sha256:${createHash('sha256').update(archive).digest('hex')}`;
  server = createServer((req, res) => {
    const m = /^\/api\/v1\/volumes\/(h\/[a-z0-9-]+)\/tags\/v1(\/content)?(?:\?.*)?$/.exec(req.url ?? '');
    const content = m?.[2] !== undefined ? contentOf.get(m[1]!) : undefined;
    const upload = m && req.method === 'PUT' ? uploadOf.get(m[1]!) : undefined;
    const verify = /^\/api\/v1\/volumes\/(h\/[a-z0-9-]+)\/tags\/v1\/verify$/.exec(req.url ?? '');
    if (verify && req.method === 'POST') return void verifyOf.get(verify[1]!)?.(req, res);
    const v2 = /^\/v2\/(h\/[a-z0-9-]+)\/(manifests|blobs)\/(.+)$/.exec(req.url ?? '');
    // a pull downloads the layer it resolved by digest: the volume's content handler answers it
    const v2Handler = v2 ? (v2Of.get(`${v2[1]}/${v2[2]}/${v2[3]}`) ?? (v2[2] === 'blobs' ? contentOf.get(v2[1]!) : undefined)) : undefined;
    if (v2Handler) return void v2Handler(req, res);
    const meta = m && m[2] === undefined ? metadataOf.get(m[1]!) : undefined;
    if (upload) upload(req, res);
    else if (meta) meta(req, res);
    else if (m && m[2] === undefined) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(metadata(m[1]!));
    } else if (content) content(req, res);
    else {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end('{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

test.after.always(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await rm(work, { recursive: true, force: true });
});

async function pull(volume: string, ...flags: string[]): Promise<CliRun & { entries: string[] }> {
  const target = join(work, `target-${volume}`);
  const run = await runVolreg(['pull', ...flags, `h/${volume}:v1`, target], { url, cwd: work });
  // a pull that failed before it began leaves no target at all
  const entries = await readdir(target).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)));
  return { ...run, entries };
}

test('a registry sending more than the snapshot holds is cut off at its size, not written on to the end (exit 4)', async (t) => {
  const extra = 64 * 1024 * 1024;
  let sent = 0;
  let finished = false;
  contentOf.set('h/endless', (_req, res) => {
    // no Content-Length: the body runs on until the connection ends
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    res.write(archive);
    const block = Buffer.alloc(1024 * 1024, 7);
    const more = (): void => {
      while (sent < extra && !res.destroyed) {
        sent += block.length;
        if (!res.write(block)) return void res.once('drain', more);
      }
      res.end();
      finished = !res.destroyed;
    };
    more();
  });
  const run = await pull('endless');
  t.is(run.code, 4, run.stderr);
  t.is(run.stderr, `volreg pull: download of h/endless:v1: the registry sent more than the snapshot's ${archive.length} bytes; stopped there, nothing was extracted\n`);
  t.deepEqual(run.entries, [], 'nothing written, no download left');
  t.false(finished, `the registry could not send its ${extra} bytes (it sent ${sent})`);
});

test('a Content-Length above the snapshot size is refused before a byte is read (exit 4)', async (t) => {
  contentOf.set('h/declared-long', (_req, res) => {
    res.writeHead(200, { 'Content-Length': String(archive.length + 1) });
    res.write(archive);
    // the last byte never comes; a client still reading is cut off later
    setTimeout(() => res.destroy(), 3000).unref();
  });
  const run = await pull('declared-long');
  t.is(run.code, 4, run.stderr);
  t.is(run.stderr, `volreg pull: download of h/declared-long:v1: the registry announced ${archive.length + 1} bytes, more than the snapshot's ${archive.length} bytes; stopped there, nothing was extracted\n`);
  t.deepEqual(run.entries, []);
});

/** stderr's warnings, each one that the pull resumed the download */
function resumeWarnings(run: CliRun, volume: string): string[] {
  const lines = run.stderr.split('\n').filter((line) => line.startsWith('volreg pull: warning: '));
  for (const line of lines) assertResumeWarning(line, volume);
  return lines;
}

function assertResumeWarning(line: string, volume: string): void {
  if (!new RegExp(`^volreg pull: warning: the download of h/${volume}:v1 broke off after \\d+ of ${archive.length} bytes \\(.+\\); resuming from there$`).test(line)) {
    throw new Error(`not a resume warning: ${line}`);
  }
}

test('a registry that stalls mid-download every time fails the pull after --timeout seconds of silence per try, saying so (exit 1)', async (t) => {
  let requests = 0;
  contentOf.set('h/stalled', (req, res) => {
    requests++;
    res.writeHead(200, { 'Content-Length': String(archive.length) });
    res.write(archive.subarray(0, 100));
    stall(req, res);
  });
  const started = Date.now();
  const run = await pull('stalled', '--timeout', '1');
  t.is(run.code, 1, run.stderr);
  t.true(run.stderr.endsWith(`\nvolreg pull: nothing came from the registry for 1 s (GET /v2/h/stalled/blobs/${digest}): it is stalled or unreachable (the limit is --timeout or VOLREG_TIMEOUT; 0 waits for ever)\n`), run.stderr);
  // resumed while it got further, then twice more (this registry answers every try from byte 0)
  const warnings = resumeWarnings(run, 'stalled');
  t.is(warnings.length, requests - 1);
  t.true(requests >= 3 && requests <= 5, `${requests} requests`);
  t.regex(warnings[0]!, /\(nothing came for 1 s\)/);
  // a few 1 s timeouts and the waits between tries; the registry gives up after 60 s
  t.true(Date.now() - started < 45_000, 'failed at the timeouts, not when the registry gave up');
  t.deepEqual(run.entries, []);
});

test('a registry that stops reading an upload fails the push after VOLREG_TIMEOUT seconds (exit 1)', async (t) => {
  const src = join(work, 'push-src');
  await mkdir(src);
  // more than the socket buffers hold, so the upload itself stalls
  await writeFile(join(src, 'big'), randomBytes(16 * 1024 * 1024));
  uploadOf.set('h/stalled-upload', stall);
  const started = Date.now();
  const run = await runVolreg(['push', '--compression', 'none', src, 'h/stalled-upload:v1'], { url, cwd: work, env: { VOLREG_TIMEOUT: '2' } });
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, /^volreg push: nothing came from the registry for 2 s \(PUT \/api\/v1\/volumes\/h\/stalled-upload\/tags\/v1\): it is stalled or unreachable/);
  // a 2 s timeout, the CLI's start and a 16 MiB read; the registry gives up after 60 s (wide of
  // both: on a loaded machine the CLI's start alone has taken 10 s)
  t.true(Date.now() - started < 45_000, 'failed at the timeout, not when the registry gave up');
});

test('--timeout takes whole seconds (0: no limit); anything else is bad usage (exit 2)', async (t) => {
  for (const bad of ['x', '-1', '1.5', '']) {
    const run = await runVolreg(['ls', '--timeout', bad], { url, cwd: work });
    t.is(run.code, 2, `${bad}: ${run.stderr}`);
    t.regex(run.stderr, /--timeout wants a whole number of seconds/);
  }
});

test('redirects are not followed: credentials never reach another origin, and the message names where it pointed (exit 1)', async (t) => {
  const seen: Array<string | undefined> = [];
  const other = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(metadata('h/elsewhere'));
  });
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  const elsewhere = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
  try {
    metadataOf.set('h/moved', (req, res) => {
      res.writeHead(302, { Location: `${elsewhere}${req.url}` });
      res.end('moved');
    });
    contentOf.set('h/moved-content', (req, res) => {
      res.writeHead(307, { Location: `${elsewhere}${req.url}` });
      res.end('moved');
    });
    const env = { VOLREG_USER: 'alice', VOLREG_PASSWORD: 'secret' };
    const meta = await runVolreg(['pull', 'h/moved:v1', join(work, 'moved')], { url, cwd: work, env });
    t.is(meta.code, 1, meta.stderr);
    t.is(meta.stderr, `volreg pull: GET /api/v1/volumes/h/moved/tags/v1 was answered HTTP 302 Found to ${elsewhere}/api/v1/volumes/h/moved/tags/v1, which volreg does not follow (credentials go only to the registry named): give the registry's own address as --url (UNEXPECTED_REPLY, HTTP 302)\n`);
    const content = await runVolreg(['pull', 'h/moved-content:v1', join(work, 'moved-content')], { url, cwd: work, env });
    t.is(content.code, 1, `a redirect is not a damaged snapshot: ${content.stderr}`);
    t.regex(content.stderr, /^volreg pull: GET \/v2\/h\/moved-content\/blobs\/sha256:[0-9a-f]{64} was answered HTTP 307 Temporary Redirect to /);
    t.deepEqual(await readdir(join(work, 'moved-content')), []);
    t.deepEqual(seen, [], 'the other origin was never asked');
  } finally {
    await new Promise((resolve) => other.close(resolve));
  }
});

test('a 200 that is not JSON (a proxy login page) is named as such (exit 1)', async (t) => {
  metadataOf.set('h/html', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<html><body>Sign in</body></html>');
  });
  const run = await pull('html');
  t.is(run.code, 1);
  t.is(run.stderr, `volreg pull: the reply to GET /api/v1/volumes/h/html/tags/v1 is not JSON (HTTP 200, Content-Type text/html): is ${url}/ a volreg registry? (NOT_JSON, HTTP 200)\n`);
  t.deepEqual(run.entries, []);
});

const NGINX_PAGE = (status: string): string =>
  `<html>\r\n<head><title>${status}</title></head>\r\n<body>\r\n<center><h1>${status}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n`;

test("a proxy's own error page (an HTML 504) is named as such in one line, pointing at the proxy's limits (exit 1)", async (t) => {
  metadataOf.set('h/gateway', (_req, res) => {
    res.writeHead(504, { 'Content-Type': 'text/html' });
    res.end(NGINX_PAGE('504 Gateway Time-out'));
  });
  const run = await pull('gateway');
  t.is(run.code, 1);
  t.is(
    run.stderr,
    `volreg pull: HTTP 504 Gateway Timeout, an HTML page ("504 Gateway Time-out") rather than volreg's error reply: something in front of the registry answered: a reverse proxy's limit on request bodies or its timeouts may be too small for volreg (see volreg's README, Behind a reverse proxy) (UNKNOWN, HTTP 504)\n`,
  );
  t.deepEqual(run.entries, []);
});

test("a push a proxy refuses as too large (its HTML 413) says so in one line (exit 1)", async (t) => {
  const src = join(work, 'push-proxied');
  await mkdir(src);
  await writeFile(join(src, 'file'), 'a volume\n');
  uploadOf.set('h/proxy-limit', (req, res) => {
    req.resume();
    res.writeHead(413, { 'Content-Type': 'text/html', Connection: 'close' });
    res.end(NGINX_PAGE('413 Request Entity Too Large'));
  });
  const run = await runVolreg(['push', src, 'h/proxy-limit:v1'], { url, cwd: work });
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, /^volreg push: HTTP 413 Payload Too Large, an HTML page \("413 Request Entity Too Large"\) rather than volreg's error reply: something in front of the registry answered: a reverse proxy's limit on request bodies or its timeouts may be too small/);
  t.is(run.stderr.trim().split('\n').length, 1, run.stderr);
});

test('an error reply in plain text is given on one line', async (t) => {
  metadataOf.set('h/text', (_req, res) => {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('Internal\n  error\n');
  });
  const run = await pull('text');
  t.is(run.code, 1);
  t.is(run.stderr, 'volreg pull: HTTP 500 Internal Server Error: Internal error (UNKNOWN, HTTP 500)\n');
});

test('a JSON reply is read up to 64 MiB, not held whole however large it grows (exit 1)', async (t) => {
  let sent = 0;
  let finished = false;
  metadataOf.set('h/huge', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const block = Buffer.alloc(1024 * 1024, 0x20);
    const more = (): void => {
      while (sent < 512 * 1024 * 1024 && !res.destroyed) {
        sent += block.length;
        if (!res.write(block)) return void res.once('drain', more);
      }
      res.end('{}');
      finished = !res.destroyed;
    };
    more();
  });
  const run = await pull('huge');
  t.is(run.code, 1, run.stderr);
  t.is(run.stderr, `volreg pull: the reply to GET /api/v1/volumes/h/huge/tags/v1 is larger than 67108864 bytes: not one of the registry's; is ${url}/ a volreg registry? (REPLY_TOO_LARGE, HTTP 200)\n`);
  t.false(finished, `read no further than the limit (the registry sent ${sent} bytes)`);
});

test('a download cut short at the same byte every time says after how many bytes, and writes nothing (exit 1)', async (t) => {
  const ranges: Array<string | undefined> = [];
  contentOf.set('h/short', (req, res) => {
    ranges.push(req.headers.range);
    // the Range of a resumption is not honoured: each reply starts over and breaks at byte 100
    res.writeHead(200, { 'Content-Length': String(archive.length) });
    res.write(archive.subarray(0, 100), () => res.destroy());
  });
  const run = await pull('short');
  t.is(run.code, 1);
  t.true(run.stderr.endsWith(`\nvolreg pull: the connection to the registry broke during the download, after 100 of ${archive.length} bytes (aborted)\n`), run.stderr);
  t.is(resumeWarnings(run, 'short').length, ranges.length - 1);
  t.is(run.stderr.split('\n').length, ranges.length + 1, 'the warnings, the failure, nothing else');
  t.is(ranges[0], undefined, 'the first request asks for the whole');
  t.true(ranges.includes('bytes=100-'), `a resumption asked for the rest: ${JSON.stringify(ranges)}`);
  t.deepEqual(run.entries, []);
});

test('a download broken off is resumed from the bytes written, and the resumed whole is verified before extraction', async (t) => {
  const asked: Array<string | undefined> = [];
  contentOf.set('h/resumed', (req, res) => {
    asked.push(req.headers.range);
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const part = archive.subarray(from, Math.min(archive.length, from + 60));
    res.writeHead(from > 0 ? 206 : 200, {
      'Content-Length': String(archive.length - from),
      ...(from > 0 ? { 'Content-Range': `bytes ${from}-${archive.length - 1}/${archive.length}` } : {}),
    });
    // 60 bytes a reply, then the connection breaks (until the last part, which completes)
    if (from + part.length === archive.length) res.end(part);
    else res.write(part, () => res.destroy());
  });
  const run = await pull('resumed');
  t.is(run.code, 0, run.stderr);
  // each try from what was written before (a part the break took with it is asked for again)
  t.true(asked.includes('bytes=60-') && asked.includes('bytes=120-'), JSON.stringify(asked));
  t.deepEqual([...new Set(asked.filter(Boolean))], ['bytes=60-', 'bytes=120-']);
  t.is(resumeWarnings(run, 'resumed').length, asked.length - 1);
  t.deepEqual(run.entries, ['file']);
});

test('a resumption answered with another range than asked is refused, and nothing extracted (exit 1)', async (t) => {
  contentOf.set('h/wrong-range', (req, res) => {
    if (req.headers.range) {
      res.writeHead(206, { 'Content-Range': `bytes 0-${archive.length - 1}/${archive.length}`, 'Content-Length': String(archive.length) });
      res.end(archive);
      return;
    }
    res.writeHead(200, { 'Content-Length': String(archive.length) });
    res.write(archive.subarray(0, 100), () => res.destroy());
  });
  const run = await pull('wrong-range');
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, new RegExp(`from byte \\d+ was answered with the range "bytes 0-${archive.length - 1}/${archive.length}"`));
  t.deepEqual(run.entries, []);
});

test('a registry closing the connection before it answers (restarting mid-storm), asked three times, is named as such, not as "socket hang up" (exit 1)', async (t) => {
  let asked = 0;
  contentOf.set('h/hangup', (req) => {
    asked++;
    req.socket.destroy();
  });
  const run = await pull('hangup');
  t.is(run.code, 1);
  t.is(asked, 3, 'sent again twice');
  t.is(
    run.stderr,
    `volreg pull: the registry at ${url}/ closed the connection before answering GET /v2/h/hangup/blobs/${digest} (socket hang up): it may be restarting; run the command again\n`,
  );
  t.deepEqual(run.entries, []);
});

test('a GET the registry dropped before answering (restarting, out of file descriptors) is sent again: the pull goes through', async (t) => {
  const dropped = new Set<string>();
  const dropFirst = (req: IncomingMessage, answer: () => void): void => {
    const key = `${req.method} ${req.url}`;
    if (dropped.has(key)) return answer();
    dropped.add(key);
    req.socket.destroy();
  };
  metadataOf.set('h/dropped', (req, res) =>
    dropFirst(req, () => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(metadata('h/dropped'));
    }),
  );
  contentOf.set('h/dropped', (req, res) =>
    dropFirst(req, () => {
      res.writeHead(200, { 'Content-Length': String(archive.length), 'Docker-Content-Digest': digest });
      res.end(archive);
    }),
  );
  const run = await pull('dropped');
  t.is(run.code, 0, run.stderr);
  t.deepEqual([...dropped].sort(), [`GET /api/v1/volumes/h/dropped/tags/v1`, `GET /v2/h/dropped/blobs/${digest}`]);
  t.deepEqual(run.entries, ['file']);
});

test('a registry that accepts no connection (stopped) is named as such, with the request (exit 1)', async (t) => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const down = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise((resolve) => closed.close(resolve));
  const target = join(work, 'target-down');
  const run = await runVolreg(['pull', 'h/down:v1', target], { url: down, cwd: work });
  t.is(run.code, 1);
  t.regex(run.stderr, /^volreg pull: nothing accepts connections at http:\/\/127\.0\.0\.1:\d+\/ \(GET \/api\/v1\/volumes\/h\/down\/tags\/v1: connect ECONNREFUSED [^)]+\): the registry is down or restarting, or the URL is wrong; run the command again once it answers\n$/);
});

test('a 401 asking for another scheme than Basic says so (exit 1)', async (t) => {
  metadataOf.set('h/bearer', (_req, res) => {
    res.writeHead(401, { 'WWW-Authenticate': 'Bearer realm="https://auth.example/token",service="registry"' });
    res.end();
  });
  const run = await pull('bearer');
  t.is(run.code, 1);
  t.is(run.stderr, 'volreg pull: HTTP 401 Unauthorized (it asks for Bearer authentication; volreg sends Basic credentials only) (UNKNOWN, HTTP 401)\n');
});

test('pull by manifest digest refuses a manifest that does not hash to that digest: another snapshot is never restored in its place (exit 4)', async (t) => {
  const manifest = (note: string): Buffer =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        artifactType: 'application/vnd.volreg.volume.v1',
        config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: archive.length }],
        annotations: { note },
      }),
    );
  const asked = `sha256:${createHash('sha256').update(manifest('the snapshot asked for')).digest('hex')}`;
  const served = manifest('another snapshot');
  v2Of.set(`h/lying/manifests/${asked}`, (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Docker-Content-Digest': asked });
    res.end(served);
  });
  v2Of.set(`h/lying/blobs/${digest}`, (_req, res) => {
    res.writeHead(200, { 'Content-Length': String(archive.length), 'Docker-Content-Digest': digest });
    res.end(archive);
  });
  const target = join(work, 'lying');
  const run = await runVolreg(['pull', `h/lying@${asked}`, target], { url, cwd: work });
  t.is(run.code, 4, run.stderr);
  const got = `sha256:${createHash('sha256').update(served).digest('hex')}`;
  t.is(run.stderr, `volreg pull: the manifest the registry sent for h/lying@${asked} hashes to ${got}: it is not that snapshot's; nothing was downloaded (DIGEST_INVALID, HTTP 200)\n`);
  t.deepEqual(await readdir(target).catch(() => []), []);
});

test('verify waits for a large snapshot beyond --timeout, by its size; a small one silent as long fails at the timeout', async (t) => {
  // 48 MiB at the floor of 16 MiB/s: 3 s more than --timeout
  const big = 48 * 1024 * 1024;
  metadataOf.set('h/big-verify', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ ...JSON.parse(metadata('h/big-verify')), layer: { digest, size: big, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }, uncompressed: { digest, size: big } }));
  });
  const answerLate: Handler = (req, res) => {
    req.resume();
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ ...JSON.parse(metadata('h/x')), ok: true, lastVerify: { at: new Date().toISOString(), ok: true, problems: [] } }));
    }, 2500).unref();
  };
  verifyOf.set('h/big-verify', answerLate);
  verifyOf.set('h/small-verify', answerLate);
  const big1 = await runVolreg(['verify', '--timeout', '1', 'h/big-verify:v1'], { url, cwd: work });
  t.is(big1.code, 0, big1.stderr);
  t.regex(big1.stdout, /h\/big-verify:v1: ok/);
  const small = await runVolreg(['verify', '--timeout', '1', 'h/small-verify:v1'], { url, cwd: work });
  t.is(small.code, 1, small.stderr);
  t.regex(small.stderr, /nothing came from the registry for 1 s \(POST \/api\/v1\/volumes\/h\/small-verify\/tags\/v1\/verify\)/);
});
