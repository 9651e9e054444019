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
import { storeDigest } from '../broker/federation.js';
import { DIGEST_SLICE, digestReady } from '../broker/federation/digest.js';
import type { Store } from '../broker/store.js';
import { b32, createOutcomePacket, keyFromSeed } from '../src/index.js';
import { bearing, situation } from './helpers/fixtures.js';
import { freePort } from './helpers/federation.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-fed-gate-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function broker(linksFrom: string[]): Promise<{ url: string; store: Store; close: () => Promise<void> }> {
  const port = await freePort();
  const b = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port }], dataDir: mkdtempSync(join(dir, 'b-')), verifyWorkers: 0, fsync: 'never', federation: { region: 'g', peers: [], linksFrom } },
    { logger: pino({ level: 'silent' }) },
  );
  return { url: `mqtt://127.0.0.1:${port}`, store: b.store, close: () => b.close() };
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

t.test('a root request on a store bigger than a digest slice: answered once the index is built in slices, with the store\'s root', async (t) => {
  const b = await broker(['127.0.0.1', '::1']);
  t.teardown(() => b.close());
  // One real signed packet under many synthetic node ids: the store does not verify (admission does).
  const real = createOutcomePacket({ key: keyFromSeed(new Uint8Array(32).fill(7)), template: bearing, situation, outcome: 'failure', conf: 0.9, ctx: { rpm: 1480 }, seq: 1, ts: 1_795_000_000_000 });
  const n = DIGEST_SLICE * 2 + 100;
  const puts: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const id = new Uint8Array(16);
    new DataView(id.buffer).setUint32(0, 0x5eed0000 + i);
    const nodeId = b32(id);
    puts.push(b.store.put({ tplId: real.address.tplId, nodeId, topic: real.topic.replace(/[^/]+$/, nodeId), seq: 1, packet: real.packet }));
  }
  await Promise.all(puts);
  const r = await askRoot(b.url);
  const answer = JSON.parse(r.answer) as { id: string; root: string; n: number };
  t.equal(answer.n, n, 'every key counted');
  t.equal(answer.root, storeDigest(b.store), 'the root of a digest computed afresh');
  t.equal(digestReady(b.store), undefined, 'the index is up to date after it');
});
