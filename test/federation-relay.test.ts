// A federation hop relays before its disk sync (issue 15, item 3): a broker that receives a
// peer's packet delivers it to its own subscribers and forwards it on once the packet is in its
// store's index, and answers the peer (which keeps the packet until then) only after the durable
// write. B's store here is the real log store over the real file system, except that its
// fdatasync waits while the test holds it; A, B and C are real brokers on loopback.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { LINK_PUTS_QUEUED } from '../broker/server/peers.js';
import { openLogStore } from '../broker/store/log-store.js';
import * as realStore from '../broker/store.js';
import type { StoreOptions } from '../broker/store.js';
import type { PeerOptions } from '../broker/options.js';
import { decodePacket } from '../src/index.js';
import { withMethods } from './helpers/file-handles.js';
import { freePort, packetOf, peer, publishAll, until } from './helpers/federation.js';
import { startMosquitto } from './helpers/mosquitto.js';

/** B's disk syncs: while `held`, each waits until release(); `waiting` counts those waiting now. */
const gate = {
  held: false,
  waiting: 0,
  synced: 0,
  releases: [] as (() => void)[],
  release(): void {
    this.held = false;
    for (const r of this.releases.splice(0)) r();
  },
};
/** Data directories whose stores get the held fdatasync. */
const gated: string[] = [];
const gatedFs: typeof fsp = {
  ...fsp,
  open: async (...a: Parameters<typeof fsp.open>) => {
    const fh = await fsp.open(...a);
    return withMethods(fh, {
      datasync: async () => {
        if (gate.held) {
          gate.waiting++;
          await new Promise<void>((r) => gate.releases.push(r));
          gate.waiting--;
        }
        await fh.datasync();
        gate.synced++;
      },
    });
  },
};

async function brokers(t: Test): Promise<typeof import('../broker/server.js').createBroker> {
  const { createBroker } = await t.mockImport<typeof import('../broker/server.js')>('../broker/server.js', {
    '../broker/store.js': { ...realStore, openStore: (o: StoreOptions) => (gated.some((d) => o.dir.startsWith(d)) ? openLogStore(o, gatedFs) : realStore.openStore(o)) },
  });
  return createBroker;
}

t.test("a hop delivers and forwards a peer's packet before its disk sync, and answers the peer after it", async (t) => {
  const createBroker = await brokers(t);
  const bDir = mkdtempSync(join(tmpdir(), 'qis-relay-b-'));
  gated.push(bDir);
  const dirs = [mkdtempSync(join(tmpdir(), 'qis-relay-a-')), mkdtempSync(join(tmpdir(), 'qis-relay-c-'))];
  t.teardown(() => {
    for (const d of [...dirs, bDir]) rmSync(d, { recursive: true, force: true });
  });
  const start = async (name: string, port: number, dataDir: string, peers: PeerOptions[]) => {
    const b = await createBroker(
      {
        listeners: [{ type: 'tcp', host: '127.0.0.1', port }],
        dataDir,
        verifyWorkers: 0,
        fsync: 'always',
        federation: { region: name, peers, reconnect: { baseMs: 100, capMs: 1000 }, linksFrom: ['127.0.0.1', '::1'] },
      },
      { logger: pino({ level: process.env['QIS_TEST_LOG'] ?? 'silent' }) },
    );
    t.teardown(async () => {
      gate.release();
      await b.close();
    });
    return b;
  };
  // A → B → C: A links to B, B links to C.
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  const c = await start('c', pc, dirs[1] as string, []);
  const b = await start('b', pb, bDir, [peer(pc)]);
  const a = await start('a', pa, dirs[0] as string, [peer(pb)]);
  const linked = (x: typeof a) => x.federation?.status().every((s) => s.connected && s.catchUps >= 1) ?? false;
  await until(() => linked(a) && linked(b), 'A → B and B → C linked and caught up');

  const got = { b: [] as number[], c: [] as number[] };
  for (const [port, list] of [
    [pb, got.b],
    [pc, got.c],
  ] as const) {
    const s = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: `sub-${port}`, reconnectPeriod: 0 });
    t.teardown(() => s.endAsync(true));
    s.on('message', (_topic, payload) => list.push(decodePacket(payload).seq));
    await s.subscribeAsync('qis/1/o/#', { qos: 1 });
  }
  const pending = async (): Promise<number> => Number(/^qis_federation_pending\{peer="[^"]*"\} (\d+)$/m.exec(await a.metricsText())?.[1] ?? 0);
  t.equal(await pending(), 0, "nothing unacknowledged on A's link before the publish (the gauge is absent until set)");

  gate.held = true;
  const p = packetOf(1, 77, 5);
  await publishAll(`mqtt://127.0.0.1:${pa}`, [p]); // A acknowledged it: durable at A
  await until(() => got.b.includes(5), "B's subscriber got the packet");
  await until(() => got.c.includes(5), "C's subscriber got it from B");
  t.ok(gate.waiting >= 1, `B's disk sync is still held (${gate.waiting} waiting): B delivered and forwarded before it`);
  t.equal(c.store.get(p.topic.split('/')[3] as string, decodePacket(p.packet).nodeId)?.seq, 5, 'C stored it');
  t.equal(await pending(), 1, "A's forward is not acknowledged while B's write is not durable");

  // A's next batch (a second packet goes at once: one batch is unanswered) is admitted at B
  // behind the first once that one is relayed, not once it is durable.
  const q = packetOf(2, 77, 6);
  await publishAll(`mqtt://127.0.0.1:${pa}`, [q]);
  await until(() => got.b.includes(6) && got.c.includes(6), "B's and C's subscribers got the second packet");
  t.ok(gate.waiting >= 1, "B's disk sync is still held: the second batch did not wait for the first one's");
  t.equal(await pending(), 2, "A's two forwards are both unacknowledged");

  const synced = gate.synced;
  gate.release();
  await until(async () => (await pending()) === 0, "A's forward acknowledged once B's sync is done");
  t.ok(gate.synced > synced, 'B synced before it answered');
  t.equal(b.store.get(p.topic.split('/')[3] as string, decodePacket(p.packet).nodeId)?.seq, 5, 'B holds it');
  t.same(got.b, [5, 6], 'B delivered each packet once');
});

t.test('batches a held disk keeps unanswered are bounded: past LINK_PUTS_QUEUED a batch is answered at once, for a retry', async (t) => {
  const createBroker = await brokers(t);
  const dir = mkdtempSync(join(tmpdir(), 'qis-relay-bound-'));
  gated.push(dir);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const b = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port }], dataDir: dir, verifyWorkers: 0, fsync: 'always', federation: { region: 'b', peers: [], linksFrom: ['127.0.0.1', '::1'] } },
    { logger: pino({ level: process.env['QIS_TEST_LOG'] ?? 'silent' }) },
  );
  t.teardown(async () => {
    gate.release();
    await b.close();
  });
  // A link of region x that sends batch after batch without waiting for answers (a peer should keep 2 unanswered).
  const link = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'qis-fed-x-0', reconnectPeriod: 0 });
  t.teardown(() => link.endAsync(true));
  const answers = new Map<string, { stored: number; refused: number; retry: number[] }>();
  link.on('message', (_t, payload) => {
    const a = JSON.parse(payload.toString()) as { id: string; stored: number; refused: number; retry: number[] };
    answers.set(a.id, a);
  });
  await link.subscribeAsync('qis/1/f/res/qis-fed-x-0', { qos: 0 });
  const n = LINK_PUTS_QUEUED + 6;
  const put = (i: number): void => {
    const p = packetOf(i, 91, 1);
    link.publish('qis/1/f/req/qis-fed-x-0', JSON.stringify({ id: `p${i}`, op: 'put', items: [[p.topic, Buffer.from(p.packet).toString('base64')]] }), { qos: 0 });
  };
  gate.held = true;
  for (let i = 0; i < LINK_PUTS_QUEUED; i++) put(i);
  await until(() => b.store.size === LINK_PUTS_QUEUED, 'the first batches relayed (in the index) while the disk is held');
  t.equal(answers.size, 0, 'none of them answered: not durable yet');
  // Relayed but not durable, they still hold their places: six more are over the bound.
  for (let i = LINK_PUTS_QUEUED; i < n; i++) put(i);
  await until(() => answers.size >= 6, 'six answers');
  t.ok(gate.waiting >= 1, 'the disk sync is still held');
  t.same([...answers.keys()].sort(), ['p64', 'p65', 'p66', 'p67', 'p68', 'p69'], 'the batches past the bound, answered at once');
  t.ok([...answers.values()].every((a) => a.stored === 0 && a.refused === 1 && a.retry[0] === 0), 'each refused for a retry (transient)');
  t.equal(b.store.size, LINK_PUTS_QUEUED, 'the six were not admitted');
  gate.release();
  await until(() => answers.size === n, 'every batch answered');
  t.equal([...answers.values()].filter((a) => a.stored === 1).length, LINK_PUTS_QUEUED, 'the queued batches stored, answered once durable');
});

t.test("a peer's packet is not relayed ahead of an earlier packet or tombstone of its key that waits for its sync", async (t) => {
  const createBroker = await brokers(t);
  // B's other link goes to a Mosquitto region, which keeps whatever arrives last (no seq check).
  const m = await startMosquitto();
  t.teardown(() => m.stop());
  const dir = mkdtempSync(join(tmpdir(), 'qis-relay-order-'));
  gated.push(dir);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const b = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port }], dataDir: dir, verifyWorkers: 0, fsync: 'always', federation: { region: 'b', peers: [peer(m.port)], reconnect: { baseMs: 100, capMs: 1000 }, linksFrom: ['127.0.0.1', '::1'] } },
    { logger: pino({ level: process.env['QIS_TEST_LOG'] ?? 'silent' }) },
  );
  t.teardown(async () => {
    gate.release();
    await b.close();
  });
  await until(() => b.federation?.status().every((s) => s.connected && s.catchUps >= 1) ?? false, 'B linked to the Mosquitto region');
  const url = `mqtt://127.0.0.1:${port}`;
  const got = new Map<string, string[]>(); // topic → what B's subscriber saw, in order ("5", "5del")
  const sub = await mqtt.connectAsync(url, { clientId: 'order-sub', reconnectPeriod: 0 });
  t.teardown(() => sub.endAsync(true));
  sub.on('message', (topic, payload) => {
    const d = decodePacket(payload);
    got.set(topic, [...(got.get(topic) ?? []), `${d.seq}${d.del ? 'del' : ''}`]);
  });
  await sub.subscribeAsync('qis/1/o/#', { qos: 1 });
  const link = await mqtt.connectAsync(url, { clientId: 'qis-fed-x-0', reconnectPeriod: 0 });
  t.teardown(() => link.endAsync(true));
  const answers = new Set<string>();
  link.on('message', (_t, payload) => answers.add((JSON.parse(payload.toString()) as { id: string }).id));
  await link.subscribeAsync('qis/1/f/res/qis-fed-x-0', { qos: 0 });
  const enc = (p: { topic: string; packet: Uint8Array }): string[] => [p.topic, Buffer.from(p.packet).toString('base64')];
  const put = (id: string, ...items: { topic: string; packet: Uint8Array }[]): void => void link.publish('qis/1/f/req/qis-fed-x-0', JSON.stringify({ id, op: 'put', items: items.map(enc) }), { qos: 0 });
  const node = await mqtt.connectAsync(url, { clientId: 'order-node', reconnectPeriod: 0 });
  t.teardown(() => node.endAsync(true));
  /** What the Mosquitto region retains on `topic` (its first message on subscribing). */
  const retainedAtMosquitto = async (topic: string): Promise<string> => {
    const r = await mqtt.connectAsync(`mqtt://127.0.0.1:${m.port}`, { clientId: `reader-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 0 });
    try {
      const first = new Promise<string>((res) => r.once('message', (_t, p) => res(`${decodePacket(p).seq}${decodePacket(p).del ? 'del' : ''}`)));
      await r.subscribeAsync(topic, { qos: 1 });
      return await first;
    } finally {
      await r.endAsync(true);
    }
  };
  const forwarded = async (): Promise<number> => Number(/^qis_federation_forwarded_total\{peer="[^"]*",direction="out"\} (\d+)$/m.exec(await b.metricsText())?.[1] ?? 0);

  for (const del of [false, true]) {
    const what = del ? 'tombstone' : 'packet';
    // A node's seq 5 (a packet, or its withdrawal) from its client waits for B's held sync; the
    // same node's seq 6 comes from a peer meanwhile and is in B's index at once.
    const salt = del ? 62 : 61;
    const p5 = packetOf(1, salt, 5, { del });
    const p6 = packetOf(1, salt, 6);
    const tpl = p6.topic.split('/')[3] as string;
    const nodeId = decodePacket(p6.packet).nodeId;
    const out0 = await forwarded();
    gate.held = true;
    const acked = node.publishAsync(p5.topic, Buffer.from(p5.packet), { qos: 1, retain: true });
    await until(() => b.store.seqOf(tpl, nodeId) === 5, `the client's ${what} 5 in B's index`);
    put(`${what}6`, p6);
    await until(() => b.store.seqOf(tpl, nodeId) === 6, "the peer's packet 6 in B's index");
    gate.release();
    await acked;
    await until(() => answers.has(`${what}6`) && (got.get(p6.topic) ?? []).includes('6'), 'both out');
    await until(async () => (await forwarded()) >= out0 + 2, 'both forwarded to the Mosquitto region');
    t.same(got.get(p6.topic), [del ? '5del' : '5', '6'], `B's subscriber got the ${what} 5, then the packet 6`);
    t.equal(await retainedAtMosquitto(p6.topic), '6', 'the Mosquitto region retains the packet 6, which came last');
  }

  // The same two in one group commit: an unrelated packet's sync is held first, so the client's 5
  // and the peer's 6 (not relayed early: 5 waits) are made durable together and go out in one
  // turn. The client's 5 is delivered then, not a turn later after its PUBACK is written.
  for (const del of [false, true]) {
    const what = del ? 'tombstone' : 'packet';
    const salt = del ? 72 : 71;
    const x = packetOf(2, salt, 1);
    const p5 = packetOf(1, salt, 5, { del });
    const p6 = packetOf(1, salt, 6);
    const tpl = p6.topic.split('/')[3] as string;
    const nodeId = decodePacket(p6.packet).nodeId;
    gate.held = true;
    const ackX = node.publishAsync(x.topic, Buffer.from(x.packet), { qos: 1, retain: true });
    await until(() => gate.waiting >= 1, "an unrelated packet's sync held");
    const acked = node.publishAsync(p5.topic, Buffer.from(p5.packet), { qos: 1, retain: true });
    await until(() => b.store.seqOf(tpl, nodeId) === 5, `the client's ${what} 5 in B's index`);
    put(`same-${what}`, p6);
    await until(() => b.store.seqOf(tpl, nodeId) === 6, "the peer's packet 6 in B's index");
    gate.release();
    await Promise.all([ackX, acked]);
    await until(() => (got.get(p6.topic) ?? []).length === 2, 'both delivered');
    t.same(got.get(p6.topic), [del ? '5del' : '5', '6'], `one group commit: B's subscriber got the ${what} 5, then the packet 6`);
  }

  // One batch from the peer with both: a tombstone 5 and the packet 6 of one node (it withdrew and
  // published again in the same bucket). They are admitted together; the tombstone goes out first.
  const t5 = packetOf(1, 63, 5, { del: true });
  const p6 = packetOf(1, 63, 6);
  const out0 = await forwarded();
  put('batch', t5, p6);
  await until(() => answers.has('batch') && (got.get(p6.topic) ?? []).length === 2, 'the batch answered and both delivered');
  await until(async () => (await forwarded()) >= out0 + 2, 'both forwarded to the Mosquitto region');
  t.same(got.get(p6.topic), ['5del', '6'], "B's subscriber got the tombstone, then the packet");
  t.equal(await retainedAtMosquitto(p6.topic), '6', 'the Mosquitto region retains the packet 6');
});
