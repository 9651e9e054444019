// Issue 13, the items after hostile-broker.test.ts: Session Present for a stored session without
// subscriptions ([MQTT-3.2.2-2]), the publish rate limit keyed on who publishes (identity or
// address, not the client id a client chooses), and bounded key minting (cold floors). Each test
// drives a real broker over loopback from separate clients (raw packets where the CONNACK byte is
// the point) and checks that a well-behaved client's publish and read-back still work.
import t, { type Test } from 'tap';
import { connect as netConnect } from 'node:net';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { createLogin, createOutcomePacket, keyFromSeed, type NodeKey } from '../src/index.js';
import type { BrokerConfig } from '../broker/options.js';
import { STORE_FILES } from '../broker/store.js';
import { counter, limitHits } from './helpers/broker-metrics.js';
import { bearing, fixedKey, situation } from './helpers/fixtures.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { publishOnce, readRetained } from './helpers/retained.js';

/** The broker's clock in these tests: fixed (a rate bucket never refills), from the real one so packets' ts pass the skew check under any faketime. */
const NOW = Date.now();

async function brokerFor(t: Test, config: BrokerConfig, now: () => number = () => NOW, dataDir?: string): Promise<TestBroker> {
  const b = await startQisBroker(config, dataDir, { now });
  t.teardown(() => b.close());
  return b;
}

/** A key of its own per `i` (distinct from fixedKey's seeds). */
function keyOf(i: number): NodeKey {
  const seed = new Uint8Array(32).fill(0x5a);
  new DataView(seed.buffer).setUint32(0, i);
  return keyFromSeed(seed);
}

function packet(key: NodeKey, seq: number, del = false, ts = NOW): { topic: string; packet: Buffer } {
  const p = createOutcomePacket({ key, template: bearing, situation, ...(del ? { del: true } : { outcome: 'failure' }), seq, ts });
  return { topic: p.topic, packet: Buffer.from(p.packet) };
}

/** Node login options for `key` under `clientId`, signed at the broker's clock. */
function login(key: NodeKey, clientId: string, ts = NOW): IClientOptions {
  const l = createLogin(key, { clientId, ts });
  return { clientId, username: l.username, password: Buffer.from(l.password) };
}

/** A well-behaved node publishes its packet and reads it back from the broker (< 1 s). */
async function roundTrip(t: Test, b: TestBroker, key: NodeKey, seq: number, label: string, ts = NOW): Promise<void> {
  const started = performance.now();
  const p = packet(key, seq, false, ts);
  t.equal(await publishOnce(b.url, p.topic, p.packet, login(key, `good-${label}`, ts)), 'acked', `${label}: a well-behaved node's packet is acknowledged`);
  const back = await readRetained(b.url, p.topic);
  t.same(back && Buffer.from(back).toString('hex'), p.packet.toString('hex'), `${label}: and reads back`);
  t.ok(performance.now() - started < 1000, `${label}: round trip under 1 s`);
}

// ------------------------------------------------------------------------------ Session Present

/** CONNECT on a raw socket; returns the CONNACK's Session Present bit and return code, then DISCONNECTs. */
async function connack(b: TestBroker, clientId: string, clean: boolean, subscribe?: string): Promise<{ sessionPresent: boolean; returnCode: number }> {
  const s = netConnect(b.port, '127.0.0.1');
  s.on('error', () => undefined);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  s.on('data', (d: Buffer) => parser.parse(d));
  const next = async (cmd: string): Promise<mqttPacket.Packet> => {
    for (let i = 0; i < 250; i++) {
      const found = packets.find((p) => p.cmd === cmd);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no ${cmd} from the broker`);
  };
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean, keepalive: 30 }));
  const ack = (await next('connack')) as mqttPacket.IConnackPacket;
  if (subscribe !== undefined) {
    s.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: subscribe, qos: 1 }] }));
    await next('suback');
  }
  s.write(mqttPacket.generate({ cmd: 'disconnect' }));
  await new Promise<void>((r) => s.end(() => r()));
  s.destroy();
  return { sessionPresent: ack.sessionPresent, returnCode: ack.returnCode ?? -1 };
}

t.test('Session Present [MQTT-3.2.2-2]: 1 on reconnecting to a stored session without subscriptions, 0 after a clean session', async (t) => {
  const b = await brokerFor(t, {});
  const id = 'session-empty';
  t.same(await connack(b, id, false), { sessionPresent: false, returnCode: 0 }, 'first CONNECT, clean 0: no session held yet, Session Present 0 [MQTT-3.2.2-3]');
  t.same(await connack(b, id, false), { sessionPresent: true, returnCode: 0 }, 'again, clean 0: the session (no subscriptions) is held, Session Present 1 [MQTT-3.2.2-2]');
  t.same(await connack(b, id, false), { sessionPresent: true, returnCode: 0 }, 'and again');
  t.same(await connack(b, id, true), { sessionPresent: false, returnCode: 0 }, 'clean 1: Session Present 0 [MQTT-3.2.2-1]');
  t.same(await connack(b, id, false), { sessionPresent: false, returnCode: 0 }, 'clean 0 after a clean session: the session was discarded, Session Present 0');
  t.same(await connack(b, id, false), { sessionPresent: true, returnCode: 0 }, 'clean 0 once more: held again');
  // With subscriptions (Aedes' own path): still 1, and the subscription is restored, not a marker.
  const withSub = 'session-sub';
  await connack(b, withSub, false, 'plain/topic');
  t.same(await connack(b, withSub, false), { sessionPresent: true, returnCode: 0 }, 'a session with a subscription: Session Present 1');
  // A restored session without subscriptions subscribes to nothing: a message reaches no marker.
  const c = await mqtt.connectAsync(b.url, { clientId: id, clean: false, reconnectPeriod: 0 });
  const subs = (b.broker.aedes as unknown as { clients: Record<string, { subscriptions: Record<string, unknown> }> }).clients[id]?.subscriptions ?? {};
  t.same(Object.keys(subs), [], 'the empty session restored no subscription');
  await c.endAsync();
  await roundTrip(t, b, fixedKey(0x61), 1, 'after the session checks');
});

// ------------------------------------------------------------------------------ publish rate

t.test('publish rate: one address rotating 20 client ids gets one budget (ERR_RATE_LIMITED), counted and served', async (t) => {
  const b = await brokerFor(t, { admission: { ratePerSecond: 1, burst: 5 } });
  const results: string[] = [];
  for (let i = 0; i < 20; i++) {
    const p = packet(keyOf(100 + i), 1);
    results.push(await publishOnce(b.url, p.topic, p.packet, { clientId: `rotating-${i}` }));
  }
  t.equal(results.filter((r) => r === 'acked').length, 5, 'the burst of 5 is acknowledged, across all 20 client ids');
  t.same(results.slice(5), Array(15).fill('closed'), 'every later client id is refused (disconnected): the bucket is the address, not the id');
  t.equal(await limitHits(b, 'ERR_RATE_LIMITED'), 15, 'qis_limit_hits_total{code="ERR_RATE_LIMITED"} 15');
  t.equal(await counter(b, 'qis_refused_total', 'ERR_RATE_LIMITED'), 15, 'qis_refused_total{code="ERR_RATE_LIMITED"} 15');
  t.equal(b.broker.store.size, 5, 'five packets stored');
  // A node that logs in is keyed on its identity: the exhausted address does not starve it.
  await roundTrip(t, b, fixedKey(0x62), 1, 'after the rotation');
});

t.test('publish rate: two identities from the same loopback address each get their own budget', async (t) => {
  const b = await brokerFor(t, { admission: { ratePerSecond: 1, burst: 3 } });
  const [ka, kb] = [fixedKey(0x71), fixedKey(0x72)];
  const send = async (key: NodeKey, seq: number, clientId: string): Promise<string> => {
    const p = packet(key, seq);
    return publishOnce(b.url, p.topic, p.packet, login(key, clientId));
  };
  const a: string[] = [];
  for (let s = 1; s <= 4; s++) a.push(await send(ka, s, `node-a-${s}`));
  t.same(a, ['acked', 'acked', 'acked', 'closed'], 'identity A: its burst of 3, then refused (fresh client ids do not refill it)');
  const bb: string[] = [];
  for (let s = 1; s <= 4; s++) bb.push(await send(kb, s, `node-b-${s}`));
  t.same(bb, ['acked', 'acked', 'acked', 'closed'], 'identity B, same address: a budget of its own');
  // Anonymous clients of the address share a third budget.
  const anon = packet(keyOf(7), 1);
  t.equal(await publishOnce(b.url, anon.topic, anon.packet, { clientId: 'anonymous-1' }), 'acked', 'an anonymous client of the address: the address budget, untouched by A and B');
  t.equal(await limitHits(b, 'ERR_RATE_LIMITED'), 2, 'two hits counted');
  await roundTrip(t, b, fixedKey(0x73), 1, 'a third identity');
});

// ------------------------------------------------------------------------------ key minting

/** Publishes `items` over one anonymous connection, `window` in flight; returns how many were acknowledged. */
async function flood(url: string, items: Iterable<{ topic: string; packet: Buffer }>, window = 256): Promise<number> {
  const c = await mqtt.connectAsync(url, { clientId: 'minter', reconnectPeriod: 0 });
  let acked = 0;
  try {
    let batch: Promise<unknown>[] = [];
    for (const p of items) {
      batch.push(c.publishAsync(p.topic, p.packet, { qos: 1, retain: true }).then(() => acked++));
      if (batch.length >= window) {
        await Promise.all(batch);
        batch = [];
      }
    }
    await Promise.all(batch);
  } finally {
    await c.endAsync();
  }
  return acked;
}

function* tombstones(from: number, count: number, ts = NOW): Generator<{ topic: string; packet: Buffer }> {
  for (let i = from; i < from + count; i++) yield packet(keyOf(i), 1, true, ts);
}

t.test('key minting: 3,000 tombstones for fresh keys keep at most maxColdFloors; a held node keeps its floor across a restart', async (t) => {
  // 3,000 keys (10 × the cap) rather than the 20,000: the same bound, at a seventh of the
  // signing and verifying on the shared test machine (the file must stay well inside tap's 120 s).
  const CAP = 300;
  const N = 3_000;
  const config: BrokerConfig = { admission: { ratePerSecond: 0 }, limits: { maxColdFloors: CAP } };
  const first = await startQisBroker(config, undefined, { now: () => NOW });
  const dataDir = first.dataDir;
  let b = first;
  t.teardown(() => b.close());
  // A node that held a packet: published, then deleted. Its floor is 20.
  const held = fixedKey(0x81);
  t.equal(await publishOnce(b.url, packet(held, 10).topic, packet(held, 10).packet), 'acked', 'the held node publishes seq 10');
  t.equal(await publishOnce(b.url, packet(held, 20, true).topic, packet(held, 20, true).packet), 'acked', 'and deletes it with seq 20');

  const half = await flood(b.url, tombstones(0, N / 2));
  await roundTrip(t, b, fixedKey(0x82), 1, 'during the minting');
  const rest = await flood(b.url, tombstones(N / 2, N / 2));
  t.equal(half + rest, N, 'every minted tombstone is acknowledged (acknowledged and dropped beyond the cap: no reconnect loop)');
  const st = b.broker.store.stats();
  t.equal(st.coldFloors, CAP, `cold floors kept: the cap (${CAP})`);
  t.equal(st.tombstones, CAP + 1, 'tombstones: the cap and the held node');
  t.equal(await limitHits(b, 'ERR_TOMBSTONE_LIMIT'), N - CAP, 'qis_limit_hits_total{code="ERR_TOMBSTONE_LIMIT"}: every refused one');
  t.equal(await counter(b, 'qis_dropped_total', 'ERR_TOMBSTONE_LIMIT'), N - CAP, 'and dropped, counted');
  // Disk: the log holds the two puts of the good nodes, the held node's removal and at most CAP
  // tombstone records (each ≤ 8 + 20 + topic + 512 bytes), whatever N was.
  const topicLength = packet(keyOf(0), 1, true).topic.length;
  const bound = STORE_FILES.headerBytes + (CAP + 3) * (8 + 20 + topicLength + 512);
  const logBytes = statSync(join(dataDir, 'store', STORE_FILES.log)).size;
  t.ok(logBytes <= bound, `store.log ${logBytes} B ≤ ${bound} B (bounded by the cap, not by the ${N} minted)`);

  // Restart on the same data directory.
  await b.close(true);
  b = await startQisBroker(config, dataDir, { now: () => NOW });
  t.equal(b.broker.store.stats().coldFloors, CAP, 'after a restart: still the cap');
  t.equal(b.broker.store.seqOf(bearing.tplId, held.nodeId), 20, "the held node's floor survived the restart");
  const replay = packet(held, 10);
  const between = packet(held, 15);
  t.equal(await publishOnce(b.url, replay.topic, replay.packet), 'acked', 'a replay of its seq 10 is acknowledged…');
  t.equal(await publishOnce(b.url, between.topic, between.packet), 'acked', '…and so is a seq 15 below the floor…');
  t.equal(await counter(b, 'qis_dropped_total', 'ERR_SEQ_STALE'), 2, '…both dropped as stale (PROTOCOL §6: its seq never goes back)');
  t.equal(await readRetained(b.url, replay.topic, 500), undefined, 'the deleted packet did not come back');
  t.equal(await flood(b.url, tombstones(N, 10)), 10, 'ten more fresh tombstones after the restart: acknowledged');
  t.equal(await limitHits(b, 'ERR_TOMBSTONE_LIMIT'), 10, '…and refused: the cap holds across restarts');
  await roundTrip(t, b, fixedKey(0x83), 1, 'after the restart');
});

t.test('key minting: cold floors past the tombstone TTL are forgotten at compaction; held floors stay', async (t) => {
  let clock = NOW;
  const b = await brokerFor(t, { admission: { ratePerSecond: 0 }, limits: { maxColdFloors: 3 } }, () => clock);
  const held = fixedKey(0x91);
  t.equal(await publishOnce(b.url, packet(held, 5).topic, packet(held, 5).packet), 'acked', 'a node publishes seq 5');
  t.equal(await publishOnce(b.url, packet(held, 6, true).topic, packet(held, 6, true).packet), 'acked', 'and deletes it, seq 6');
  t.equal(await flood(b.url, tombstones(50_000, 4)), 4, 'four fresh tombstones acknowledged');
  t.equal(b.broker.store.stats().coldFloors, 3, 'three kept (the cap)');
  t.equal(await limitHits(b, 'ERR_TOMBSTONE_LIMIT'), 1, 'the fourth refused');
  clock = NOW + 31 * 24 * 3600 * 1000; // past the 30-day tombstone TTL
  await b.broker.store.compact();
  t.equal(b.broker.store.stats().coldFloors, 0, 'past the TTL the compaction forgets the cold floors');
  t.equal(b.broker.store.seqOf(bearing.tplId, held.nodeId), 6, "the held node's floor is kept for ever");
  t.equal(await flood(b.url, tombstones(60_000, 3, clock)), 3, 'room for new cold floors');
  t.equal(b.broker.store.stats().coldFloors, 3, 'three kept');
  t.equal(await limitHits(b, 'ERR_TOMBSTONE_LIMIT'), 1, 'none refused');
  const old = packet(held, 5, false, clock);
  t.equal(await publishOnce(b.url, old.topic, old.packet), 'acked', "the held node's seq 5 again…");
  t.equal(await counter(b, 'qis_dropped_total', 'ERR_SEQ_STALE'), 1, '…is stale');
  await roundTrip(t, b, fixedKey(0x92), 1, 'after the compaction', clock);
});
