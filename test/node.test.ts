// The edge node runtime against real brokers over loopback TCP: one compliance suite, run on a
// real Mosquitto (keeps the sync marker's order) and on plain Aedes (does not: quiet period).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import {
  address,
  createNode,
  createOutcomePacket,
  keyFromSeed,
  signPacket,
  outcomeTopic,
  type QisNode,
  type QueryResult,
  type Situation,
} from '../src/index.js';
import { startAedes } from './helpers/aedes.js';
import { bearing } from './helpers/fixtures.js';
import { startMosquitto } from './helpers/mosquitto.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { prng } from './helpers/prng.js';

interface Broker {
  readonly url: string;
  close(): Promise<void>;
}

const BROKERS: Record<string, { start: () => Promise<Broker>; kind: string; completeness: string }> = {
  mosquitto: {
    kind: 'mosquitto',
    completeness: 'sync',
    start: async () => {
      const m = await startMosquitto();
      return { url: `mqtt://127.0.0.1:${m.port}`, close: () => m.stop() };
    },
  },
  'qis broker': {
    kind: 'qis',
    completeness: 'sync',
    start: async () => {
      const b = await startQisBroker();
      return { url: b.url, close: () => b.close() };
    },
  },
  'plain Aedes': {
    kind: 'unknown',
    completeness: 'quiet-period',
    start: async () => {
      const a = await startAedes();
      return { url: a.url, close: () => a.close() };
    },
  },
};

// Three cohorts: A and B differ only in the least significant field, C also in the load bin.
const A: Situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
const B: Situation = { ...A, sealed: false };
const C: Situation = { ...A, load_kn: 120 };
const COHORTS = { A, B, C } as const;
type Name = keyof typeof COHORTS;

const seedOf = (i: number): Uint8Array => {
  const s = new Uint8Array(32);
  new DataView(s.buffer).setUint32(0, 0x51500000 + i);
  return s;
};

const ids = (r: QueryResult): string[] => r.packets.map((p) => p.nodeId).sort();
const labelCounts = (r: QueryResult): Record<string, number> => {
  const s = r.synthesis;
  if (s.kind !== 'category') throw new Error(`expected a category synthesis, got ${s.kind}`);
  return Object.fromEntries(Object.entries(s.labels).map(([l, v]) => [l, v.count]));
};

for (const [brokerName, spec] of Object.entries(BROKERS)) {
  t.test(`node on ${brokerName}`, async (t) => {
    const broker = await spec.start();
    const root = mkdtempSync(join(tmpdir(), 'qis-node-'));
    const nodes: QisNode[] = [];
    t.teardown(async () => {
      await Promise.all(nodes.map((n) => n.close()));
      await broker.close();
      rmSync(root, { recursive: true, force: true });
    });
    const rnd = prng(7);
    const members: Record<Name, string[]> = { A: [], B: [], C: [] };
    const expected: Record<Name, Record<string, number>> = { A: {}, B: {}, C: {} };
    const names: Name[] = ['A', 'B', 'C'];
    // 60 nodes, each with its own key and data directory, 20 per cohort.
    for (let i = 0; i < 60; i++) {
      const name = names[i % 3] as Name;
      const node = await createNode({ url: broker.url, dataDir: join(root, `n${i}`), key: keyFromSeed(seedOf(i)), reconnect: { baseMs: 50, capMs: 500 } });
      nodes.push(node);
      members[name].push(node.nodeId);
    }
    const outcomes: string[] = [];
    await Promise.all(
      nodes.map(async (node, i) => {
        const name = names[i % 3] as Name;
        const out = rnd() < 0.3 ? 'failure' : 'no_failure';
        outcomes[i] = out;
        expected[name][out] = (expected[name][out] ?? 0) + 1;
        const r = await node.publish(bearing, COHORTS[name], out, { ctx: { rpm: 1000 + i } });
        if (!r.acked) throw new Error(`node ${i} was not acknowledged`);
      }),
    );
    const querier = nodes[0] as QisNode;

    t.test('query - returns exactly each cohort, verified, with its synthesis', async (t) => {
      for (const name of names) {
        const r = await querier.query(bearing, COHORTS[name], { minCohort: 1 });
        t.same(ids(r), [...members[name]].sort(), `cohort ${name}: exactly its 20 nodes`);
        t.equal(r.broker, spec.kind, 'broker kind detected');
        t.equal(r.completeness, spec.completeness, 'completeness says how the end was known');
        t.same(r.dropped, {}, 'nothing dropped');
        t.same(labelCounts(r), { failure: expected[name]['failure'] ?? 0, no_failure: expected[name]['no_failure'] ?? 0 }, 'label counts');
      }
    });

    t.test('query - widen returns the coarser union', async (t) => {
      const w1 = await querier.query(bearing, A, { widen: 1, minCohort: 1 });
      t.same(ids(w1), [...members.A, ...members.B].sort(), 'widen 1: A ∪ B (sealed dropped)');
      t.equal(w1.filter.endsWith('/#'), true, 'a # filter');
      const w2 = await querier.query(bearing, A, { widen: 2, minCohort: 1 });
      t.same(ids(w2), [...members.A, ...members.B, ...members.C].sort(), 'widen 2: A ∪ B ∪ C');
      await t.rejects(querier.query(bearing, A, { widen: 5 }), { code: 'ERR_INVALID_ARGUMENT' });
    });

    t.test('query - below minCohort the answer is insufficient evidence with the count', async (t) => {
      const r = await querier.query(bearing, A, { minCohort: 21 });
      t.equal(r.synthesis.kind, 'insufficient');
      if (r.synthesis.kind === 'insufficient') t.equal(r.synthesis.count, 20);
      const empty = await querier.query(bearing, { ...A, machine_model: 'nobody-has-this' });
      t.equal(empty.packets.length, 0);
      t.equal(empty.synthesis.kind, 'insufficient');
    });

    t.test('publish - a node moving to another bucket leaves one packet for it', async (t) => {
      const mover = nodes[3] as QisNode; // a member of A (3 % 3 === 0)
      t.ok(members.A.includes(mover.nodeId));
      const r = await mover.publish(bearing, C, 'failure');
      t.equal(r.acked, true);
      t.ok(r.tombstone, 'a tombstone was sent for the old bucket');
      const a = await querier.query(bearing, A, { minCohort: 1 });
      t.notOk(ids(a).includes(mover.nodeId), 'gone from A');
      t.equal(a.packets.length, 19);
      const c = await querier.query(bearing, C, { minCohort: 1 });
      t.ok(ids(c).includes(mover.nodeId), 'present in C');
      t.equal(c.packets.length, 21);
      const all = await querier.query(bearing, A, { widen: 4, minCohort: 1 });
      t.equal(all.packets.length, 60, 'the whole template: one packet per node');
      t.equal(all.packets.filter((p) => p.nodeId === mover.nodeId).length, 1);
      t.equal(all.packets.find((p) => p.nodeId === mover.nodeId)?.seq, r.seq, 'the newest one');
      members.A = members.A.filter((id) => id !== mover.nodeId);
      members.C.push(mover.nodeId);
    });

    t.test('query - a forged packet and a packet of another fingerprint never count, and the query says why', async (t) => {
      const raw = await mqtt.connectAsync(broker.url, { clientId: `raw-${Date.now()}`, reconnectPeriod: 0 });
      t.teardown(() => raw.endAsync(true));
      const intruder = keyFromSeed(new Uint8Array(32).fill(0xee));
      const addrA = address(bearing, A);
      const addrB = address(bearing, B);
      // 1. Forged: a valid packet with one signature bit flipped.
      const good = createOutcomePacket({ key: intruder, template: bearing, situation: A, outcome: 'failure', seq: 5, ts: Date.now() });
      const forged = Uint8Array.from(good.packet);
      forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
      // 2. Another fingerprint: B's packet signed for a topic inside A's bucket.
      const liar = keyFromSeed(new Uint8Array(32).fill(0xef));
      const topicInA = outcomeTopic(addrA, liar.nodeId);
      const foreign = signPacket(liar, topicInA, { fp: addrB.fp, seq: 1, ts: Date.now(), out: 'failure' });
      if (spec.kind === 'qis') {
        // The qis broker refuses the forgery at admission and disconnects its sender; the foreign
        // fingerprint is not a §6 refusal (the broker does not know the template's fields), so the
        // query must still drop it.
        const closed = new Promise<void>((r) => raw.once('close', () => r()));
        raw.publish(good.topic, Buffer.from(forged), { qos: 1, retain: true });
        await closed;
        t.pass('the forger was disconnected');
        const raw2 = await mqtt.connectAsync(broker.url, { clientId: `raw2-${Date.now()}`, reconnectPeriod: 0 });
        t.teardown(() => raw2.endAsync(true));
        await raw2.publishAsync(topicInA, Buffer.from(foreign), { qos: 1, retain: true });
        const r = await querier.query(bearing, A, { minCohort: 1 });
        t.same(r.dropped, { ERR_FP_MISMATCH: 1 }, 'the forgery was never stored; the foreign packet is dropped by the query');
        t.same(ids(r), [...members.A].sort(), 'the cohort is unchanged');
        const w = await querier.query(bearing, A, { widen: 1, minCohort: 1 });
        t.equal(w.dropped.ERR_FP_MISMATCH, 1, 'widened, its topic level does not match its fp');
        // Withdraw it with a signed tombstone: the only delete a qis broker takes.
        await raw2.publishAsync(topicInA, Buffer.from(signPacket(liar, topicInA, { fp: addrB.fp, seq: 2, ts: Date.now(), del: true })), { qos: 1, retain: true });
        return;
      }
      await raw.publishAsync(good.topic, Buffer.from(forged), { qos: 1, retain: true });
      await raw.publishAsync(topicInA, Buffer.from(foreign), { qos: 1, retain: true });
      const r = await querier.query(bearing, A, { minCohort: 1 });
      t.same(r.dropped, { ERR_BAD_SIGNATURE: 1, ERR_FP_MISMATCH: 1 }, 'both dropped, counted by reason');
      t.same(ids(r), [...members.A].sort(), 'the cohort is unchanged');
      // Widened, the foreign packet's topic level still does not match its fp.
      const w = await querier.query(bearing, A, { widen: 1, minCohort: 1 });
      t.equal(w.dropped.ERR_FP_MISMATCH, 1);
      // Clean up for the tests after this one (a plain broker takes an empty retained delete).
      await raw.publishAsync(good.topic, Buffer.alloc(0), { qos: 1, retain: true });
      await raw.publishAsync(topicInA, Buffer.alloc(0), { qos: 1, retain: true });
    });

    t.test('watch - yields verified packets live and skips forgeries', async (t) => {
      const watcher = nodes[1] as QisNode; // in B
      const ac = new AbortController();
      const it = watcher.watch(bearing, B, { retained: false, signal: ac.signal });
      const seen: string[] = [];
      const done = (async () => {
        for await (const ev of it) {
          seen.push(`${ev.packet.nodeId}:${String(ev.packet.out)}:${ev.retained}`);
          if (seen.length === 2) ac.abort();
        }
      })();
      // Let the subscription land before publishing.
      await new Promise((r) => setTimeout(r, 200));
      const raw = await mqtt.connectAsync(broker.url, { clientId: `raw3-${Date.now()}`, reconnectPeriod: 0 });
      t.teardown(() => raw.endAsync(true));
      const liar = keyFromSeed(new Uint8Array(32).fill(0xed));
      const bad = createOutcomePacket({ key: liar, template: bearing, situation: B, outcome: 'failure', seq: 1, ts: Date.now() });
      const broken = Uint8Array.from(bad.packet);
      broken[10] = (broken[10] as number) ^ 0xff;
      await raw.publishAsync(bad.topic, Buffer.from(broken), { qos: 0, retain: false }); // a qis broker disconnects the sender
      const p1 = nodes[4] as QisNode; // in B
      const p2 = nodes[7] as QisNode; // in B
      await p1.publish(bearing, B, 'failure');
      await p2.publish(bearing, B, 'no_failure');
      await done;
      t.same(seen.sort(), [`${p1.nodeId}:failure:false`, `${p2.nodeId}:no_failure:false`].sort());
      if (spec.kind === 'qis') t.same(it.dropped, {}, 'the broker refused the broken packet: it never reached the watcher');
      else t.ok(Object.values(it.dropped).reduce((a, b) => a + b, 0) >= 1, 'the broken packet was dropped and counted');
    });
  });
}
