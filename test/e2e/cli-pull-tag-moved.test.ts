import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { describeTree } from '../helpers/tree.ts';

/**
 * A tag moved by another host's push while `volreg pull` of it is under way: the pull restores
 * the snapshot it resolved, whole, and never takes the other snapshot's bytes for damage; if
 * that snapshot's layer is gone meanwhile (garbage collection), it pulls the tag's new one.
 */
let server: TestServer;
let proxy: Server;
let proxyUrl = '';
let work = '';
/** run once, when the proxy has the reply to the tag's metadata and before passing it on (so the tests run one at a time) */
let onMetadata: (() => Promise<void>) | null = null;

async function pushSnapshot(dir: string, ref: string): Promise<void> {
  const [name, tag] = ref.split(':');
  const body = execFileSync('tar', ['-C', dir, '-czf', '-', '.']);
  const res = await fetch(`${server.url}/api/v1/volumes/${name}/tags/${tag}`, { method: 'PUT', body });
  if (res.status !== 201) throw new Error(`push of ${ref}: ${res.status} ${await res.text()}`);
}

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-pull-tag-moved' });
  work = await mkdtemp(join(tmpdir(), 'volreg-tag-moved-'));
  const upstream = new URL(server.url);
  // passes every request on; the reply to the tag's metadata waits for onMetadata
  proxy = createServer((req, res) => {
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      const hook = req.method === 'GET' && /^\/api\/v1\/volumes\/moved\/[^/]+\/tags\/latest$/.test(req.url ?? '') ? onMetadata : null;
      onMetadata = hook ? null : onMetadata;
      void (hook ? hook() : Promise.resolve()).then(() => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

test.after.always(async () => {
  proxy?.closeAllConnections();
  await new Promise((resolve) => proxy?.close(resolve));
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

test.serial('a pull whose tag another push moves meanwhile restores the snapshot it resolved, not the new one and not an integrity failure', async (t) => {
  const first = join(work, 'first');
  const second = join(work, 'second');
  await mkdir(first);
  await mkdir(second);
  await writeFile(join(first, 'data'), 'the snapshot the pull resolved\n');
  await writeFile(join(second, 'data'), 'a later backup, pushed to the same tag during the pull\n');
  await pushSnapshot(first, 'moved/vol:latest');
  let moved = false;
  onMetadata = async () => {
    await pushSnapshot(second, 'moved/vol:latest');
    moved = true;
  };

  const target = join(work, 'target');
  const run = await runVolreg(['pull', '-q', 'moved/vol:latest', target], { url: proxyUrl, cwd: work });
  t.true(moved, 'the tag moved between the pull resolving it and downloading');
  t.is(run.code, 0, run.stderr);
  t.deepEqual(await describeTree(target), await describeTree(first));

  // the next pull resolves the tag again, and gets the later backup
  const again = await runVolreg(['pull', '-q', '--force', 'moved/vol:latest', target], { url: proxyUrl, cwd: work });
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await describeTree(target), await describeTree(second));
});

test.serial('a pull whose resolved snapshot loses its layer meanwhile (the tag moved, gc took the old layer) pulls the tag\'s new snapshot, with a warning, not an integrity failure', async (t) => {
  const first = join(work, 'gc-first');
  const second = join(work, 'gc-second');
  await mkdir(first);
  await mkdir(second);
  await writeFile(join(first, 'data'), 'the snapshot the pull resolved, collected meanwhile\n');
  await writeFile(join(second, 'data'), 'the backup the tag holds now\n');
  await pushSnapshot(first, 'moved/collected:latest');
  const old = (await (await fetch(`${server.url}/api/v1/volumes/moved/collected/tags/latest`)).json()) as { layer: { digest: string } };
  let collected = false;
  onMetadata = async () => {
    await pushSnapshot(second, 'moved/collected:latest');
    // as garbage collection with --delete-untagged would, once nothing needs the old layer
    const res = await fetch(`${server.url}/v2/moved/collected/blobs/${old.layer.digest}`, { method: 'DELETE' });
    collected = res.status === 202;
  };

  const target = join(work, 'gc-target');
  const run = await runVolreg(['pull', '-q', 'moved/collected:latest', target], { url: proxyUrl, cwd: work });
  t.true(collected, 'the old layer was deleted between the pull resolving the tag and downloading');
  t.is(run.code, 0, run.stderr);
  t.regex(run.stderr, /moved\/collected:latest moved to another snapshot while this pull started \(sha256:[0-9a-f]{64}\); pulling that one/);
  t.deepEqual(await describeTree(target), await describeTree(second));
});
