import test, { type ExecutionContext } from 'ava';
import type { CommandStartedEvent } from 'mongodb';
import { configBlob, ociManifest, randomBlob, MT, type Built } from '../helpers/manifest-fixtures.ts';
import { getManifest, pushBlob, putManifest, repoName, request, type Reply } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * What each kind of request asks the database, command by command: every command costs CPU on
 * both sides of the driver's wire, so one more on a hot path is a change to make on purpose.
 * With the embedded engine's change marks (as `volreg serve` runs) the whole sequence is
 * pinned; on another backend, where every read goes to the database, the writes are.
 */

let server: TestServer;
const sent: string[] = [];
/** the driver's own (handshakes, monitoring, sessions), not the service's */
const DRIVER_OWN = new Set(['hello', 'isMaster', 'ismaster', 'endSessions', 'ping', 'buildInfo']);
const WRITES = new Set(['insert', 'update', 'delete', 'findAndModify']);

test.before(async () => {
  server = await startTestServer({
    label: 'http_metadata_commands',
    // no timer of the server's own sends anything meanwhile
    env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0', VOLREG_GC_INTERVAL: '0' },
    mongoVia: { uri: (u) => u, options: { monitorCommands: true } },
  });
  server.db.client.on('commandStarted', (e: CommandStartedEvent) => {
    if (!DRIVER_OWN.has(e.commandName)) sent.push(`${e.commandName} ${String(e.command[e.commandName])}`);
  });
});
test.after.always(async () => {
  await server?.close();
});

/** The commands `send` made the server send, as `<command> <collection>`, checked against `expected`. */
async function asks(t: ExecutionContext, what: string, send: () => Promise<Reply>, status: number, expected: string[]): Promise<void> {
  sent.length = 0;
  const reply = await send();
  t.is(reply.status, status, `${what}: ${reply.body.toString()}`);
  const got = [...sent];
  if (server.changeMarks) t.deepEqual(got, expected, what);
  else t.deepEqual(got.filter(isWrite), expected.filter(isWrite), `${what} (writes)`);
}

const isWrite = (c: string): boolean => WRITES.has(c.split(' ')[0]!);

const put = (repo: string, reference: string, m: Built) => () => putManifest(server.url, repo, reference, m);

test.serial('a manifest push, pull and HEAD by tag and by digest ask the database only what they must', async (t) => {
  const repo = repoName('commands-manifests');
  const config = configBlob();
  const layer = randomBlob(256);
  for (const b of [config, layer]) await pushBlob(server.url, repo, b);
  const image = (n: number) => ociManifest({ config, layers: [layer], annotations: { n: String(n) } });
  const [a, b, c] = [image(1), image(2), image(3)];

  await asks(t, 'push by tag: a new manifest, a new tag', put(repo, 'v1', a), 201, [
    'findAndModify units_docker_manifest',
    'update repo_content_units',
    'findAndModify units_docker_tag',
    'update repo_content_units',
    'update repos',
  ]);
  await asks(t, 'push by tag: a new manifest, the tag moved', put(repo, 'v1', b), 201, [
    'findAndModify units_docker_manifest',
    'update repo_content_units',
    'findAndModify units_docker_tag',
    'update repo_content_units',
    'update repos',
  ]);
  await asks(t, 'push by tag: the same manifest again', put(repo, 'v1', b), 201, [
    'findAndModify units_docker_manifest',
    'update repo_content_units',
    'findAndModify units_docker_tag',
    'update repo_content_units',
  ]);
  await asks(t, 'push by digest', put(repo, c.digest, c), 201, ['findAndModify units_docker_manifest', 'update repo_content_units', 'update repos']);

  await asks(t, 'first pull by tag', () => getManifest(server.url, repo, 'v1', MT.ociManifest), 200, ['find units_docker_tag']);
  await asks(t, 'pull by tag again', () => getManifest(server.url, repo, 'v1', MT.ociManifest), 200, []);
  await asks(t, 'HEAD by tag', () => getManifest(server.url, repo, 'v1', MT.ociManifest, 'HEAD'), 200, []);
  await asks(t, 'pull by digest', () => getManifest(server.url, repo, c.digest, MT.ociManifest), 200, []);
  await asks(t, 'HEAD by digest', () => getManifest(server.url, repo, a.digest, MT.ociManifest, 'HEAD'), 200, []);
});

test.serial('a blob upload asks its record and association (and the tally of a new one), a HEAD nothing once known', async (t) => {
  const repo = repoName('commands-blobs');
  const first = randomBlob(300);
  const upload = (bytes: Buffer, digest: string) => () =>
    request(server.url, `/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: bytes });

  await asks(t, 'upload to a new repository', upload(first.bytes, first.digest), 201, [
    'update repos',
    'findAndModify units_docker_blob',
    'update repo_content_units',
    'update repos',
  ]);
  const second = randomBlob(300);
  await asks(t, 'upload of a new blob', upload(second.bytes, second.digest), 201, ['findAndModify units_docker_blob', 'update repo_content_units', 'update repos']);
  await asks(t, 'upload of a blob the repository holds', upload(second.bytes, second.digest), 201, ['findAndModify units_docker_blob', 'update repo_content_units']);
  await asks(t, 'HEAD', () => request(server.url, `/v2/${repo}/blobs/${second.digest}`, { method: 'HEAD' }), 200, []);
});
