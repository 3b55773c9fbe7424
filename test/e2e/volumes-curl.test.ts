import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { sameBytes } from '../helpers/same-bytes.ts';
import { spawnServer, startTestServer, type TestServer } from '../helpers/server.ts';
import { describeTree, makeSampleTree } from '../helpers/tree.ts';

/**
 * /api/v1 with the real tools a host has: tar, gzip, zstd, curl, sha256sum, and skopeo for
 * the same snapshot through /v2.
 */
const execFile = promisify(execFileCb);
let server: TestServer;
let work = '';
let tree = '';

/** Runs a shell pipeline in `cwd`; rejects with stderr on a non-zero exit. */
async function sh(script: string, cwd = work): Promise<string> {
  const { stdout } = await execFile('bash', ['-o', 'pipefail', '-c', script], { cwd, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** Like sh, but resolves with the exit code and output instead of rejecting. */
async function shStatus(script: string, cwd = work): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFileCb('bash', ['-o', 'pipefail', '-c', script], { cwd }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const api = (p: string): string => `${server.url}/api/v1/volumes/${p}`;

test.before(async () => {
  server = await startTestServer({ label: 'e2e-volumes-curl' });
  work = await mkdtemp(join(tmpdir(), 'volreg-curl-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await makeSampleTree(tree);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

test('tar -czf - | curl -T - round trip; curl | tee | sha256sum; sha256sum -c; tar -x gives the tree back', async (t) => {
  const dir = join(work, 'gz');
  await mkdir(dir);
  const put = JSON.parse(await sh(`tar -C ${tree} -czf - . | curl -fsS -T - -H 'X-Volreg-Host: host-a' '${api('e2e/app-data/tags/v1')}?label=app=web'`, dir)) as {
    layer: { digest: string; size: number };
    fileName: string;
    host: string;
  };
  t.is(put.host, 'host-a');
  t.is(put.fileName, 'e2e-app-data-v1.tar.gz');
  const piped = await sh(`curl -fsS '${api('e2e/app-data/tags/v1/content')}' | tee snapshot.tar.gz | sha256sum`, dir);
  t.is(`sha256:${piped.split(' ')[0]}`, put.layer.digest);
  // curl -OJ names the file from Content-Disposition; the .sha256 line names the same file
  await sh(`curl -fsS -OJ '${api('e2e/app-data/tags/v1/content')}' && curl -fsS -o check.sha256 '${api('e2e/app-data/tags/v1/content.sha256')}'`, dir);
  t.true((await readdir(dir)).includes('e2e-app-data-v1.tar.gz'));
  t.regex(await sh('sha256sum -c check.sha256', dir), /e2e-app-data-v1\.tar\.gz: OK/);
  const out = join(dir, 'out');
  await mkdir(out);
  await sh(`tar -C ${out} -xzf e2e-app-data-v1.tar.gz`, dir);
  t.deepEqual(await describeTree(out), await describeTree(tree));
  // a tampered copy fails sha256sum -c
  await writeFile(join(dir, 'e2e-app-data-v1.tar.gz'), Buffer.concat([await readFile(join(dir, 'e2e-app-data-v1.tar.gz')), Buffer.from('x')]));
  t.not((await shStatus('sha256sum -c check.sha256', dir)).code, 0);
});

test('zstd and plain tar round trips through curl', async (t) => {
  const dir = join(work, 'zst');
  await mkdir(dir);
  await sh(`tar -C ${tree} -cf - . | zstd -q -c | curl -fsS -o put.json -T - '${api('e2e/zstd/tags/v1')}'`, dir);
  await sh(`tar -C ${tree} -cf - . | curl -fsS -o put2.json -T - '${api('e2e/plain/tags/v1')}'`, dir);
  t.is((JSON.parse(await readFile(join(dir, 'put.json'), 'utf8')) as { compression: string }).compression, 'zstd');
  t.is((JSON.parse(await readFile(join(dir, 'put2.json'), 'utf8')) as { compression: string }).compression, 'none');
  for (const [name, decode] of [
    ['zstd', 'zstd -q -d -c'],
    ['plain', 'cat'],
  ]) {
    const out = join(dir, `out-${name}`);
    await mkdir(out);
    await sh(`curl -fsS '${api(`e2e/${name}/tags/v1/content`)}' | ${decode} | tar -C ${out} -xf -`, dir);
    t.deepEqual(await describeTree(out), await describeTree(tree), name);
  }
});

test('zstd at level 19 is taken; a --long archive (128 MiB window) is refused with the advice and leaves nothing', async (t) => {
  const dir = join(work, 'zst-window');
  await mkdir(dir);
  // from a pipe zstd cannot shrink the window to the input: level 19 writes 8 MiB, --long=27 128 MiB
  const put = JSON.parse(await sh(`tar -C ${tree} -cf - . | zstd -q -19 -c | curl -fsS -T - '${api('e2e/zstd19/tags/v1')}'`, dir)) as { compression: string };
  t.is(put.compression, 'zstd');
  const refused = await shStatus(`tar -C ${tree} -cf - . | zstd -q --long=27 -c | curl -sS -w '\\n%{http_code}' -T - '${api('e2e/zstdlong/tags/v1')}'`, dir);
  const [body, status] = refused.stdout.trim().split('\n');
  t.is(status, '400');
  const err = (JSON.parse(body!) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
  t.is(err.code, 'ARCHIVE_INVALID');
  t.regex(err.message, /zstd window of 134217728 bytes exceeds 8388608 \(compress without --long/);
  t.is((await shStatus(`curl -fsS '${api('e2e/zstdlong/tags/v1')}'`, dir)).code, 22, 'no snapshot was kept');
});

test('curl -C - resumes an interrupted download to the identical file', async (t) => {
  const dir = join(work, 'resume');
  await mkdir(dir);
  const put = JSON.parse(await sh(`tar -C ${tree} -cf - . | curl -fsS -T - '${api('e2e/resume/tags/v1')}'`, dir)) as { layer: { digest: string; size: number } };
  // the first 100000 bytes arrived, then the connection broke
  await sh(`curl -fsS -r 0-99999 -o part.tar '${api('e2e/resume/tags/v1/content')}'`, dir);
  t.is((await readFile(join(dir, 'part.tar'))).length, 100000);
  const log = await sh(`curl -fsS -v -C - -o part.tar '${api('e2e/resume/tags/v1/content')}' 2>&1`, dir);
  t.regex(log, /Range: bytes=100000-/);
  t.regex(log, /HTTP\/1\.1 206/);
  const whole = await readFile(join(dir, 'part.tar'));
  t.is(whole.length, put.layer.size);
  t.is(`sha256:${createHash('sha256').update(whole).digest('hex')}`, put.layer.digest);
});

test('the README resume recipes never mix two snapshots when the tag moves between attempts', async (t) => {
  const dir = join(work, 'resume-moved');
  await mkdir(dir);
  const first = JSON.parse(await sh(`tar -C ${tree} -cf - . | curl -fsS -T - '${api('e2e/moved/tags/v1')}'`, dir)) as { layer: { digest: string; size: number } };
  // noted before the first attempt, as the recipe says
  const d = (await sh(`curl -fsS '${api('e2e/moved/tags/v1')}' | jq -r .layer.digest`, dir)).trim();
  t.is(d, first.layer.digest);
  await sh(`curl -fsS -r 0-99999 -o bytag.tar '${api('e2e/moved/tags/v1/content')}' && cp bytag.tar bydigest.tar`, dir);
  // the tag moves to another snapshot
  await sh(`tar -C ${tree} -czf - . | curl -fsS -o /dev/null -T - '${api('e2e/moved/tags/v1')}'`, dir);

  // by tag with If-Range: the whole new snapshot comes back (200) and curl refuses to append it
  const byTag = await shStatus(`curl -fsS -C - -H 'If-Range: "${d}"' -o bytag.tar '${api('e2e/moved/tags/v1/content')}'`, dir);
  t.is(byTag.code, 33, byTag.stderr);
  t.is((await readFile(join(dir, 'bytag.tar'))).length, 100000, 'nothing appended');

  // by digest through /v2: the bytes the download started with
  await sh(`curl -fsS -C - -o bydigest.tar '${server.url}/v2/e2e/moved/blobs/${d}' && echo "${d.slice('sha256:'.length)}  bydigest.tar" | sha256sum -c`, dir);
  t.is((await readFile(join(dir, 'bydigest.tar'))).length, first.layer.size);
});

test('curl uploads that are truncated, not tars or of the wrong digest are refused and leave no tag', async (t) => {
  const dir = join(work, 'refused');
  await mkdir(dir);
  await sh(`tar -C ${tree} -czf full.tar.gz .`, dir);
  // one byte changed inside the zstd stream: zstd -t fails on the checksum (the decoder alone would not notice)
  await sh(`tar -C ${tree} -cf - . | zstd -q -c > full.tar.zst && cp full.tar.zst bad.tar.zst && printf '\\377' | dd of=bad.tar.zst bs=1 seek=3000 conv=notrunc status=none && ! zstd -q -t bad.tar.zst`, dir);
  const cases = [
    ['truncated', `head -c 20000 full.tar.gz | curl -sS -o /dev/null -w '%{http_code}' -T - '${api('e2e/refused/tags/t1')}'`],
    ['not a tar', `echo 'hello' | gzip | curl -sS -o /dev/null -w '%{http_code}' -T - '${api('e2e/refused/tags/t2')}'`],
    ['wrong digest', `curl -sS -o /dev/null -w '%{http_code}' -T full.tar.gz '${api('e2e/refused/tags/t3')}?digest=sha256:${'a'.repeat(64)}'`],
    ['wrong Digest header', `curl -sS -o /dev/null -w '%{http_code}' -T full.tar.gz -H "Digest: sha-256=$(head -c 32 /dev/zero | base64)" '${api('e2e/refused/tags/t4')}'`],
    ['corrupt zstd', `curl -sS -o /dev/null -w '%{http_code}' -T bad.tar.zst '${api('e2e/refused/tags/t5')}'`],
    ['garbage after the gzip stream', `(cat full.tar.gz; printf '\\0garbage') | curl -sS -o /dev/null -w '%{http_code}' -T - '${api('e2e/refused/tags/t6')}'`],
  ];
  for (const [what, script] of cases) t.is(await sh(script!, dir), '400', what);
  const tags = await shStatus(`curl -sS -o /dev/null -w '%{http_code}' '${server.url}/v2/e2e/refused/tags/list'`, dir);
  t.not(tags.stdout, '200');
  // the right digest, computed by sha256sum, is accepted
  const ok = await sh(
    `curl -sS -o /dev/null -w '%{http_code}' -T full.tar.gz "${api('e2e/refused/tags/ok')}?digest=sha256:$(sha256sum full.tar.gz | cut -d' ' -f1)"`,
    dir,
  );
  t.is(ok, '201');
});

test('skopeo copies a snapshot out of /v2 byte-identical (docker:// -> dir:)', async (t) => {
  const dir = join(work, 'skopeo');
  await mkdir(dir);
  const put = JSON.parse(await sh(`tar -C ${tree} -czf - . | curl -fsS -T - '${api('e2e/skopeo/tags/v7')}'`, dir)) as {
    manifestDigest: string;
    layer: { digest: string };
    configDigest: string;
  };
  const host = server.url.replace('http://', '');
  await sh(`skopeo copy --quiet --src-tls-verify=false docker://${host}/e2e/skopeo:v7 dir:${join(dir, 'copy')}`, dir);
  const files = await readdir(join(dir, 'copy'));
  const layerFile = put.layer.digest.slice('sha256:'.length);
  t.true(files.includes(layerFile));
  const copied = await readFile(join(dir, 'copy', layerFile));
  const served = Buffer.from(await (await fetch(api('e2e/skopeo/tags/v7/content'))).arrayBuffer());
  sameBytes(t, copied, served);
  const manifest = await readFile(join(dir, 'copy', 'manifest.json'));
  t.is(`sha256:${createHash('sha256').update(manifest).digest('hex')}`, put.manifestDigest);
  t.true(files.includes(put.configDigest.slice('sha256:'.length)));
});

function rssOf(pid: number): Promise<{ rss: number; hwm: number }> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => ({
    rss: Number(/VmRSS:\s+(\d+)/.exec(s)![1]) * 1024,
    hwm: Number(/VmHWM:\s+(\d+)/.exec(s)![1]) * 1024,
  }));
}

test('a 4 GiB snapshot uploads and downloads with flat server memory', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-curl-mem-'));
  const server2 = await spawnServer({ dataDir, env: { VOLREG_LOG_LEVEL: 'warn' } });
  try {
    const dir = join(dataDir, 'src');
    await mkdir(dir);
    const size = 4 * 1024 * 1024 * 1024;
    await writeFile(join(dir, 'big.img'), '');
    await truncate(join(dir, 'big.img'), size); // sparse: tar streams it fast, the server sees every byte
    // warm up so the baseline includes the loaded code paths
    await sh(`tar -C ${tree} -cf - . | curl -fsS -o /dev/null -T - '${server2.url}/api/v1/volumes/mem/warm/tags/v1'`);
    const pid = server2.child.pid!;
    const before = await rssOf(pid);
    const started = Date.now();
    const put = JSON.parse(await sh(`tar -C ${dir} -cf - big.img | curl -fsS -T - '${server2.url}/api/v1/volumes/mem/big/tags/v1'`)) as { layer: { size: number } };
    const upSeconds = (Date.now() - started) / 1000;
    t.true(put.layer.size > size);
    const afterUp = await rssOf(pid);
    const downStarted = Date.now();
    const digest = await sh(`curl -fsS '${server2.url}/api/v1/volumes/mem/big/tags/v1/content' | sha256sum`);
    const downSeconds = (Date.now() - downStarted) / 1000;
    t.is(digest.length > 64, true);
    const afterDown = await rssOf(pid);
    const mib = (n: number): number => Math.round(n / 1024 / 1024);
    t.log(
      `upload ${mib(put.layer.size)} MiB in ${upSeconds.toFixed(1)} s (${mib(put.layer.size / upSeconds)} MiB/s), download ${downSeconds.toFixed(1)} s; ` +
        `server RSS before ${mib(before.rss)} MiB, peak after upload ${mib(afterUp.hwm)} MiB, peak after download ${mib(afterDown.hwm)} MiB`,
    );
    // flat: the peak grows by far less than the body (4 GiB)
    t.true(afterDown.hwm - before.hwm < 160 * 1024 * 1024, `peak grew by ${mib(afterDown.hwm - before.hwm)} MiB`);
  } finally {
    server2.kill('SIGTERM');
    await server2.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
});


test("curl -T - with If-None-Match: * never replaces a snapshot (412, the tag kept); If-Match with the tag's digest replaces it, a stale one does not", async (t) => {
  const url = api('e2e/keep/tags/nightly');
  const first = JSON.parse(await sh(`tar -C ${tree} -czf - . | curl -fsS -T - -H 'If-None-Match: *' '${url}'`)) as { manifestDigest: string };
  const again = await shStatus(`head -c 8000000 /dev/urandom | curl -sS -o reply.json -w '%{http_code}' -T - -H 'If-None-Match: *' '${url}'`);
  t.is(again.stdout, '412', again.stderr);
  t.regex(await readFile(join(work, 'reply.json'), 'utf8'), /PRECONDITION_FAILED/);
  const kept = JSON.parse(await sh(`curl -fsS '${url}'`)) as { manifestDigest: string };
  t.is(kept.manifestDigest, first.manifestDigest, 'the first snapshot is still the tag');

  const stale = await shStatus(`tar -C ${tree} -cf - . | curl -sS -o /dev/null -w '%{http_code}' -T - -H 'If-Match: "sha256:${'1'.repeat(64)}"' '${url}'`);
  t.is(stale.stdout, '412');
  const moved = JSON.parse(await sh(`tar -C ${tree} -cf - . | curl -fsS -T - -H 'If-Match: "${first.manifestDigest}"' '${url}'`)) as { manifestDigest: string; compression: string };
  t.is(moved.compression, 'none');
  t.not(moved.manifestDigest, first.manifestDigest);
  t.is((JSON.parse(await sh(`curl -fsS '${url}'`)) as { manifestDigest: string }).manifestDigest, moved.manifestDigest);
});

test('curl -X DELETE with If-Match deletes a tag only while it holds that snapshot (a retention job never deletes a newer backup pushed to the tag)', async (t) => {
  const url = api('e2e/retention/tags/daily-mon');
  const old = JSON.parse(await sh(`tar -C ${tree} -czf - . | curl -fsS -T - '${url}'`)) as { manifestDigest: string };
  // the job judged `old` expired; meanwhile this week's backup reuses the tag
  const fresh = JSON.parse(await sh(`tar -C ${tree} -cf - . | curl -fsS -T - '${url}'`)) as { manifestDigest: string };
  t.not(fresh.manifestDigest, old.manifestDigest);
  const refused = await shStatus(`curl -sS -o reply.json -w '%{http_code}' -X DELETE -H 'If-Match: "${old.manifestDigest}"' '${url}'`);
  t.is(refused.stdout, '412', refused.stderr);
  t.regex(await readFile(join(work, 'reply.json'), 'utf8'), /PRECONDITION_FAILED/);
  t.is((JSON.parse(await sh(`curl -fsS '${url}'`)) as { manifestDigest: string }).manifestDigest, fresh.manifestDigest, 'the newer backup is kept');

  const deleted = JSON.parse(await sh(`curl -fsS -X DELETE -H 'If-Match: "${fresh.manifestDigest}"' '${url}'`)) as { deleted: { manifestDigest: string } };
  t.is(deleted.deleted.manifestDigest, fresh.manifestDigest);
  const gone = await shStatus(`curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H 'If-Match: "${fresh.manifestDigest}"' '${url}'`);
  t.is(gone.stdout, '404', 'a tag holding nothing is 404, as without the condition');
});
