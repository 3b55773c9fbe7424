import { Writable } from 'node:stream';
import test from 'ava';
import { pino } from 'pino';
import { startTestServerBehindProxy } from '../helpers/server.ts';
import { raw } from './blobs-client.ts';

/**
 * A MongoDB client that has lost its database while the database answers others
 * (src/metadata/client-watchdog.ts): the proxy cuts the client's connections and stalls its
 * server monitor's, whose heartbeat then never ends (here for connectTimeoutMS, 10 minutes), as
 * seen after a kill -9 of the database on a loaded machine.
 */

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function wedged(reopenAfter: string): Promise<{ readyAfterMs: number | undefined; lines: Array<Record<string, unknown>>; answersAgain: number }> {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
      done();
    },
  });
  const server = await startTestServerBehindProxy(
    `metadata-client-reopen-${reopenAfter}`,
    { connectTimeoutMS: 600_000, serverSelectionTimeoutMS: 2000 },
    { env: { VOLREG_MONGODB_REOPEN_AFTER: reopenAfter }, logger: pino({ level: 'info' }, sink) },
  );
  try {
    if ((await raw(server.url, 'GET', '/v2/reopen/tags/list')).status !== 404) throw new Error('the server did not answer before the wedge');
    server.proxy.wedgeMonitor();
    const during = await raw(server.url, 'GET', '/v2/reopen/tags/list');
    if (during.status !== 503) throw new Error(`while wedged, a request answered ${during.status}, not 503`);
    const started = Date.now();
    let readyAfterMs: number | undefined;
    while (Date.now() - started < 10_000) {
      if ((await raw(server.url, 'GET', '/readyz')).status === 200) {
        readyAfterMs = Date.now() - started;
        break;
      }
      await sleep(200);
    }
    const answersAgain = (await raw(server.url, 'GET', '/v2/reopen/tags/list')).status;
    return { readyAfterMs, lines, answersAgain };
  } finally {
    await server.close();
  }
}

test('a MongoDB client that has lost its database while the database answers others is reopened, and requests work again', async (t) => {
  const { readyAfterMs, lines, answersAgain } = await wedged('2');
  t.truthy(readyAfterMs, 'ready again within 10 s');
  t.log(`ready again after ${readyAfterMs} ms`);
  t.is(answersAgain, 404, 'an ordinary request answers again');
  const reopened = lines.find((l) => typeof l['msg'] === 'string' && /while a new client does: reopening it/.test(l['msg']));
  t.truthy(reopened, 'the reopening is logged');
  t.is(reopened?.['level'], 50, 'as an error');
  // the log says how the client stood: its monitor's heartbeat started and never ended
  const h = reopened?.['heartbeats'] as Record<string, number | null>;
  t.is(typeof h['runningForSeconds'], 'number', JSON.stringify(h));
  t.is(h['runningForSeconds'], h['lastStartedSecondsAgo'], JSON.stringify(h));
  t.truthy(lines.find((l) => l['msg'] === 'the MongoDB client is open again'));
});

test('with VOLREG_MONGODB_REOPEN_AFTER=0 the same client stays lost: what reopens it is the watchdog', async (t) => {
  const { readyAfterMs, lines, answersAgain } = await wedged('0');
  t.is(readyAfterMs, undefined, 'still not ready after 10 s');
  t.is(answersAgain, 503);
  t.false(lines.some((l) => typeof l['msg'] === 'string' && /reopening it/.test(l['msg'])));
});
