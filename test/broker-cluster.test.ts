// `cluster: redis://…`: several broker processes as one region over a real redis-server
// (Debian's redis-server, started here with AOF and appendfsync always, as docs recommend).
// First the Redis store on its own (two stores on one Redis stand for two broker processes),
// then two whole brokers with the node runtime (when server.ts wires options.cluster).
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import { createClusterParts, isRedisStore, openRedisStore, type RedisStoreOptions } from '../broker/cluster.js';
import type { Store, StoredPacket } from '../broker/store.js';
import { QisError, topicMatches, compileTemplate, createNode, createOutcomePacket, keyFromSeed, type NodeKey, type QisNode, type Situation, type Template } from '../src/index.js';
import { bearing, bearingDoc, situation } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const NOW = 1_795_000_000_000;
let redis: RedisServer;
t.before(async () => {
  redis = await startRedis({ aof: true });
});
t.teardown(() => redis?.stop());

let prefixes = 0;
/** A fresh key prefix: each test has its own region in the one Redis. */
const newPrefix = (): string => `qis-test:${++prefixes}:`;

const keys = new Map<number, NodeKey>();
function keyOf(i: number): NodeKey {
  let k = keys.get(i);
  if (k === undefined) {
    const seed = new Uint8Array(32);
    new DataView(seed.buffer).setUint32(0, 0xc1000000 + i);
    k = keyFromSeed(seed);
    keys.set(i, k);
  }
  return k;
}

const other: Template = compileTemplate({ ...bearingDoc, name: 'bearing-failure-2' });

/** A real signed packet of node i; `bucket` picks the situation (and so the topic). */
function pkt(i: number, seq: number, opts: { bucket?: number; exp?: number; template?: Template } = {}): StoredPacket {
  const key = keyOf(i);
  const b = opts.bucket ?? 0;
  const sit = { ...situation, machine_model: `KX-${200 + (b % 7)}`, load_kn: [5, 30, 100][b % 3] as number, sealed: b % 2 === 0 };
  const { topic, packet, address } = createOutcomePacket({
    key,
    template: opts.template ?? bearing,
    situation: sit,
    outcome: seq % 2 ? 'failure' : 'no_failure',
    seq,
    ts: NOW,
    ...(opts.exp !== undefined ? { exp: opts.exp } : {}),
  });
  return { tplId: address.tplId, nodeId: key.nodeId, topic, seq, packet, ...(opts.exp !== undefined ? { exp: opts.exp } : {}) };
}

/** Two stores on one Redis and one key prefix: two broker processes of one region. */
async function pair(t: Test, o: RedisStoreOptions = {}): Promise<[Store, Store, string]> {
  const keyPrefix = newPrefix();
  const a = await openRedisStore(redis.url, { keyPrefix, now: () => NOW, name: 'A', ...o });
  const b = await openRedisStore(redis.url, { keyPrefix, now: () => NOW, name: 'B', ...o });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return [a, b, keyPrefix];
}

/** Waits until cond() holds (mirrors follow Redis through pub/sub: near at once, not at once). */
async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const state = (s: Store, filter = '#'): string[] => [...s.match(filter)].map((p) => `${p.topic} ${p.seq}`).sort();
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');


// ------------------------------------------------------------------------------ the store

t.test('redis store - a put on A is seen by B (seqOf, get, getByTopic, match)', async (t) => {
  const [a, b] = await pair(t);
  const p = pkt(1, 7, { exp: Math.floor(NOW / 1000) + 3600 });
  t.same(await a.put(p), { stored: true });
  t.equal(a.seqOf(p.tplId, p.nodeId), 7, 'A: at once (its own write)');
  await until(() => b.seqOf(p.tplId, p.nodeId) === 7, 'B sees seq 7');
  const got = b.get(p.tplId, p.nodeId);
  t.equal(got?.topic, p.topic);
  t.equal(got?.exp, p.exp);
  t.equal(hex(got?.packet ?? new Uint8Array()), hex(p.packet), 'the exact bytes');
  t.equal(b.getByTopic(p.topic)?.seq, 7);
  t.equal(b.getByTopic(`${p.topic}x`), undefined);
  t.same(state(b), [`${p.topic} 7`]);
  t.equal(b.size, 1);
  t.equal(b.stats().live, 1);
  // B writes, A sees: the packet it replaced comes back with its bytes.
  const p2 = pkt(1, 8);
  const r = await b.put(p2);
  t.ok(r.stored && r.replaced?.seq === 7 && hex(r.replaced.packet) === hex(p.packet), 'replaced is the packet of seq 7');
  await until(() => a.get(p.tplId, p.nodeId)?.seq === 8, 'A sees seq 8');
  t.equal(a.get(p.tplId, p.nodeId)?.exp, undefined, 'no exp any more');
  // Stale on either side, whether its mirror knows it already or only Redis does.
  t.same(await a.put(pkt(1, 8)), { stored: false, reason: 'stale' });
  t.same(await b.put(pkt(1, 3)), { stored: false, reason: 'stale' });
  // put's indexed callback: Redis answers once, so it comes with the result, before the promise resolves.
  const seen: unknown[] = [];
  const r9 = await a.put(pkt(1, 9), (x) => seen.push(x));
  t.ok(r9.stored && r9.replaced?.seq === 8, 'seq 9 replaced seq 8');
  t.same(seen, [r9], 'indexed was called once, with the result');
});

t.test('redis store - concurrent puts of seqs 1..200 from both stores leave the highest, each seq stored at most once', async (t) => {
  const [a, b] = await pair(t);
  const packets = Array.from({ length: 200 }, (_, k) => pkt(2, k + 1));
  const rnd = prng(11);
  // Every seq is put twice, once through each store, in a shuffled order, all at once.
  const jobs = packets.flatMap((p) => [{ s: a, p }, { s: b, p }]);
  for (let i = jobs.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [jobs[i], jobs[j]] = [jobs[j] as (typeof jobs)[number], jobs[i] as (typeof jobs)[number]];
  }
  const results = await Promise.all(jobs.map(({ s, p }) => s.put(p).then((r) => ({ seq: p.seq, r }))));
  const stored = results.filter((x) => x.r.stored);
  const seqs = stored.map((x) => x.seq).sort((x, y) => x - y);
  t.same(seqs, [...new Set(seqs)], 'no seq was stored twice');
  t.equal(seqs.at(-1), 200, 'the highest was stored');
  // Commits only ever raise the seq, so each stored put replaced the previous stored one.
  for (let k = 0; k < seqs.length; k++) {
    const x = stored.find((y) => y.seq === seqs[k]);
    const replaced = x?.r.stored ? x.r.replaced?.seq : -1;
    t.equal(replaced, k === 0 ? undefined : seqs[k - 1], `seq ${seqs[k]} replaced ${k === 0 ? 'nothing' : seqs[k - 1]}`);
  }
  const { tplId, nodeId } = packets[0] as StoredPacket;
  await until(() => a.seqOf(tplId, nodeId) === 200 && b.seqOf(tplId, nodeId) === 200, 'both mirrors at 200');
  for (const s of [a, b]) {
    t.same(state(s), [`${(packets[199] as StoredPacket).topic} 200`], 'one packet for the node');
    t.equal(s.size, 1);
  }
  t.comment(`${stored.length} of 400 puts stored`);
});

t.test('redis store - a bucket move removes the old topic from both mirrors', async (t) => {
  const [a, b] = await pair(t);
  const p1 = pkt(3, 1, { bucket: 0 });
  const p2 = pkt(3, 2, { bucket: 1 });
  t.not(p1.topic, p2.topic, 'two buckets');
  await a.put(p1);
  await until(() => b.getByTopic(p1.topic) !== undefined, 'B has the first bucket');
  const r = await b.put(p2);
  t.ok(r.stored && r.replaced?.topic === p1.topic, 'B: replaced the packet in the old bucket');
  await until(() => a.seqOf(p1.tplId, p1.nodeId) === 2, 'A follows');
  for (const s of [a, b]) {
    t.equal(s.getByTopic(p1.topic), undefined, 'old topic gone');
    t.same(state(s, p1.topic), [], 'match on the old topic: nothing');
    t.same(state(s, p1.topic.slice(0, p1.topic.lastIndexOf('/')) + '/+'), [], 'nor in the old bucket');
    t.same(state(s), [`${p2.topic} 2`], 'exactly one packet, in the new bucket');
  }
});

t.test('redis store - a tombstone blocks older seqs on both, a newer seq comes back', async (t) => {
  const [a, b] = await pair(t);
  const p = pkt(4, 5);
  await a.put(p);
  const r = await a.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 6 });
  t.ok('removed' in r && r.removed?.seq === 5, 'removed the live packet');
  await until(() => b.tombstone(p.tplId, p.nodeId)?.seq === 6, 'B sees the tombstone');
  for (const s of [a, b]) {
    t.equal(s.get(p.tplId, p.nodeId), undefined);
    t.equal(s.seqOf(p.tplId, p.nodeId), 6, 'seqOf is the tombstone seq');
    t.same(state(s), []);
    t.equal(s.size, 0);
    t.equal(s.stats().tombstones, 1);
  }
  t.same(await b.put(pkt(4, 6)), { stored: false, reason: 'stale' }, 'seq 6 blocked on B');
  t.same(await a.put(pkt(4, 3)), { stored: false, reason: 'stale' }, 'seq 3 blocked on A');
  t.same(await b.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 6 }), { stale: true }, 'the same tombstone again is stale');
  t.same(await b.put(pkt(4, 7)), { stored: true }, 'seq 7 stores (nothing live to replace)');
  await until(() => a.get(p.tplId, p.nodeId)?.seq === 7, 'A sees seq 7');
  t.equal(a.tombstone(p.tplId, p.nodeId), undefined);
});

t.test('redis store - match equals a brute-force MQTT filter, on both', async (t) => {
  const [a, b] = await pair(t);
  const rnd = prng(5);
  const live = new Map<string, StoredPacket>();
  for (let i = 0; i < 40; i++) {
    const p = pkt(100 + i, 1, { bucket: Math.floor(rnd() * 7), template: i % 4 === 0 ? other : bearing });
    await (i % 2 ? a : b).put(p);
    live.set(`${p.tplId}/${p.nodeId}`, p);
  }
  // Some move, some are withdrawn.
  for (let i = 0; i < 40; i += 3) {
    const p = pkt(100 + i, 2, { bucket: Math.floor(rnd() * 7), template: i % 4 === 0 ? other : bearing });
    await (i % 2 ? b : a).put(p);
    live.set(`${p.tplId}/${p.nodeId}`, p);
  }
  for (let i = 1; i < 40; i += 7) {
    const p = live.get(`${(i % 4 === 0 ? other : bearing).tplId}/${keyOf(100 + i).nodeId}`) as StoredPacket;
    await a.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 9 });
    live.delete(`${p.tplId}/${p.nodeId}`);
  }
  const topics = [...live.values()].map((p) => p.topic);
  await until(() => a.size === live.size && b.size === live.size, 'both mirrors complete');
  const sample = topics[3] as string;
  const lv = sample.split('/');
  const filters = [
    '#',
    'qis/#',
    'qis/1/o/#',
    `qis/1/o/${bearing.tplId}/#`,
    `qis/1/o/${other.tplId}/#`,
    `qis/1/o/${bearing.tplId}/+/+/+/+/+`,
    `qis/1/o/+/${lv[4]}/#`,
    `qis/1/o/+/${lv[4]}/+/+/+/+`,
    `${lv.slice(0, 6).join('/')}/#`,
    `${lv.slice(0, 8).join('/')}/+`,
    `${lv.slice(0, 8).join('/')}/#`,
    sample,
    `${lv.slice(0, 8).join('/')}/${keyOf(999).nodeId}`,
    'qis/1/o/+/+/+/+/+/+',
    'qis/1/o/+/+/+/+/+/+/+',
    '+/+/+/+/+/+/+/+/+',
    'qis/1/o/+/+/#',
    'nothing/#',
  ];
  for (const f of filters) {
    const want = topics.filter((tp) => topicMatches(f, tp)).sort();
    t.same([...a.match(f)].map((p) => p.topic).sort(), want, `A: ${f}`);
    t.same([...b.match(f)].map((p) => p.topic).sort(), want, `B: ${f}`);
  }
  t.throws(() => a.match('a/#/b'), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => a.match('a+/b'), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('redis store - a store opened later loads everything; a lost announcement is caught up on reconnect', async (t) => {
  const [a, , keyPrefix] = await pair(t);
  for (let i = 0; i < 30; i++) await a.put(pkt(200 + i, 3, { bucket: i }));
  await a.remove({ tplId: bearing.tplId, nodeId: keyOf(200).nodeId, seq: 4 });
  const c = await openRedisStore(redis.url, { keyPrefix, now: () => NOW, name: 'C' });
  t.teardown(() => c.close());
  t.equal(c.recovery.records, 30, '29 packets and 1 tombstone loaded');
  t.equal(c.size, 29);
  t.same(state(c), state(a));
  t.equal(c.seqOf(bearing.tplId, keyOf(200).nodeId), 4);
  // Write behind the stores' backs (as if C missed the announcement), then drop C's subscription.
  const raw = new Redis(redis.url);
  t.teardown(() => raw.quit());
  const p = pkt(250, 1);
  const ver = await raw.incr(`${keyPrefix}ver`);
  await raw.hset(`${keyPrefix}e`, `${p.tplId}/${p.nodeId}`, Buffer.concat([Buffer.from(`L|${ver}|1|-1|-1|${p.topic}|`), Buffer.from(p.packet)]));
  t.equal(c.seqOf(p.tplId, p.nodeId), undefined, 'C does not know yet');
  await raw.client('KILL', 'TYPE', 'pubsub');
  await until(() => c.seqOf(p.tplId, p.nodeId) === 1, 'C reloaded after reconnecting');
  t.equal(hex(c.get(p.tplId, p.nodeId)?.packet ?? new Uint8Array()), hex(p.packet));
  // And the subscription works again.
  await a.put(pkt(250, 2));
  await until(() => c.seqOf(p.tplId, p.nodeId) === 2, 'C follows announcements again');
});

t.test('redis store - expiry: swept once in the region, the tombstone keeps the seq, old tombstones are pruned', async (t) => {
  let now = NOW;
  const [a, b, keyPrefix] = await pair(t, { now: () => now, tombstoneTtlMs: 60_000 });
  const exp = Math.floor(NOW / 1000) + 10;
  for (let i = 0; i < 10; i++) await a.put(pkt(300 + i, 1, { exp }));
  await a.put(pkt(310, 1));
  await until(() => b.size === 11, 'B has all');
  now = (exp + 1) * 1000;
  t.same(state(b), [state(a).find((x) => x.includes(keyOf(310).nodeId)) as string], 'expired packets are not matched');
  t.equal(b.get(bearing.tplId, keyOf(300).nodeId), undefined);
  const [ga, gb] = await Promise.all([a.sweepExpired(), b.sweepExpired()]);
  t.equal(ga.length + gb.length, 10, 'each expired packet swept by exactly one store');
  t.same([...ga, ...gb].map((p) => p.nodeId).sort(), Array.from({ length: 10 }, (_, i) => keyOf(300 + i).nodeId).sort());
  await until(() => a.size === 1 && b.size === 1, 'both mirrors swept');
  t.equal(b.seqOf(bearing.tplId, keyOf(300).nodeId), 1, 'the tombstone keeps the seq');
  t.same(await b.put(pkt(300, 1, { exp: exp + 100 })), { stored: false, reason: 'stale' }, 'and blocks it');
  t.same(await a.sweepExpired(), [], 'nothing left to sweep');
  // Past the TTL the tombstones no longer block, and a sweep drops them from Redis and both mirrors.
  now += 60_000;
  t.equal(a.seqOf(bearing.tplId, keyOf(301).nodeId), undefined, 'a tombstone past its TTL is forgotten');
  await a.sweepExpired();
  await until(() => a.stats().tombstones === 0 && b.stats().tombstones === 0, 'tombstones pruned on both');
  const raw = new Redis(redis.url);
  t.teardown(() => raw.quit());
  t.equal(await raw.hlen(`${keyPrefix}e`), 1, 'Redis keeps only the live packet');
  t.same(await b.put(pkt(301, 1)), { stored: true }, 'a forgotten tombstone blocks nothing');
});

t.test('redis store - arguments, closed store, unreachable Redis', async (t) => {
  const [a] = await pair(t);
  const p = pkt(400, 1);
  t.rejects(a.put({ ...p, nodeId: keyOf(401).nodeId }), { code: 'ERR_INVALID_ARGUMENT' });
  t.rejects(a.put({ ...p, seq: -1 }), { code: 'ERR_INVALID_ARGUMENT' });
  t.rejects(a.put({ ...p, packet: new Uint8Array(513) }), { code: 'ERR_INVALID_ARGUMENT' });
  t.rejects(a.remove({ tplId: 'x', nodeId: p.nodeId, seq: 1 }), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(openRedisStore('http://127.0.0.1:1'), { code: 'ERR_INVALID_ARGUMENT' });
  const dead = await openRedisStore('redis://127.0.0.1:1').then(
    () => 'opened',
    (e: unknown) => (e instanceof QisError ? e.code : String(e)),
  );
  t.equal(dead, 'ERR_FILE_IO', 'nothing listens: ERR_FILE_IO');
  const c = await openRedisStore(redis.url, { keyPrefix: newPrefix() });
  await c.close();
  await c.close();
  await t.rejects(c.put(p), { code: 'ERR_FILE_IO' }, 'closed');
});

t.test('redis store - with appendfsync always, what put acknowledged survives kill -9 of redis-server', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qis-redis-aof-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r1 = await startRedis({ aof: true, dir });
  const s1 = await openRedisStore(r1.url, { now: () => NOW });
  const ps = Array.from({ length: 50 }, (_, i) => pkt(450 + i, 1, { bucket: i }));
  await Promise.all(ps.map((p) => s1.put(p)));
  await s1.remove({ tplId: bearing.tplId, nodeId: keyOf(450).nodeId, seq: 2 });
  await r1.kill();
  await s1.close();
  const r2 = await startRedis({ aof: true, dir });
  t.teardown(() => r2.stop());
  const s2 = await openRedisStore(r2.url, { now: () => NOW });
  t.teardown(() => s2.close());
  t.equal(s2.size, 49, 'every acknowledged packet is back');
  t.equal(s2.seqOf(bearing.tplId, keyOf(450).nodeId), 2, 'and the tombstone');
  t.same(await s2.put(pkt(451, 1, { bucket: 1 })), { stored: false, reason: 'stale' }, 'seqs still rule');
  const r = await s2.put(pkt(451, 2, { bucket: 1 }));
  t.ok(r.stored && r.replaced !== undefined && hex(r.replaced.packet) === hex((ps[1] as StoredPacket).packet), 'a newer one replaces the restored bytes');
});

t.test('cluster parts - the mq carries MQTT traffic between two buses, not into the store channel', async (t) => {
  const keyPrefix = newPrefix();
  const p1 = await createClusterParts(redis.url, 'one', { keyPrefix, mqPrefix: `${keyPrefix}mq/` });
  const p2 = await createClusterParts(redis.url, 'two', { keyPrefix, mqPrefix: `${keyPrefix}mq/` });
  t.teardown(async () => {
    await p1.close();
    await p2.close();
  });
  t.ok(isRedisStore(p1.store) && isRedisStore(p2.store));
  type Mq = { on(t: string, f: (m: { topic: string; payload: unknown }, cb: () => void) => void, done: () => void): void; emit(m: object, cb: (e?: Error) => void): void };
  const [mq1, mq2] = [p1.mq as Mq, p2.mq as Mq];
  const got: string[] = [];
  await new Promise<void>((r) =>
    mq2.on(
      '#',
      (m, cb) => {
        got.push(m.topic);
        cb();
      },
      r,
    ),
  );
  await new Promise<void>((r, j) => mq1.emit({ topic: 'a/b', payload: 'x' }, (e) => (e ? j(e) : r())));
  // A store write announces on the store channel: no MQTT subscriber may see it.
  await p1.store.put(pkt(500, 1));
  await until(() => got.includes('a/b'), 'bus 2 got a/b');
  await until(() => p2.store.seqOf(bearing.tplId, keyOf(500).nodeId) === 1, 'store 2 saw the put');
  t.same(got, ['a/b'], 'only the MQTT message');
});

// ------------------------------------------------------------------------------ two brokers, one region

const A: Situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
const C: Situation = { ...A, load_kn: 120 };
const seedOf = (i: number): Uint8Array => {
  const s = new Uint8Array(32);
  new DataView(s.buffer).setUint32(0, 0xc2000000 + i);
  return s;
};

t.test('two brokers as one region (createBroker with cluster)', async (t) => {
  const cluster = redis.url;
  // verifyWorkers 0: a verify thread loads the TypeScript sources anew, seconds under tap's loader.
  const b1 = await startQisBroker({ cluster, id: 'region-1', verifyWorkers: 0 });
  const b2 = await startQisBroker({ cluster, id: 'region-2', verifyWorkers: 0 });
  const root = mkdtempSync(join(tmpdir(), 'qis-cluster-'));
  const nodes: QisNode[] = [];
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await b1.close();
    await b2.close();
    rmSync(root, { recursive: true, force: true });
  });
  if (!isRedisStore(b1.broker.store)) {
    t.skip('broker/server.ts does not use options.cluster yet (the wiring: see broker/cluster.ts)', () => {});
    return;
  }
  const node = async (i: number, b: TestBroker): Promise<QisNode> => {
    const n = await createNode({ url: b.url, dataDir: join(root, `n${i}`), key: keyFromSeed(seedOf(i)), reconnect: { baseMs: 50, capMs: 500 } });
    nodes.push(n);
    return n;
  };
  const pub = await node(1, b1);
  const querier = await node(2, b2);
  const watcher = await node(3, b2);

  await t.test('a packet published through broker 1 is queryable on broker 2 (sync)', async (t) => {
    const r = await pub.publish(bearing, A, 'failure');
    t.ok(r.acked, 'broker 1 acknowledged it');
    await until(() => b2.broker.store.seqOf(bearing.tplId, pub.nodeId) === r.seq, "broker 2's mirror has it");
    const q = await querier.query(bearing, A, { minCohort: 1 });
    t.equal(q.completeness, 'sync');
    t.equal(q.broker, 'qis');
    t.same(q.packets.map((p) => p.nodeId), [pub.nodeId]);
    t.same(q.dropped, {});
  });

  await t.test('a live subscriber on broker 2 receives a publish made on broker 1', async (t) => {
    const ac = new AbortController();
    const it = watcher.watch(bearing, C, { retained: false, signal: ac.signal });
    const seen: string[] = [];
    const done = (async () => {
      for await (const ev of it) {
        seen.push(`${ev.packet.nodeId}:${String(ev.packet.out)}`);
        ac.abort();
      }
    })();
    await new Promise((r) => setTimeout(r, 300)); // the subscription reaches Redis
    const other = await node(4, b1);
    await other.publish(bearing, C, 'no_failure');
    await done;
    t.same(seen, [`${other.nodeId}:no_failure`]);
  });

  await t.test('a bucket move on broker 1 leaves one packet visible on broker 2', async (t) => {
    const r = await pub.publish(bearing, C, 'no_failure');
    t.ok(r.acked);
    await until(() => b2.broker.store.seqOf(bearing.tplId, pub.nodeId) === r.seq, "broker 2's mirror moved");
    const wide = await querier.query(bearing, A, { widen: 4, minCohort: 1 });
    t.equal(wide.completeness, 'sync');
    const mine = wide.packets.filter((p) => p.nodeId === pub.nodeId);
    t.equal(mine.length, 1, 'one packet of the node in the whole template');
    t.equal(mine[0]?.seq, r.seq, 'the new one');
    t.same((await querier.query(bearing, A, { minCohort: 1 })).packets.map((p) => p.nodeId), [], 'the old cohort is empty');
    // What any MQTT client gets from broker 2 for the old topic: nothing retained.
    const raw = await mqtt.connectAsync(b2.url, { clientId: `raw-${Date.now()}`, reconnectPeriod: 0 });
    t.teardown(() => raw.endAsync(true));
    const retained: string[] = [];
    raw.on('message', (topic, _p, packet) => {
      if (packet.retain) retained.push(topic);
    });
    await raw.subscribeAsync(`qis/1/o/${bearing.tplId}/#`, { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    t.same(retained.filter((tp) => tp.endsWith(pub.nodeId)), [r.topic], 'broker 2 retains only the new topic');
  });

  await t.test('a stale packet sent to broker 2 after broker 1 stored a newer seq is dropped', async (t) => {
    const key = keyFromSeed(seedOf(1));
    const old = createOutcomePacket({ key, template: bearing, situation: A, outcome: 'failure', seq: 1, ts: Date.now() });
    const raw = await mqtt.connectAsync(b2.url, { clientId: `raw2-${Date.now()}`, reconnectPeriod: 0 });
    t.teardown(() => raw.endAsync(true));
    await raw.publishAsync(old.topic, Buffer.from(old.packet), { qos: 1, retain: true });
    const q = await querier.query(bearing, A, { widen: 4, minCohort: 1 });
    t.equal(q.packets.filter((p) => p.nodeId === pub.nodeId).length, 1, 'still one packet');
    t.ok((b1.broker.store.seqOf(bearing.tplId, pub.nodeId) ?? 0) > 1, 'the newer seq stands');
  });
});
