import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { GcReport } from '../../src/maintenance/gc.ts';
import { storeMarkPath } from '../../src/storage/paths.ts';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, request } from '../helpers/oci-client.ts';
import { spawnServer, VOLREG_BIN, REPO_ROOT } from '../helpers/server.ts';

/**
 * `volreg gc` as an operator runs it: refused with a clear message while `volreg serve` holds the
 * embedded database, then a dry run and a real run on the stopped server's data directory, and
 * the server started again serves every tag whole.
 */

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function volreg(dataDir: string, args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
  env.VOLREG_DATA_DIR = dataDir;
  Object.assign(env, extraEnv);
  if (process.env.MONGODB_URL) {
    // the database spawnServer gives this data directory on a real MongoDB
    env.VOLREG_MONGODB_URL = process.env.MONGODB_URL;
    env.VOLREG_MONGODB_DATABASE = `volreg_spawn_${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}`;
  }
  return new Promise((resolve) => {
    execFile(process.execPath, [VOLREG_BIN, ...args], { env, cwd: REPO_ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('volreg gc: refused while serve holds the embedded database; dry run, then a run, on the stopped data directory', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-gc-cli-'));
  try {
    let server = await spawnServer({ dataDir });
    const config = configBlob();
    const layer = randomBlob(5000);
    const manifest = ociManifest({ config, layers: [layer] });
    const loose = randomBlob(3000);
    try {
      await pushBlobs(server.url, 'gc/cli', [config, layer, loose]);
      t.is((await putManifest(server.url, 'gc/cli', 'v1', manifest)).status, 201);
      t.is((await request(server.url, `/v2/gc/cli/blobs/${loose.digest}`, { method: 'DELETE' })).status, 202);

      const locked = await volreg(dataDir, ['gc', '--dry-run']);
      if (process.env.MONGODB_URL) {
        // a shared MongoDB has no lock: gc runs online beside the server
        t.is(locked.code, 0, locked.stderr);
      } else {
        t.is(locked.code, 1);
        t.regex(locked.stderr, /cannot open the embedded database in .*: a running volreg serve holds it/);
        t.regex(locked.stderr, /VOLREG_GC_INTERVAL/);
        t.is(locked.stdout, '');
      }
    } finally {
      server.kill('SIGTERM');
      t.is((await server.waitExit()).code, 0);
    }
    await new Promise((r) => setTimeout(r, 1100)); // unit times are whole seconds
    // as a store from a volreg before the mark: a dry run checks the binding and records nothing
    const mark = storeMarkPath(dataDir);
    const id = await readFile(mark, 'utf8');
    await unlink(mark);

    // the grace period: VOLREG_GC_GRACE as for serve (default an hour), unless --grace says otherwise
    const byDefault = JSON.parse((await volreg(dataDir, ['gc', '--dry-run', '--json'])).stdout) as GcReport;
    t.is(byDefault.blobUnits.count, 0, 'the loose blob is younger than the default hour');
    const byEnv = JSON.parse((await volreg(dataDir, ['gc', '--dry-run', '--json'], { VOLREG_GC_GRACE: '0' })).stdout) as GcReport;
    t.is(byEnv.blobUnits.count, 1, 'VOLREG_GC_GRACE=0 applies to volreg gc');
    const flagWins = JSON.parse((await volreg(dataDir, ['gc', '--dry-run', '--json', '--grace', '1h'], { VOLREG_GC_GRACE: '0' })).stdout) as GcReport;
    t.is(flagWins.blobUnits.count, 0, '--grace wins over VOLREG_GC_GRACE');

    const dry = await volreg(dataDir, ['gc', '--dry-run', '--json', '--grace', '0']);
    t.is(dry.code, 0, dry.stderr);
    const planned = JSON.parse(dry.stdout) as GcReport;
    t.true(planned.dryRun);
    t.is(planned.blobUnits.count, 1);
    t.deepEqual(planned.blobBytes, { count: 1, bytes: loose.size });
    t.is(planned.manifestUnits.count, 0);

    await t.throwsAsync(readFile(mark), { code: 'ENOENT' }, 'the dry runs wrote no mark');

    const human = await volreg(dataDir, ['gc', '--grace', '0s']);
    t.is(await readFile(mark, 'utf8'), id, 'a real run binds the store again, to the same database');
    t.is(human.code, 0, human.stderr);
    t.regex(human.stdout, /blob bytes\s+1\s+2\.9 KiB/);
    t.regex(human.stdout, /freed 2\.9 KiB/);

    const again = await volreg(dataDir, ['gc', '--json', '--grace', '0', '--delete-untagged']);
    t.is(again.code, 0, again.stderr);
    t.is((JSON.parse(again.stdout) as GcReport).freedBytes, 0, 'nothing left to collect');

    server = await spawnServer({ dataDir });
    try {
      const m = await getManifest(server.url, 'gc/cli', 'v1', ACCEPT_ALL);
      t.true(m.body.equals(manifest.bytes));
      for (const b of [config, layer]) t.true((await request(server.url, `/v2/gc/cli/blobs/${b.digest}`)).body.equals(b.bytes));
      t.is((await request(server.url, `/v2/gc/cli/blobs/${loose.digest}`)).status, 404);
    } finally {
      server.kill('SIGTERM');
      await server.waitExit();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('volreg gc: a blob a tagged manifest uses, gone from the store, is reported (exit 4) and nothing is deleted for it; uploading it again mends it', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-gc-missing-'));
  const config = configBlob();
  const layer = randomBlob(4000);
  const manifest = ociManifest({ config, layers: [layer] });
  const serve = async (work: (url: string) => Promise<void>): Promise<void> => {
    const server = await spawnServer({ dataDir });
    try {
      await work(server.url);
    } finally {
      server.kill('SIGTERM');
      t.is((await server.waitExit()).code, 0);
    }
  };
  try {
    await serve(async (url) => {
      await pushBlobs(url, 'gc/missing', [config, layer]);
      t.is((await putManifest(url, 'gc/missing', 'v1', manifest)).status, 201);
    });
    // lost at rest (a disk's fault, or an rm by hand)
    const hex = layer.digest.slice('sha256:'.length);
    await rm(join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));

    const dry = await volreg(dataDir, ['gc', '--dry-run', '--json', '--grace', '0']);
    t.is(dry.code, 4, dry.stderr);
    const found = JSON.parse(dry.stdout) as GcReport;
    t.deepEqual(found.missingBlobs, { count: 1, blobs: [{ digest: layer.digest, repositories: ['gc/missing'] }] });
    t.regex(dry.stderr, /missing from the blob store/, 'logged on stderr, leaving stdout one JSON document');

    const run = await volreg(dataDir, ['gc', '--grace', '0', '--delete-untagged']);
    t.is(run.code, 4, run.stderr);
    t.regex(run.stdout, new RegExp(`MISSING: 1 blobs that manifests use are not in the blob store[^\\n]*\\n    ${layer.digest}  used in gc/missing\\n`));
    t.regex(run.stdout, /manifest units\s+0\s/, 'the manifest that uses it stays');
    t.regex(run.stdout, /blob units\s+0\s/, 'and so does the blob record');

    await serve(async (url) => {
      t.is((await request(url, `/v2/gc/missing/blobs/${layer.digest}`, { method: 'HEAD' })).status, 404, 'HEAD says absent, so a client uploads it');
      await pushBlobs(url, 'gc/missing', [layer]);
      t.true((await request(url, `/v2/gc/missing/blobs/${layer.digest}`)).body.equals(layer.bytes));
    });
    const mended = await volreg(dataDir, ['gc', '--json', '--grace', '0']);
    t.is(mended.code, 0, mended.stderr);
    t.deepEqual((JSON.parse(mended.stdout) as GcReport).missingBlobs, { count: 0, blobs: [] });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('volreg gc: a bad --grace is a usage error', async (t) => {
  const r = await volreg('/nonexistent-volreg-dir', ['gc', '--grace', '1y']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--grace/);
});

test('volreg gc: --no-delete-untagged keeps untagged manifests where VOLREG_GC_DELETE_UNTAGGED is set; --delete-untagged takes them without it', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-gc-untagged-'));
  try {
    const config = configBlob();
    const layer = randomBlob(4000);
    const manifest = ociManifest({ config, layers: [layer] });
    let server = await spawnServer({ dataDir });
    try {
      await pushBlobs(server.url, 'gc/untagged', [config, layer]);
      t.is((await putManifest(server.url, 'gc/untagged', 'v1', manifest)).status, 201);
      t.is((await request(server.url, '/v2/gc/untagged/manifests/v1', { method: 'DELETE' })).status, 202, 'the tag goes, the manifest stays');
    } finally {
      server.kill('SIGTERM');
      t.is((await server.waitExit()).code, 0);
    }
    const untaggedBy = async (args: string[], env: Record<string, string> = {}): Promise<number> => {
      const r = await volreg(dataDir, ['gc', '--json', '--grace', '0', ...args], env);
      t.is(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as GcReport).untaggedManifests.count;
    };
    const byEnv = { VOLREG_GC_DELETE_UNTAGGED: 'true' };
    t.is(await untaggedBy(['--dry-run'], byEnv), 1, 'VOLREG_GC_DELETE_UNTAGGED applies to volreg gc');
    t.is(await untaggedBy(['--dry-run']), 0, 'by default untagged manifests stay');
    t.is(await untaggedBy(['--dry-run', '--delete-untagged']), 1);
    t.is(await untaggedBy(['--no-delete-untagged'], byEnv), 0, '--no-delete-untagged wins over the environment');

    server = await spawnServer({ dataDir });
    try {
      const kept = await getManifest(server.url, 'gc/untagged', manifest.digest, ACCEPT_ALL);
      t.is(kept.status, 200);
      t.true(kept.body.equals(manifest.bytes), 'the untagged manifest still pulls by digest');
      t.true((await request(server.url, `/v2/gc/untagged/blobs/${layer.digest}`)).body.equals(layer.bytes));
    } finally {
      server.kill('SIGTERM');
      await server.waitExit();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
