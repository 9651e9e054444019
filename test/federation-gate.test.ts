// Federation is for configured peers (issue 13): a client from an address that is no peer's host
// and not in federation.linksFrom is refused on qis/1/f/ (publish and subscribe), whatever client
// id it chooses; a configured address gets its answer.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { createBroker } from '../broker/server.js';
import { freePort } from './helpers/federation.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-fed-gate-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function broker(linksFrom: string[]): Promise<{ url: string; close: () => Promise<void> }> {
  const port = await freePort();
  const b = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port }], dataDir: mkdtempSync(join(dir, 'b-')), verifyWorkers: 0, fsync: 'never', federation: { region: 'g', peers: [], linksFrom } },
    { logger: pino({ level: 'silent' }) },
  );
  return { url: `mqtt://127.0.0.1:${port}`, close: () => b.close() };
}

/** A root request from a link client id: the answer's payload, or 'closed' when the broker hung up. */
async function askRoot(url: string): Promise<{ sub: number; answer: string }> {
  const id = 'qis-fed-stranger-0';
  const c = await mqtt.connectAsync(url, { clientId: id, reconnectPeriod: 0, protocolVersion: 4 });
  try {
    // mqtt.js 5 rejects a SUBACK 0x80.
    const granted = await c.subscribeAsync(`qis/1/f/res/${id}`, { qos: 1 }).catch((e: Error) => (/Subscribe error/.test(e.message) ? [{ qos: 128 }] : Promise.reject(e)));
    const answer = new Promise<string>((resolve) => {
      c.on('message', (_t, p) => resolve(p.toString()));
      c.on('close', () => resolve('closed'));
    });
    c.publish(`qis/1/f/req/${id}`, JSON.stringify({ id: 'r1', op: 'root', scope: '*' }), { qos: 1 });
    return { sub: granted[0]?.qos ?? -1, answer: await answer };
  } finally {
    c.end(true);
  }
}

t.test('a link client from an address no peer has: SUBACK 0x80 on qis/1/f/, its request closes the connection', async (t) => {
  const b = await broker(['192.0.2.1']); // TEST-NET address: never ours, never contacted
  t.teardown(() => b.close());
  const r = await askRoot(b.url);
  t.equal(r.sub, 128, 'subscription to its answer topic refused');
  t.equal(r.answer, 'closed', 'request refused (ERR_NOT_AUTHORIZED closes the connection)');
});

t.test('a link client from a configured address gets its answer', async (t) => {
  const b = await broker(['127.0.0.1', '::1']);
  t.teardown(() => b.close());
  const r = await askRoot(b.url);
  t.equal(r.sub, 1);
  t.match(JSON.parse(r.answer), { id: 'r1', n: 0 });
});
