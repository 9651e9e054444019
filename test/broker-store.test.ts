import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { openStore, STORE_FILES, type PutResult, type Store, type StoreOptions, type StoredPacket } from '../broker/store.js';
import { QisError, topicMatches, b32, createOutcomePacket, keyFromSeed, signPacket, type NodeKey } from '../src/index.js';
import { withMethods } from './helpers/file-handles.js';
import { bearing, situation } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';
import { DIGEST_SLICE, RANGES, digest, digestReady, storeRanges } from '../broker/federation/digest.js';

const NOW = 1_795_000_000_000;
const root = mkdtempSync(join(tmpdir(), 'qis-broker-store-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const newDir = (): string => join(root, `s${++dirs}`);

const keys = new Map<number, NodeKey>();
/** Node i's key (a fixed seed per i, so failures reproduce). */
function keyOf(i: number): NodeKey {
  let k = keys.get(i);
  if (k === undefined) {
    const seed = new Uint8Array(32);
    new DataView(seed.buffer).setUint32(0, i + 1);
    k = keyFromSeed(seed);
    keys.set(i, k);
  }
  return k;
}

const signed = new Map<string, StoredPacket>();
/** A real signed bearing-failure packet of node i; `bucket` picks the situation (and so the topic). */
function pkt(i: number, seq: number, opts: { bucket?: number; exp?: number } = {}): StoredPacket {
  const id = `${i} ${seq} ${opts.bucket ?? 0} ${opts.exp ?? ''}`;
  const done = signed.get(id);
  if (done !== undefined) return done;
  const p = sign(i, seq, opts);
  signed.set(id, p);
  return p;
}
function sign(i: number, seq: number, opts: { bucket?: number; exp?: number }): StoredPacket {
  const key = keyOf(i);
  const b = opts.bucket ?? 0;
  const sit = { ...situation, machine_model: `KX-${200 + (b % 7)}`, load_kn: [5, 30, 100][b % 3] as number };
  const { topic, packet, address } = createOutcomePacket({
    key,
    template: bearing,
    situation: sit,
    outcome: seq % 2 ? 'failure' : 'no_failure',
    conf: 0.9,
    ctx: { rpm: 1480 },
    seq,
    ts: NOW,
    ...(opts.exp !== undefined ? { exp: opts.exp } : {}),
  });
  return { tplId: address.tplId, nodeId: key.nodeId, topic, seq, packet, ...(opts.exp !== undefined ? { exp: opts.exp } : {}) };
}

/**
 * Node i (any number of them) under a synthetic node id, carrying the signed bytes of one of 50
 * real packets: deriving thousands of keys takes seconds, and the store does not verify
 * signatures (admission does), so only the shape matters here.
 */
function synthetic(i: number, seq: number, bucket: number): StoredPacket {
  const real = pkt(i % 50, 1, { bucket });
  const id = new Uint8Array(16);
  new DataView(id.buffer).setUint32(0, 0x5eed0000 + i);
  const nodeId = b32(id);
  return { ...real, nodeId, topic: real.topic.replace(/[^/]+$/, nodeId), seq };
}

const open = (dir: string, o: Partial<StoreOptions> = {}): Promise<Store> => openStore({ dir, fsync: 'never', now: () => NOW, ...o });
const codeOf = async (p: Promise<unknown> | (() => unknown)): Promise<string> => {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'ok';
  } catch (e) {
    if (e instanceof QisError) return e.code;
    throw e;
  }
};
/** Every live packet as "topic seq", sorted: the whole observable state of match. */
const state = (s: Store): string[] => [...s.match('#')].map((p) => `${p.topic} ${p.seq}`).sort();
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');


/** Offsets where each record of a log ends (the frame is u32 body length, u32 CRC, body). */
function recordEnds(log: Buffer): number[] {
  const ends: number[] = [];
  for (let at = STORE_FILES.headerBytes; at < log.length; ) {
    at += 8 + log.readUInt32LE(at);
    ends.push(at);
  }
  return ends;
}

t.test('store - one packet per (template, node): a higher seq replaces, an equal or lower one is stale', async (t) => {
  const s = await open(newDir());
  const a5 = pkt(1, 5);
  t.same(await s.put(a5), { stored: true });
  t.same(await s.put(pkt(1, 5)), { stored: false, reason: 'stale' });
  t.same(await s.put(pkt(1, 4)), { stored: false, reason: 'stale' });
  t.equal(s.size, 1);
  const r = await s.put(pkt(1, 6));
  t.ok(r.stored && r.replaced?.seq === 5 && hex(r.replaced.packet) === hex(a5.packet), 'returns what it replaced');
  t.equal(s.seqOf(a5.tplId, a5.nodeId), 6);
  t.equal(s.get(a5.tplId, a5.nodeId)?.seq, 6);
  t.equal(hex(s.get(a5.tplId, a5.nodeId)?.packet ?? new Uint8Array()), hex(pkt(1, 6).packet), 'the bytes as put');
  t.equal(s.getByTopic(a5.topic)?.seq, 6);
  t.equal(s.getByTopic('qis/1/o/nope'), undefined);
  t.equal(s.getByTopic(a5.topic.replace(/.$/, 'a')), undefined, 'another node on the same bucket');
  await s.put(pkt(2, 1));
  t.equal(s.size, 2);
  t.equal(s.seqOf(a5.tplId, keyOf(3).nodeId), undefined);
  t.equal(s.get(a5.tplId, keyOf(3).nodeId), undefined);
  await s.close();
});

t.test("store - put's indexed callback: the result, inside the call, before the record is durable", async (t) => {
  const s = await open(newDir());
  const seen: PutResult[] = [];
  const first = s.put(pkt(1, 5), (r) => seen.push(r));
  t.same(seen, [{ stored: true }], 'called before put returned its promise');
  t.equal(s.seqOf(pkt(1, 5).tplId, keyOf(1).nodeId), 5, 'the index holds it when the callback runs');
  t.same(await first, seen[0], 'the promise resolves with the same result');
  const again = s.put(pkt(1, 6), (r) => seen.push(r));
  t.ok(seen[1]?.stored === true && seen[1].replaced?.seq === 5, 'a replacement names what it replaced');
  await again;
  const stale = s.put(pkt(1, 4), (r) => seen.push(r));
  t.same(seen[2], { stored: false, reason: 'stale' }, 'stale: known at once too');
  t.same(await stale, seen[2]);
  await s.close();
});

t.test('store - a bucket move replaces the packet and the old topic is gone', async (t) => {
  const s = await open(newDir());
  const before = pkt(1, 1, { bucket: 0 });
  const after = pkt(1, 2, { bucket: 4 });
  t.not(before.topic, after.topic);
  await s.put(before);
  await s.put(pkt(2, 1, { bucket: 0 })); // keeps the old bucket alive
  const r = await s.put(after);
  t.ok(r.stored && r.replaced?.topic === before.topic, 'replaced carries the old topic');
  t.equal(s.size, 2);
  t.equal(s.getByTopic(before.topic), undefined);
  t.equal(s.getByTopic(after.topic)?.seq, 2);
  t.same(state(s), [`${pkt(2, 1, { bucket: 0 }).topic} 1`, `${after.topic} 2`].sort());
  const oldFilter = before.topic.replace(/[^/]+$/, '+');
  t.same([...s.match(oldFilter)].map((p) => p.nodeId), [keyOf(2).nodeId], 'the old cohort no longer has the node');
  // Moving the last node out of a bucket prunes it; moving back works.
  await s.put(pkt(2, 2, { bucket: 4 }));
  t.same([...s.match(oldFilter)], []);
  await s.put(pkt(1, 3, { bucket: 0 }));
  t.same([...s.match(oldFilter)].map((p) => p.seq), [3]);
  await s.close();
});

t.test('store - a tombstone removes the packet and blocks older ones for ever', async (t) => {
  let now = NOW;
  const dir = newDir();
  let s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000 });
  const p = pkt(1, 5);
  await s.put(p);
  t.same(await s.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 5 }), { stale: true }, 'a tombstone must be newer too');
  const r = await s.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 7 });
  t.ok('removed' in r && r.removed?.seq === 5);
  t.equal(s.size, 0);
  t.equal(s.seqOf(p.tplId, p.nodeId), 7, 'seqOf remembers the deletion');
  t.same(s.tombstone(p.tplId, p.nodeId), { tplId: p.tplId, nodeId: p.nodeId, seq: 7, at: NOW });
  t.equal(s.get(p.tplId, p.nodeId), undefined);
  t.same(state(s), []);
  t.same(await s.put(pkt(1, 6)), { stored: false, reason: 'stale' }, 'an older packet is not resurrected');
  t.same(await s.remove({ tplId: p.tplId, nodeId: keyOf(9).nodeId, seq: 3 }), {}, 'a tombstone for an unknown node is remembered');
  t.equal(s.seqOf(p.tplId, keyOf(9).nodeId), 3);

  // It survives a restart.
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000 });
  t.equal(s.seqOf(p.tplId, p.nodeId), 7);
  t.same(await s.put(pkt(1, 6)), { stored: false, reason: 'stale' });
  t.equal(s.stats().tombstones, 2);

  t.equal(s.stats().coldFloors, 1, 'the unknown node\'s is a cold floor (it never held a packet here)');

  // Past the TTL, a compaction and a restart the seq floor of the node that held a packet still
  // holds (an old copy held by a federation peer that was cut off for longer than the TTL cannot
  // come back); the cold floor is forgotten (docs/store.md, "Floors for keys never held").
  now = NOW + 60_000 * 100;
  t.equal(s.seqOf(p.tplId, p.nodeId), 7);
  t.same(await s.put(pkt(1, 6)), { stored: false, reason: 'stale' }, 'after the TTL an older seq is still stale');
  await s.compact();
  t.equal(s.stats().tombstones, 1, 'compaction keeps the seq floor of the node that held a packet…');
  t.equal(s.stats().coldFloors, 0, '…and forgets the cold floor past the TTL');
  t.equal(s.stats().logBytes, s.stats().liveBytes);
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000 });
  t.equal(s.seqOf(p.tplId, p.nodeId), 7, 'and that holds after a restart too');
  t.equal(s.seqOf(p.tplId, keyOf(9).nodeId), undefined, 'the cold floor stays forgotten');
  t.same(await s.put(pkt(1, 6)), { stored: false, reason: 'stale' });
  t.same(await s.put(pkt(1, 8)), { stored: true }, 'a newer packet is stored');
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000 });
  t.same(state(s), [`${pkt(1, 8).topic} 8`]);
  await s.close();
});

t.test('store - cold floors (tombstones of keys never held) are capped by maxColdFloors; a put makes a key warm for good', async (t) => {
  const dir = newDir();
  let s = await open(dir, { maxColdFloors: 2 });
  const tpl = pkt(1, 1).tplId;
  const [a, b, c] = [keyOf(41).nodeId, keyOf(42).nodeId, keyOf(43).nodeId];
  t.same(await s.remove({ tplId: tpl, nodeId: a, seq: 3 }), {}, 'a first cold floor');
  t.same(await s.remove({ tplId: tpl, nodeId: b, seq: 3 }), {}, 'a second');
  t.same(await s.remove({ tplId: tpl, nodeId: c, seq: 3 }), { full: true }, 'a third key never held: refused, the cap is 2');
  t.equal(s.seqOf(tpl, c), undefined, 'nothing kept for it');
  t.same(await s.remove({ tplId: tpl, nodeId: a, seq: 4 }), {}, 'a newer tombstone on a cold key replaces it (no growth)');
  t.same(await s.remove({ tplId: tpl, nodeId: a, seq: 4 }), { stale: true }, 'and its floor blocks as any floor');
  const warm = pkt(42, 5);
  t.equal(warm.nodeId, b);
  t.same(await s.put(warm), { stored: true }, 'a packet for a cold key is stored…');
  t.equal(s.stats().coldFloors, 1, '…and the key is warm: one cold floor left');
  const r = await s.remove({ tplId: tpl, nodeId: b, seq: 6 });
  t.equal('removed' in r ? r.removed?.seq : undefined, 5, 'its deletion removes the packet: a floor kept for ever');
  t.same(await s.remove({ tplId: tpl, nodeId: c, seq: 3 }), {}, 'room again for a cold floor');
  t.same([s.stats().tombstones, s.stats().coldFloors], [3, 2], 'three tombstones, two of them cold');
  await s.close();
  s = await open(dir, { maxColdFloors: 2 });
  t.same([s.stats().tombstones, s.stats().coldFloors], [3, 2], 'the replay tells cold floors apart (the record flag)');
  t.same([s.seqOf(tpl, a), s.seqOf(tpl, b), s.seqOf(tpl, c)], [4, 6, 3], 'every floor restored');
  t.same(await s.remove({ tplId: tpl, nodeId: keyOf(44).nodeId, seq: 1 }), { full: true }, 'the cap holds after a restart');
  await s.compact();
  await s.close();
  s = await open(dir, { maxColdFloors: 2 });
  t.same([s.stats().tombstones, s.stats().coldFloors], [3, 2], 'and after a compaction (it writes the flag)');
  await s.close();
});

t.test('store - the signed tombstone bytes are kept for the TTL, then only the seq floor', async (t) => {
  let now = NOW;
  const dir = newDir();
  let s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000, autoCompact: false });
  const p = pkt(2, 5);
  await s.put(p);
  const tomb = createOutcomePacket({ key: keyOf(2), template: bearing, situation, outcome: 'failure', seq: 9, ts: NOW, del: true });
  await s.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 9, topic: tomb.topic, packet: tomb.packet });
  const has = (st: Store, what: string): void => {
    const r = st.tombstone(p.tplId, p.nodeId);
    t.equal(r?.seq, 9, what);
    t.equal(r?.topic, tomb.topic, `${what}: topic`);
    t.same(r?.packet ? Buffer.from(r.packet) : undefined, Buffer.from(tomb.packet), `${what}: the signed bytes`);
  };
  has(s, 'at once');
  t.same(s.keys?.().filter((k) => k.nodeId === p.nodeId), [{ tplId: p.tplId, nodeId: p.nodeId, seq: 9, del: true }], 'keys() lists the deletion');
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000, autoCompact: false });
  has(s, 'after a restart');
  await s.compact();
  has(s, 'after a compaction within the TTL');
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000, autoCompact: false });
  has(s, 'after a compaction and a restart');
  t.equal(s.stats().logBytes, s.stats().liveBytes);
  // Past the TTL: no proof, the floor stays, the log shrinks to a plain removal record.
  now = NOW + 60_000;
  const before = s.stats().logBytes;
  t.same(s.tombstone(p.tplId, p.nodeId), { tplId: p.tplId, nodeId: p.nodeId, seq: 9, at: NOW });
  await s.compact();
  t.ok(s.stats().logBytes < before - 200, 'the proof bytes left the log');
  t.equal(s.stats().logBytes, s.stats().liveBytes);
  await s.close();
  s = await open(dir, { now: () => now, tombstoneTtlMs: 60_000 });
  t.same(s.tombstone(p.tplId, p.nodeId), { tplId: p.tplId, nodeId: p.nodeId, seq: 9, at: NOW });
  t.same(await s.put(pkt(2, 8)), { stored: false, reason: 'stale' });
  await s.close();
});

t.test('store - expired packets are invisible at once and sweepExpired removes them with a tombstone', async (t) => {
  let now = NOW;
  const dir = newDir();
  let s = await open(dir, { now: () => now });
  const expS = NOW / 1000 + 10;
  const a = pkt(1, 1, { exp: expS });
  const b = pkt(2, 1, { exp: expS + 100 });
  const c = pkt(3, 1);
  for (const p of [a, b, c]) await s.put(p);
  t.equal(s.get(a.tplId, a.nodeId)?.exp, expS);
  t.same(await s.sweepExpired(), []);
  now = expS * 1000; // exp is the last valid second (verifyPacket's rule: expired when now > exp)
  t.equal(s.get(a.tplId, a.nodeId)?.seq, 1);
  now = expS * 1000 + 1;
  t.equal(s.get(a.tplId, a.nodeId), undefined, 'hidden from get');
  t.equal(s.getByTopic(a.topic), undefined, 'and getByTopic');
  t.same(state(s), [`${b.topic} 1`, `${c.topic} 1`].sort(), 'and match');
  t.equal(s.size, 3, 'until swept');
  const gone = await s.sweepExpired();
  t.same(gone.map((p) => p.nodeId), [a.nodeId]);
  t.equal(s.size, 2);
  t.equal(s.seqOf(a.tplId, a.nodeId), 1, 'the seq is remembered: an older copy cannot come back');
  t.same(await s.put(pkt(1, 1)), { stored: false, reason: 'stale' });
  t.same((await s.sweepExpired(expS * 1000 + 200_000)).map((p) => p.nodeId), [b.nodeId], 'nowMs overrides the clock');
  await s.close();
  s = await open(dir, { now: () => now });
  t.same(state(s), [`${c.topic} 1`]);
  t.equal(s.seqOf(b.tplId, b.nodeId), 1);
  await s.close();
});

t.test('store - match with + and # at every depth equals a brute-force filter', async (t) => {
  const rnd = prng(20251123);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const id16 = (): string => b32(Uint8Array.from({ length: 16 }, () => Math.floor(rnd() * 256)));
  // Two templates with 2 and 4 levels, three values per level: cohorts overlap at every depth.
  const tpls = [
    { id: id16(), levels: [0, 1].map(() => [0, 1, 2].map(() => id16().slice(0, 10))) },
    { id: id16(), levels: [0, 1, 2, 3].map(() => [0, 1, 2].map(() => id16().slice(0, 10))) },
  ];
  const topicFor = (tpl: (typeof tpls)[number], node: string): string => `qis/1/o/${tpl.id}/${tpl.levels.map((l) => pick(l)).join('/')}/${node}`;
  const s = await open(newDir());
  const model = new Map<string, StoredPacket>(); // tplId/nodeId → live packet
  const seqs = new Map<string, number>();
  const fp = new Uint8Array(16);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 120; i++) {
      const key = keyOf(1000 + i);
      for (const tpl of tpls) {
        const k = `${tpl.id}/${key.nodeId}`;
        const seq = (seqs.get(k) ?? 0) + 1;
        seqs.set(k, seq);
        if (round > 0 && rnd() < 0.15) {
          await s.remove({ tplId: tpl.id, nodeId: key.nodeId, seq });
          model.delete(k);
          continue;
        }
        if (round > 0 && rnd() < 0.5) continue; // stays where it is
        const topic = topicFor(tpl, key.nodeId);
        const p = { tplId: tpl.id, nodeId: key.nodeId, topic, seq, packet: signPacket(key, topic, { fp, seq, ts: NOW, out: 'x' }) };
        t.equal((await s.put(p)).stored, true);
        model.set(k, p);
      }
    }
  }
  const all = [...model.values()];
  t.equal(s.size, all.length);
  const filters = new Set<string>(['#', 'qis/#', 'qis/1/#', 'qis/1/o/#', '+/+/+/#', 'qis/+/o/+/+/+/+', 'qis/1/o/+/+/+/+/+/+/+', '+', 'qis/1/+', 'nope/#']);
  for (let i = 0; i < 400; i++) {
    const levels = pick(all).topic.split('/');
    const f = levels.map((l) => (rnd() < 0.3 ? '+' : rnd() < 0.05 ? 'aaaaaaaaaa' : l));
    if (rnd() < 0.5) {
      const cut = Math.floor(rnd() * (levels.length + 1));
      f.splice(cut, f.length - cut, '#');
    } else if (rnd() < 0.2) {
      f.pop(); // one level short: matches nothing unless it ends in a wildcard somewhere else
    }
    filters.add(f.join('/'));
  }
  let compared = 0;
  for (const f of filters) {
    const want = all.filter((p) => topicMatches(f, p.topic)).map((p) => `${p.topic} ${p.seq}`).sort();
    const got = [...s.match(f)].map((p) => `${p.topic} ${p.seq}`).sort();
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      t.same(got, want, `filter ${f}`);
      break;
    }
    compared += want.length;
  }
  t.ok(compared > 1000, `compared ${filters.size} filters, ${compared} matches`);
  for (const bad of ['', 'a/#/b', 'a/b#', 'a+/b', '#/', 'qis/1/o/+x']) {
    t.equal(await codeOf(() => s.match(bad)), 'ERR_INVALID_ARGUMENT', `refuses ${JSON.stringify(bad)}`);
  }
  await s.close();
});

t.test('store - a paused match yields every packet that stays, once, while others move', async (t) => {
  const s = await open(newDir());
  const ps = Array.from({ length: 60 }, (_, i) => synthetic(i, 1, 0)); // one bucket
  for (const p of ps) await s.put(p);
  const filter = (ps[0] as StoredPacket).topic.replace(/[^/]+$/, '+');
  const it = s.match(filter)[Symbol.iterator]();
  const seen: string[] = [];
  for (let k = 0; k < 10; k++) seen.push((it.next().value as StoredPacket).nodeId);
  // Meanwhile: five of those already sent are removed (their slots get refilled from the end of
  // the bucket), five not sent yet move to another bucket.
  const sent = new Set(seen);
  const removed = ps.filter((p) => sent.has(p.nodeId)).slice(0, 5);
  const movedAway = ps.filter((p) => !sent.has(p.nodeId)).slice(0, 5);
  for (const p of removed) await s.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: 2 });
  for (const p of movedAway) await s.put({ ...synthetic(ps.indexOf(p), 2, 1) });
  for (let r = it.next(); r.done !== true; r = it.next()) seen.push(r.value.nodeId);
  t.equal(new Set(seen).size, seen.length, 'no packet twice');
  const away = new Set(movedAway.map((p) => p.nodeId));
  const stayed = ps.filter((p) => !away.has(p.nodeId)).map((p) => p.nodeId);
  t.same(stayed.filter((n) => !seen.includes(n)), [], 'every packet that stayed was yielded');
  t.same(seen.filter((n) => away.has(n)), [], 'none that had left');
  await s.close();
});

t.test('store - reopening restores packets, tombstones and seqs exactly', async (t) => {
  const rnd = prng(7);
  const dir = newDir();
  let s = await open(dir);
  const seqs: number[] = [];
  for (let op = 0; op < 400; op++) {
    const i = Math.floor(rnd() * 60);
    const seq = (seqs[i] ?? 0) + 1 + Math.floor(rnd() * 3);
    seqs[i] = seq;
    if (rnd() < 0.1) await s.remove({ tplId: bearing.tplId, nodeId: keyOf(i).nodeId, seq });
    else await s.put(pkt(i, seq, { bucket: Math.floor(rnd() * 9), ...(rnd() < 0.2 ? { exp: NOW / 1000 + 1e6 } : {}) }));
  }
  const before = state(s);
  const seqsBefore = seqs.map((_, i) => s.seqOf(bearing.tplId, keyOf(i).nodeId));
  const stats = s.stats();
  await s.close();
  await s.close(); // idempotent
  s = await open(dir);
  t.same(state(s), before);
  t.same(seqs.map((_, i) => s.seqOf(bearing.tplId, keyOf(i).nodeId)), seqsBefore);
  t.match(s.stats(), { live: stats.live, tombstones: stats.tombstones, logBytes: stats.logBytes, liveBytes: stats.liveBytes });
  t.same(s.recovery, { records: 400, tornBytes: 0, damaged: [], openMs: s.recovery.openMs });
  const exp = [...s.match('#')].filter((p) => p.exp !== undefined);
  t.ok(exp.length > 0 && exp.every((p) => p.exp === NOW / 1000 + 1e6), 'exp survives');
  await s.close();
});

t.test('store - a log cut at any byte opens and keeps every complete record', async (t) => {
  const dir = newDir();
  const s = await open(dir);
  const ops: Array<() => Promise<unknown>> = [];
  for (let k = 0; k < 40; k++) {
    const i = k % 15;
    const seq = k + 1;
    ops.push(k % 9 === 8 ? () => s.remove({ tplId: bearing.tplId, nodeId: keyOf(i).nodeId, seq }) : () => s.put(pkt(i, seq, { bucket: k % 4 })));
  }
  // The expected state after the first n records, from a store that never crashed.
  const expected: string[][] = [];
  const ref = await open(newDir());
  expected.push(state(ref));
  for (let k = 0; k < ops.length; k++) {
    await (ops[k] as () => Promise<unknown>)();
    const i = k % 15;
    const seq = k + 1;
    await (k % 9 === 8 ? ref.remove({ tplId: bearing.tplId, nodeId: keyOf(i).nodeId, seq }) : ref.put(pkt(i, seq, { bucket: k % 4 })));
    expected.push(state(ref));
  }
  await ref.close();
  await s.close();
  const log = readFileSync(join(dir, STORE_FILES.log));
  const ends = recordEnds(log);
  t.equal(ends.length, 40);
  t.equal(ends.at(-1), log.length);
  const rnd = prng(99);
  const cuts = new Set<number>([0, 3, STORE_FILES.headerBytes, STORE_FILES.headerBytes + 1, ...ends.slice(0, 5), (ends[10] as number) - 1, log.length - 1]);
  while (cuts.size < 40) cuts.add(Math.floor(rnd() * log.length));
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    const d = newDir();
    const copy = await open(d); // creates the directory and an empty log, then overwritten below
    await copy.close();
    writeFileSync(join(d, STORE_FILES.log), log.subarray(0, cut));
    const c = await open(d);
    const complete = ends.filter((e) => e <= cut).length;
    const boundary = complete === 0 ? STORE_FILES.headerBytes : (ends[complete - 1] as number);
    const ok =
      JSON.stringify(state(c)) === JSON.stringify(expected[complete]) &&
      c.recovery.records === complete &&
      c.recovery.tornBytes === Math.max(0, cut - boundary) &&
      c.recovery.damaged.length === 0;
    if (!ok) {
      t.same({ state: state(c), records: c.recovery.records, torn: c.recovery.tornBytes }, { state: expected[complete], records: complete, torn: cut - boundary }, `cut at ${cut}`);
      await c.close();
      break;
    }
    // The torn tail is gone from the file, so the next append lands after the last good record.
    t.equal(statSync(join(d, STORE_FILES.log)).size, boundary, `cut at ${cut}: file truncated to ${boundary}`);
    await c.put(pkt(50, 1));
    await c.close();
    const again = await open(d);
    t.equal(again.recovery.records, complete + 1, `cut at ${cut}: appends after the cut replay`);
    await again.close();
  }
});

t.test('store - corruption in the middle is skipped, the records around it kept and reported', async (t) => {
  const dir = newDir();
  let s = await open(dir);
  for (let i = 0; i < 30; i++) await s.put(pkt(i, 1, { bucket: i }));
  await s.close();
  const path = join(dir, STORE_FILES.log);
  const log = readFileSync(path);
  const ends = recordEnds(log);
  // A flipped bit inside record 10 (its frame still looks sane): that record alone is lost.
  const bad = Buffer.from(log);
  const at10 = ends[9] as number;
  bad[at10 + 60] = (bad[at10 + 60] as number) ^ 0x10;
  writeFileSync(path, bad);
  s = await open(dir);
  t.equal(s.size, 29);
  t.equal(s.get(bearing.tplId, keyOf(10).nodeId), undefined);
  t.equal(s.get(bearing.tplId, keyOf(29).nodeId)?.seq, 1, 'records after the damage are kept');
  t.same(s.recovery.damaged, [{ offset: at10, bytes: (ends[10] as number) - at10 }]);
  t.equal(s.stats().damagedBytes, (ends[10] as number) - at10);
  t.equal(s.recovery.tornBytes, 0);
  await s.put(pkt(10, 2));
  await s.close();
  s = await open(dir);
  t.equal(s.size, 30, 'appends after a damaged region are found on the next open');
  await s.compact();
  t.equal(s.stats().logBytes, s.stats().liveBytes, 'compaction rewrites the log without the damage');
  await s.close();
  s = await open(dir);
  t.same(s.recovery.damaged, []);
  t.equal(s.size, 30);
  await s.close();

  // Garbage over several records, its first length field absurd: resynchronised at the next record.
  const log2 = readFileSync(path);
  const ends2 = recordEnds(log2);
  const from = (ends2[4] as number) + 2;
  const to = (ends2[8] as number) + 5;
  const rnd = prng(3);
  for (let k = from; k < to; k++) log2[k] = Math.floor(rnd() * 256);
  log2.writeUInt32LE(0xfffffff0, ends2[4] as number); // record 6's length field now says ~4 GiB
  writeFileSync(path, log2);
  s = await open(dir);
  t.equal(s.size, 30 - 5, 'records 6 to 10 are lost, the others kept');
  t.same(s.recovery.damaged, [{ offset: ends2[4], bytes: (ends2[9] as number) - (ends2[4] as number) }]);
  await s.close();
});

t.test('store - compaction: 20,000 updates of 200 nodes leave 200 packets and a small log', async (t) => {
  const dir = newDir();
  let s = await open(dir, { fsync: 'always', compactMinBytes: 256 * 1024 });
  const variants = Array.from({ length: 200 }, (_, i) => [0, 1, 2, 3].map((b) => pkt(i, 1, { bucket: i + b })));
  let maxLog = 0;
  for (let round = 1; round <= 100; round++) {
    // Real packets, signed once per node and bucket; the seq of the round is the store's key.
    await Promise.all(variants.map((v) => s.put({ ...(v[round % 4] as StoredPacket), seq: round })));
    maxLog = Math.max(maxLog, s.stats().logBytes);
  }
  const st = s.stats();
  t.equal(s.size, 200);
  t.ok(st.compactions >= 5, `compacted automatically (${st.compactions} times)`);
  t.ok(maxLog < 1.5 * 2 ** 20, `the log stayed bounded: at most ${maxLog} bytes for ${st.liveBytes} live, ${20_000 * 330} written`);
  // The last put may have started an automatic compaction, which compact() joins (and which copies
  // the appends made while it ran); the second call rewrites the log from the live state alone.
  await s.compact();
  await s.compact();
  t.equal(s.stats().logBytes, s.stats().liveBytes, 'after compact() the log holds exactly the live records');
  t.equal(statSync(join(dir, STORE_FILES.log)).size, s.stats().logBytes);
  const liveBytes = [...s.match('#')].reduce((n, p) => n + p.packet.length, 0);
  t.equal(s.stats().memoryBytes, liveBytes, 'packet memory is the live packets');
  const expect = state(s);
  t.equal(expect.length, 200);
  t.ok(expect.every((x) => x.endsWith(' 100')));
  await s.close();
  s = await open(dir);
  t.same(state(s), expect);
  t.equal(hex(s.get(bearing.tplId, keyOf(7).nodeId)?.packet ?? new Uint8Array()), hex((variants[7] as StoredPacket[])[0]?.packet ?? new Uint8Array()));
  t.notOk(existsSync(join(dir, STORE_FILES.temp)));
  await s.close();
});

t.test('store - puts, moves and removals made during a compaction are kept', async (t) => {
  const dir = newDir();
  let s = await open(dir, { autoCompact: false });
  const n = 4000; // > 1 MiB of records: the compaction writes several chunks and yields between them
  const base = Array.from({ length: n }, (_, i) => synthetic(i, 1, i % 11));
  const moved = Array.from({ length: 300 }, (_, i) => synthetic(i * 13, 1, (i * 13 + 5) % 11));
  await Promise.all(base.map((p) => s.put(p)));
  await Promise.all(base.map((p) => s.put({ ...p, seq: 4 }))); // a superseded copy of each: the compaction has work
  const rnd = prng(11);
  const seqs = new Array<number>(n).fill(4);
  const c = s.compact();
  t.equal(s.compact(), c, 'a second compact() joins the running one');
  let settled = false;
  void c.then(() => (settled = true));
  let during = 0;
  for (let wave = 0; wave < 40; wave++) {
    const ops: Promise<unknown>[] = [];
    for (let j = 0; j < 50; j++) {
      const i = Math.floor(rnd() * n);
      const seq = (seqs[i] as number) + 1;
      seqs[i] = seq;
      if (rnd() < 0.2) ops.push(s.remove({ tplId: bearing.tplId, nodeId: (base[i] as StoredPacket).nodeId, seq }));
      else if (i % 13 === 0 && i / 13 < 300) ops.push(s.put({ ...(moved[i / 13] as StoredPacket), seq }));
      else ops.push(s.put({ ...(base[i] as StoredPacket), seq }));
    }
    if (!settled) during += ops.length;
    await Promise.all(ops);
  }
  await c;
  t.ok(during > 0, `${during} operations ran while compacting`);
  t.equal(s.stats().compactions, 1);
  const expect = state(s);
  const seqOf = (st: Store): Array<number | undefined> => base.map((p) => st.seqOf(p.tplId, p.nodeId));
  t.same(seqOf(s), seqs, 'every operation is in memory');
  await s.close();
  s = await open(dir);
  t.same(state(s), expect, 'and on disk');
  t.same(seqOf(s), seqs);
  await s.close();
});

t.test('store - kill -9: every acknowledged put survives', async (t) => {
  const storeJs = fileURLToPath(new URL('../dist/broker/store.js', import.meta.url));
  if (!existsSync(storeJs)) {
    t.fail(`${storeJs} is missing: build first (npx tsc -p tsconfig.json)`);
    return;
  }
  const dir = newDir();
  const work = newDir();
  mkdirSync(work);
  // 40 nodes × 6 signed variants (buckets); round r puts variant r mod 6 of every node with seq r + 1.
  const nodes = 40;
  const variants = Array.from({ length: nodes }, (_, i) => Array.from({ length: 6 }, (_, v) => pkt(i, 1, { bucket: v })));
  writeFileSync(
    join(work, 'packets.json'),
    JSON.stringify(variants.map((vs) => vs.map((p) => ({ tplId: p.tplId, nodeId: p.nodeId, topic: p.topic, hex: hex(p.packet) })))),
  );
  const script = join(work, 'writer.mjs');
  writeFileSync(
    script,
    `import { readFileSync, writeSync } from 'node:fs';
const [storeUrl, dir, data] = process.argv.slice(2);
const { openStore } = await import(storeUrl);
const variants = JSON.parse(readFileSync(data, 'utf8'));
// Small compaction threshold: the kill may land inside a compaction too.
const store = await openStore({ dir, fsync: 'always', compactMinBytes: 32 * 1024 });
// An ack is written before the next put starts. stdout is a non-blocking pipe: when a busy parent
// has not read it, a write fails with EAGAIN; wait a millisecond and write the rest.
const pause = new Int32Array(new SharedArrayBuffer(4));
const say = (s) => {
  const b = Buffer.from(s);
  for (let off = 0; off < b.length; ) {
    try { off += writeSync(1, b, off); } catch (e) { if (e.code !== 'EAGAIN') throw e; Atomics.wait(pause, 0, 0, 1); }
  }
};
say('ready\\n');
for (let r = 0; r < 100000; r++) {
  await Promise.all(variants.map((vs) => {
    const v = vs[r % vs.length];
    return store.put({ tplId: v.tplId, nodeId: v.nodeId, topic: v.topic, seq: r + 1, packet: Buffer.from(v.hex, 'hex') })
      .then((res) => { if (res.stored) say(v.nodeId + ' ' + (r + 1) + '\\n'); });
  }));
}
`,
  );
  const child = spawn(process.execPath, [script, pathToFileURL(storeJs).href, dir, join(work, 'packets.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let acks = 0;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
    acks += d.split('\n').length - 1;
    if (acks >= 800) child.kill('SIGKILL');
  });
  child.stderr.on('data', (d: string) => (err += d));
  const signal = await new Promise<NodeJS.Signals | null>((res) => child.on('close', (_code, sig) => res(sig)));
  t.equal(signal, 'SIGKILL', `killed mid-run ${err}`);
  const acked = new Map<string, number>();
  for (const line of out.split('\n').slice(0, -1)) {
    if (line === 'ready') continue;
    const [node, seq] = line.split(' ');
    acked.set(node as string, Math.max(acked.get(node as string) ?? 0, Number(seq)));
  }
  t.ok(acked.size === nodes, `${acks - 1} puts acknowledged before the kill`);
  const s = await open(dir);
  t.notOk(existsSync(join(dir, STORE_FILES.temp)), 'an interrupted compaction left nothing behind');
  let lost = 0;
  let wrong = 0;
  for (let i = 0; i < nodes; i++) {
    const nodeId = keyOf(i).nodeId;
    const seq = s.seqOf(bearing.tplId, nodeId) ?? 0;
    if (seq < (acked.get(nodeId) ?? 0)) lost++;
    const want = (variants[i] as StoredPacket[])[(seq - 1) % 6] as StoredPacket;
    const got = s.get(bearing.tplId, nodeId);
    if (got?.topic !== want.topic || hex(got.packet) !== hex(want.packet)) wrong++;
  }
  t.equal(lost, 0, 'no acknowledged seq is missing');
  t.equal(wrong, 0, 'each node holds the packet of its stored seq, on its topic');
  t.comment(`recovered ${s.size} packets from ${s.recovery.records} records; torn tail ${s.recovery.tornBytes} B; ${s.stats().compactions} compactions since open`);
  await s.close();
});

t.test('store - options and arguments are checked', async (t) => {
  const dir = newDir();
  for (const bad of [
    {},
    { dir: '' },
    { dir, fsync: 'sometimes' },
    { dir, fsyncIntervalMs: 0 },
    { dir, tombstoneTtlMs: -1 },
    { dir, compactRatio: 1 },
    { dir, compactRatio: Number.NaN },
    { dir, compactMinBytes: -1 },
    { dir, autoCompact: 'yes' },
    { dir, now: 5 },
  ]) {
    t.equal(await codeOf(openStore(bad as unknown as StoreOptions)), 'ERR_INVALID_ARGUMENT', JSON.stringify(bad));
  }
  writeFileSync(join(root, 'a-file'), '');
  t.equal(await codeOf(openStore({ dir: join(root, 'a-file', 'store') })), 'ERR_FILE_IO', 'a dir that cannot be created');
  const s = await open(dir);
  const p = pkt(1, 1);
  const other = pkt(2, 1);
  for (const [what, bad] of [
    ['nodeId of another topic', { ...p, nodeId: other.nodeId }],
    ['tplId of another template', { ...p, tplId: b32(new Uint8Array(16)) }],
    ['not an outcome topic', { ...p, topic: 'qis/1/t/x' }],
    ['seq < 0', { ...p, seq: -1 }],
    ['seq not an integer', { ...p, seq: 1.5 }],
    ['seq beyond 2^53', { ...p, seq: 2 ** 53 }],
    ['empty packet', { ...p, packet: new Uint8Array(0) }],
    ['packet over 512 bytes', { ...p, packet: new Uint8Array(513) }],
    ['packet not bytes', { ...p, packet: 'abc' }],
    ['exp < 0', { ...p, exp: -1 }],
  ] as const) {
    t.equal(await codeOf(s.put(bad as unknown as StoredPacket)), 'ERR_INVALID_ARGUMENT', what);
  }
  t.equal(await codeOf(s.remove({ tplId: 'x', nodeId: p.nodeId, seq: 1 })), 'ERR_INVALID_ARGUMENT');
  t.equal(await codeOf(s.remove({ tplId: p.tplId, nodeId: 'x', seq: 1 })), 'ERR_INVALID_ARGUMENT');
  t.equal(await codeOf(s.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: Number.NaN })), 'ERR_INVALID_ARGUMENT');
  t.equal(await codeOf(s.sweepExpired(Number.NaN)), 'ERR_INVALID_ARGUMENT');
  t.equal(s.size, 0, 'nothing refused was stored');
  t.equal(s.stats().logBytes, STORE_FILES.headerBytes, 'nor written');
  await s.close();
});

t.test('store - one store per directory, close is idempotent, a closed store refuses writes', async (t) => {
  const dir = newDir();
  const s = await open(dir);
  t.equal(await codeOf(open(dir)), 'ERR_FILE_IO', 'a second open in the same process is refused');
  await s.put(pkt(1, 1));
  await Promise.all([s.close(), s.close()]);
  await s[Symbol.asyncDispose]();
  t.equal(await codeOf(s.put(pkt(1, 2))), 'ERR_FILE_IO');
  t.equal(await codeOf(s.remove({ tplId: bearing.tplId, nodeId: keyOf(1).nodeId, seq: 3 })), 'ERR_FILE_IO');
  t.equal(await codeOf(s.compact()), 'ERR_FILE_IO');
  t.equal(s.get(bearing.tplId, keyOf(1).nodeId)?.seq, 1, 'reads still answer from memory');
  t.notOk(existsSync(join(dir, STORE_FILES.lock)), 'the lock is released');

  // A lock held by a live process is respected; one left by a dead process is taken over.
  writeFileSync(join(dir, STORE_FILES.lock), `${process.ppid}\n`);
  t.equal(await codeOf(open(dir)), 'ERR_FILE_IO');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid;
  writeFileSync(join(dir, STORE_FILES.lock), `${dead}\n`);
  const again = await open(dir);
  t.equal(again.size, 1);
  t.equal(readFileSync(join(dir, STORE_FILES.lock), 'utf8').split(' ')[0], String(process.pid));
  await again[Symbol.asyncDispose]();
});

t.test('store - a file that is not a store log is refused, a stale temp file removed', async (t) => {
  const dir = newDir();
  const s = await open(dir);
  await s.put(pkt(1, 1));
  await s.close();
  writeFileSync(join(dir, STORE_FILES.temp), 'half a compaction');
  const r = await open(dir);
  t.equal(r.size, 1);
  t.notOk(existsSync(join(dir, STORE_FILES.temp)));
  await r.close();
  writeFileSync(join(dir, STORE_FILES.log), 'hello, I am not a log');
  t.equal(await codeOf(open(dir)), 'ERR_FILE_IO');
  t.equal(readFileSync(join(dir, STORE_FILES.log), 'utf8'), 'hello, I am not a log', 'and left as it was');
  t.notOk(existsSync(join(dir, STORE_FILES.lock)), 'a failed open releases the lock');
  truncateSync(join(dir, STORE_FILES.log), 0);
  const empty = await open(dir);
  t.equal(empty.size, 0, 'an empty file (cut before its header was written) is an empty store');
  await empty.close();
});

t.test('store - every fsync policy is durable across close and reopen', async (t) => {
  for (const fsync of ['always', 'interval', 'never'] as const) {
    const dir = newDir();
    const s = await openStore({ dir, fsync, fsyncIntervalMs: 5 });
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.put(pkt(i, 1, { bucket: i }))));
    await new Promise((r) => setTimeout(r, 20)); // lets an interval sync run
    await s.close();
    const r = await openStore({ dir });
    t.equal(r.size, 50, fsync);
    await r.close();
  }
});

t.test('store - I/O failures: a failed write or sync stops writes, a failed compaction changes nothing', async (t) => {
  // The real store over a node:fs/promises whose file handles can be told to fail or to be slow.
  const real = await import('node:fs/promises');
  const ctl = { failWrite: false, failSync: false, slowTmpMs: 0 };
  const eio = (): Error => Object.assign(new Error('EIO: i/o error (injected)'), { code: 'EIO' });
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const fakeOpen = async (...args: Parameters<typeof real.open>): Promise<Awaited<ReturnType<typeof real.open>>> => {
    const fh = await real.open(...args);
    const isTmp = String(args[0]).endsWith(STORE_FILES.temp);
    return withMethods(fh, {
      write: (async (...w: Parameters<typeof fh.write>) => {
        if (ctl.failWrite) throw eio();
        if (isTmp && ctl.slowTmpMs > 0) await sleep(ctl.slowTmpMs);
        return fh.write(...w);
      }) as typeof fh.write,
      datasync: async () => {
        if (ctl.failSync) throw eio();
        return fh.datasync();
      },
    });
  };
  const mocked = await t.mockImport<typeof import('../broker/store.js')>('../broker/store.js', {
    'node:fs/promises': { ...real, open: fakeOpen },
  });

  for (const what of ['write', 'sync'] as const) {
    const dir = newDir();
    const s = await mocked.openStore({ dir, fsync: 'always' });
    await s.put(pkt(1, 1));
    if (what === 'write') ctl.failWrite = true;
    else ctl.failSync = true;
    const err = await s.put(pkt(2, 1)).catch((e: unknown) => e);
    t.ok(err instanceof QisError && err.code === 'ERR_FILE_IO' && /accepts no more writes/.test(err.message), `a failed ${what} rejects the put`);
    ctl.failWrite = ctl.failSync = false;
    t.equal(await codeOf(s.put(pkt(3, 1))), 'ERR_FILE_IO', `after a failed ${what} every write is refused`);
    t.equal(await codeOf(s.compact()), 'ERR_FILE_IO');
    await s.close();
    const r = await open(dir);
    t.equal(r.get(bearing.tplId, keyOf(1).nodeId)?.seq, 1, 'what was acknowledged is there');
    t.equal(r.get(bearing.tplId, keyOf(3).nodeId), undefined);
    await r.close();
  }

  // A compaction that cannot write its file fails, is counted, and leaves the store working.
  const dir = newDir();
  const s = await mocked.openStore({ dir, autoCompact: false });
  for (let i = 0; i < 20; i++) await s.put(pkt(i, 1));
  for (let i = 0; i < 20; i++) await s.put(pkt(i, 2));
  const logBefore = s.stats().logBytes;
  mkdirSync(join(dir, STORE_FILES.temp));
  t.equal(await codeOf(s.compact()), 'ERR_FILE_IO');
  t.match(s.stats(), { compactionFailures: 1, lastCompactionError: /compaction/, logBytes: logBefore, compactions: 0 });
  await s.put(pkt(1, 3));
  rmSync(join(dir, STORE_FILES.temp), { recursive: true });
  await s.compact();
  t.equal(s.stats().logBytes, s.stats().liveBytes);

  // A slow compaction: more than 256 KiB of puts arrive meanwhile and are copied in rounds.
  ctl.slowTmpMs = 15;
  const c = s.compact();
  let n = 0;
  for (let wave = 0; wave < 12; wave++) {
    await Promise.all(Array.from({ length: 100 }, (_, j) => s.put({ ...pkt((wave * 100 + j) % 300, 1, { bucket: j % 3 }), seq: 10 + wave })));
    n += 100;
  }
  await c;
  t.equal(s.stats().compactions, 2);
  const expect = state(s);
  t.equal(expect.length, 300);

  // close() during a compaction abandons it: nothing is lost and no temp file stays.
  const prev = s.get(bearing.tplId, keyOf(1).nodeId);
  const c2 = s.compact();
  const put = s.put({ ...pkt(1, 1, { bucket: 5 }), seq: 100 });
  const closed = s.close();
  t.equal(await codeOf(s.put(pkt(2, 1000))), 'ERR_FILE_IO', 'closing: new writes are refused');
  t.same(await put, { stored: true, replaced: prev }, 'a write queued before close() completes');
  const last = state(s);
  t.equal(await codeOf(c2), 'ERR_FILE_IO', 'the abandoned compaction says so');
  await closed;
  ctl.slowTmpMs = 0;
  t.notOk(existsSync(join(dir, STORE_FILES.temp)));
  const r = await open(dir);
  t.same(state(r), last);
  t.equal(n, 1200);
  await r.close();
});

t.test('store - federation digests kept up to date by watchKeys equal digests computed afresh', async (t) => {
  let now = NOW;
  const s = await open(newDir(), { now: () => now });
  const rnd = prng(13);
  const seqs = new Map<number, number>();
  const next = (i: number): number => {
    const q = (seqs.get(i) ?? 0) + 1 + Math.floor(rnd() * 3);
    seqs.set(i, q);
    return q;
  };
  for (let i = 0; i < 300; i++) await s.put(synthetic(i, next(i), i % 5));
  const tpl = synthetic(0, 1, 0).tplId;
  const check = (when: string): void => {
    for (const scope of ['*', [tpl], ['aaaaaaaaaaaaaaaaaaaaaaaaaa'], [tpl, tpl]] as const) {
      const fresh = digest(s.keys?.() ?? [], scope);
      const kept = storeRanges(s, scope);
      t.equal(kept.ranges.toString('hex'), fresh.ranges.toString('hex'), `${when}, scope ${JSON.stringify(scope)}: range digests`);
      t.equal(kept.n, fresh.n, `${when}: count`);
      const keysOf = (ks: readonly { tplId: string; nodeId: string; seq: number; del: boolean }[]): string[] => ks.map((k) => `${k.nodeId} ${k.seq} ${k.del}`).sort();
      let same = true;
      for (let r = 0; r < RANGES; r++) if (keysOf(kept.keysIn(r)).join() !== keysOf(fresh.byRange.get(r) ?? []).join()) same = false;
      t.ok(same, `${when}: the keys of every range`);
    }
  };
  check('built');
  for (let round = 0; round < 4; round++) {
    for (let k = 0; k < 200; k++) {
      const i = Math.floor(rnd() * 400); // some new keys, some known
      const op = rnd();
      if (op < 0.6) await s.put(synthetic(i, next(i), Math.floor(rnd() * 5)));
      else if (op < 0.8) await s.remove({ tplId: tpl, nodeId: synthetic(i, 1, 0).nodeId, seq: next(i) });
      else await s.put({ ...synthetic(i, next(i), 0), exp: now / 1000 + 1 });
    }
    now += 5_000;
    await s.sweepExpired();
    check(`after round ${round}`);
  }
  t.equal(storeRanges(s, '*').n, s.keys?.().length, 'one entry per key');
  await s.close();
});

t.test('store - digestReady builds a big index in slices (the event loop turns meanwhile), keeps what changes during it, and equals a digest computed afresh', async (t) => {
  const s = await open(newDir());
  const n = 3 * DIGEST_SLICE + 500;
  const puts: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) puts.push(s.put(synthetic(i, 1, i % 5)));
  await Promise.all(puts);
  const tpl = synthetic(0, 1, 0).tplId;
  let turns = 0;
  let counting = true;
  const count = (): void => {
    turns++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  const ready = digestReady(s);
  t.ok(ready instanceof Promise, `${n} keys to hash: a promise, not the work at once`);
  t.equal(digestReady(s), ready, 'a second caller meanwhile shares it');
  // While it is seeding: newer states of known keys, removals, a new key (what the store reports
  // after the snapshot must win over the snapshot's older state).
  await new Promise((r) => setImmediate(r));
  await s.put(synthetic(1, 5, 1));
  await s.put(synthetic(n - 1, 7, 0));
  await s.remove({ tplId: tpl, nodeId: synthetic(2, 1, 0).nodeId, seq: 9 });
  await s.remove({ tplId: tpl, nodeId: synthetic(n - 2, 1, 0).nodeId, seq: 9 });
  await s.put(synthetic(n + 10, 1, 3));
  await ready;
  counting = false;
  t.ok(turns >= Math.floor(n / DIGEST_SLICE), `the event loop turned while it worked (${turns} turns for ${n} keys, ${DIGEST_SLICE} a turn)`);
  t.equal(digestReady(s), undefined, 'up to date: nothing to wait for');
  const fresh = digest(s.keys?.() ?? [], '*');
  const kept = storeRanges(s, '*');
  t.equal(kept.ranges.toString('hex'), fresh.ranges.toString('hex'), 'the range digests of a digest computed afresh');
  t.equal(kept.n, fresh.n, 'the same count');
  t.equal(kept.n, n + 1, 'every key once, the new one too (removed keys are tombstones, still keys)');
  // Later changes, more than a slice of them: again in slices, again equal.
  for (let i = 0; i < DIGEST_SLICE + 100; i++) await s.put(synthetic(i, 20, i % 5));
  const again = digestReady(s);
  t.ok(again instanceof Promise, 'more than a slice changed: in slices again');
  await again;
  t.equal(storeRanges(s, '*').ranges.toString('hex'), digest(s.keys?.() ?? [], '*').ranges.toString('hex'), 'equal after the second round');
  await s.close();
});

t.test('store - storeRanges called while digestReady is still seeding answers the whole store at once', async (t) => {
  const s = await open(newDir());
  const puts: Promise<unknown>[] = [];
  for (let i = 0; i < 2 * DIGEST_SLICE + 10; i++) puts.push(s.put(synthetic(i, 1, i % 5)));
  await Promise.all(puts);
  const ready = digestReady(s);
  t.ok(ready instanceof Promise, 'seeding in slices');
  await new Promise((r) => setImmediate(r));
  const now = storeRanges(s, '*');
  const fresh = digest(s.keys?.() ?? [], '*');
  t.equal(now.ranges.toString('hex'), fresh.ranges.toString('hex'), 'mid-build: the digest of every key, not of the slices seeded so far');
  t.equal(now.n, fresh.n);
  await ready;
  t.equal(storeRanges(s, '*').ranges.toString('hex'), fresh.ranges.toString('hex'), 'and the same once done');
  await s.close();
});
