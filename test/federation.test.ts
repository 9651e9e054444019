// Federation (issue 5): regions linked over real MQTT on loopback; real qis brokers (one in a
// child process killed with SIGKILL), a plain Aedes as a lying peer. Mosquitto interop is in
// test/federation-mosquitto.test.ts.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { createNode, parseOutcomeTopic, signScorePacket } from '../src/index.js';
import { configFromFlags, parseBrokerConfig, resolveBrokerOptions } from '../broker/config.js';
import { startAedes } from './helpers/aedes.js';
import { bearing, fixedKey } from './helpers/fixtures.js';
import { readRetained } from './helpers/retained.js';
import { peer, freePort, startRegion, until, digestOf, packetOf, publishAll, SIT, type Region } from './helpers/federation.js';

const FED_PROC = fileURLToPath(new URL('./fixtures/fed-broker-proc.mjs', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'qis-fed-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const caughtUp = (r: Region, n = 1): boolean => (r.broker.federation?.status() ?? []).every((s) => s.connected && s.catchUps >= n);
/** Catch-ups run so far by the first link of each region (a hub's spokes: their one link). */
const catchUpsOf = (...rs: Region[]): number => rs.reduce((sum, r) => sum + (r.broker.federation?.status()[0]?.catchUps ?? 0), 0);
const liveOf = (r: Region, nodeId: string): string[] => [...r.broker.store.match(`qis/1/o/${bearing.tplId}/#`)].filter((p) => p.nodeId === nodeId).map((p) => p.topic);

t.test('federation - 3 regions in a ring: published at A, a query at C finds it; a bucket move leaves one packet at C', async (t) => {
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  // A → B → C → A: each links to the next; every link carries both directions.
  const a = await startRegion('a', pa, [peer(pb)]);
  const b = await startRegion('b', pb, [peer(pc)]);
  const c = await startRegion('c', pc, [peer(pa)]);
  t.teardown(async () => {
    for (const r of [a, b, c]) await r.close();
  });
  await until(() => caughtUp(a) && caughtUp(b) && caughtUp(c), 'links up');
  const na = await createNode({ url: a.url, dataDir: join(tmp, 'ring-a') });
  const nc = await createNode({ url: c.url, dataDir: join(tmp, 'ring-c') });
  t.teardown(async () => {
    await na.close();
    await nc.close();
  });
  const first = await na.publish(bearing, SIT, 'failure', { conf: 0.9 });
  t.ok(first.acked, 'A acknowledged');
  const nodeId = parseOutcomeTopic(first.topic).nodeId;
  await until(() => c.broker.store.get(bearing.tplId, nodeId) !== undefined, 'C stores it');
  const q = await nc.query(bearing, SIT, { minCohort: 1, timeoutMs: 30_000 });
  t.equal(q.packets.length, 1, 'the query at C finds the packet published at A');
  t.equal(q.packets[0]?.nodeId, nodeId);
  t.equal(q.broker, 'qis');

  // A bucket move: the node publishes for another situation (a tombstone for the old bucket first).
  const moved = await na.publish(bearing, { ...SIT, load_kn: 120 }, 'no_failure', { conf: 0.8 });
  t.not(moved.topic, first.topic, 'a new bucket');
  await until(() => c.broker.store.get(bearing.tplId, nodeId)?.seq === moved.seq, 'C has the moved packet');
  for (const r of [a, b, c]) t.same(liveOf(r, nodeId), [moved.topic], `${r.name}: one packet, on the new topic`);
  await until(() => digestOf(a) === digestOf(b) && digestOf(b) === digestOf(c), 'the three stores agree');
  const old = await nc.query(bearing, SIT, { minCohort: 1, timeoutMs: 30_000 });
  t.equal(old.packets.length, 0, 'the old cohort at C no longer has the node');
});

/** Regions A and B each linked to the hub M (no follow-up catch-up), all closed at the end of `t`. */
async function hubOfTwo(t: Test): Promise<{ a: Region; b: Region; m: Region }> {
  const [pa, pb, pm] = [await freePort(), await freePort(), await freePort()];
  const m = await startRegion('m', pm, []);
  const a = await startRegion('a', pa, [peer(pm)], undefined, { followUpMs: 0 });
  const b = await startRegion('b', pb, [peer(pm)], undefined, { followUpMs: 0 });
  t.teardown(async () => {
    for (const r of [a, b, m]) await r.close();
  });
  return { a, b, m };
}

t.test('federation - partition: publish and delete on both sides, heal: stores identical, nothing deleted comes back', async (t) => {
  // A and B both link to the hub M; stopping M cuts A from B.
  // No follow-up catch-up: what one side pushes to M after the other's catch-up must reach it live.
  const { a, b, m } = await hubOfTwo(t);
  await until(() => caughtUp(a) && caughtUp(b), 'links up');
  const N = 60;
  await publishAll(a.url, Array.from({ length: N }, (_, i) => packetOf(i, 7, 10)));
  await until(() => b.broker.store.size === N && m.broker.store.size === N, 'B and M have the 60 packets');

  await m.stop();
  await until(() => !a.broker.federation?.status()[0]?.connected && !b.broker.federation?.status()[0]?.connected, 'links down');
  // During the partition. At A: nodes 0-9 deleted, 10-19 updated. At B: 20-29 deleted, 30-39
  // updated, 40-44 updated to seq 12 while A deletes them at seq 11 (newer wins: live at 12),
  // 45-49 updated to seq 11 while A deletes them at seq 13 (deleted), and 50-54 new nodes.
  const atA = [
    ...Array.from({ length: 10 }, (_, i) => packetOf(i, 7, 11, { del: true })),
    ...Array.from({ length: 10 }, (_, i) => packetOf(10 + i, 7, 11)),
    ...Array.from({ length: 5 }, (_, i) => packetOf(40 + i, 7, 11, { del: true })),
    ...Array.from({ length: 5 }, (_, i) => packetOf(45 + i, 7, 13, { del: true })),
  ];
  const atB = [
    ...Array.from({ length: 10 }, (_, i) => packetOf(20 + i, 7, 11, { del: true })),
    ...Array.from({ length: 10 }, (_, i) => packetOf(30 + i, 7, 11)),
    ...Array.from({ length: 5 }, (_, i) => packetOf(40 + i, 7, 12)),
    ...Array.from({ length: 5 }, (_, i) => packetOf(45 + i, 7, 11)),
    ...Array.from({ length: 5 }, (_, i) => packetOf(100 + i, 7, 1)),
  ];
  await publishAll(a.url, atA);
  await publishAll(b.url, atB);
  t.not(digestOf(a), digestOf(b), 'the sides differ during the partition');

  await m.start();
  await until(() => digestOf(a) === digestOf(b) && digestOf(b) === digestOf(m), 'A, B and M agree after the heal').catch(async (e: unknown) => {
    const show = (r: Region): string => JSON.stringify(r.broker.store.keys?.().map((k) => `${k.nodeId.slice(0, 6)}:${k.seq}${k.del ? 'd' : ''}`).sort());
    for (const r of [a, b, m]) t.comment(`${r.name} ${show(r)}`);
    for (const r of [a, b]) t.comment(JSON.stringify(r.broker.federation?.status()));
    for (const r of [a, b, m]) void r.broker.metricsText().then((x) => t.comment(r.name + '\n' + x.split('\n').filter((l) => /^qis_(fed|refused|dropped|admitted)/.test(l)).join('\n')));
    await new Promise((r) => setTimeout(r, 200));
    throw e;
  });
  // Expected, computed from the scenario (not from the code): 60 − 10 − 10 − 5 (45-49) + 5 new = 40 live.
  for (const r of [a, b, m]) {
    t.equal(r.broker.store.size, 40, `${r.name}: 40 live packets`);
    const gone = [0, 5, 9, 20, 29, 45, 49].filter((i) => r.broker.store.get(bearing.tplId, parseOutcomeTopic(packetOf(i, 7, 1).topic).nodeId) !== undefined);
    t.same(gone, [], `${r.name}: no deleted packet resurrected`);
    t.equal(r.broker.store.get(bearing.tplId, parseOutcomeTopic(packetOf(42, 7, 1).topic).nodeId)?.seq, 12, `${r.name}: B's newer update beats A's older deletion`);
    t.equal(r.broker.store.get(bearing.tplId, parseOutcomeTopic(packetOf(12, 7, 1).topic).nodeId)?.seq, 11, `${r.name}: A's update`);
  }
  // A replay of an old packet after the heal is still stale everywhere.
  await publishAll(b.url, [packetOf(3, 7, 10)]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(a.broker.store.get(bearing.tplId, parseOutcomeTopic(packetOf(3, 7, 1).topic).nodeId), undefined, 'a replayed deleted packet stays deleted');
  const lastA = a.broker.federation?.status()[0]?.lastCatchUp;
  t.equal(lastA?.mode, 'digest');
});

t.test('federation - through a hub, a burst mixing packets and tombstones reaches the far region live (no catch-up)', async (t) => {
  // Aedes drops a message for a subscriber when one published after it was delivered first; a
  // non-retained tombstone used to overtake the retained packet before it (moscajs/aedes#994).
  const { a, b, m } = await hubOfTwo(t);
  await publishAll(a.url, Array.from({ length: 20 }, (_, i) => packetOf(i, 19, 1)));
  await until(() => caughtUp(a) && caughtUp(b) && b.broker.store.size === 20, 'links up, B has the 20 packets');
  const catchUps = catchUpsOf(a, b);
  // Alternating: node i deleted (even) or updated (odd), then 10 new nodes.
  const burst = [...Array.from({ length: 20 }, (_, i) => packetOf(i, 19, 2, { del: i % 2 === 0 })), ...Array.from({ length: 10 }, (_, i) => packetOf(100 + i, 19, 1))];
  await publishAll(a.url, burst);
  await until(() => digestOf(a) === digestOf(m), 'M has the burst');
  await until(() => digestOf(b) === digestOf(a), 'B has the burst', 15_000);
  t.equal(b.broker.store.size, 20, 'B: 10 updated + 10 new packets live');
  t.equal(catchUpsOf(a, b), catchUps, 'no catch-up ran: it came live');
});

t.test('federation - through a hub, both regions publish at once: each gets the other\'s burst live, and no request or answer is kept retained', async (t) => {
  // The hub answers A's puts on A's link connection while it forwards B's packets to that same
  // connection, and the other way round: every packet must still arrive live (no catch-up).
  const { a, b, m } = await hubOfTwo(t);
  await publishAll(a.url, [packetOf(999, 23, 1)]);
  await until(() => caughtUp(a) && caughtUp(b) && b.broker.store.size === 1, 'links up');
  const before = catchUpsOf(a, b);
  for (let round = 0; round < 3; round++) {
    const fromA = Array.from({ length: 150 }, (_, i) => packetOf(1000 * round + i, 23, 1));
    const fromB = Array.from({ length: 150 }, (_, i) => packetOf(1000 * round + 500 + i, 23, 1));
    await Promise.all([publishAll(a.url, fromA), publishAll(b.url, fromB)]);
  }
  await until(() => digestOf(a) === digestOf(m) && digestOf(b) === digestOf(m), 'A, B and the hub hold the same', 15_000);
  t.equal(a.broker.store.size, 901, 'every packet of both regions at A');
  t.equal(catchUpsOf(a, b), before, 'no catch-up ran: it came live');
  const kept: unknown[] = [];
  const persistence = (m.broker.aedes as unknown as { persistence: { createRetainedStream(pattern: string): AsyncIterable<unknown> } }).persistence;
  for await (const x of persistence.createRetainedStream('qis/1/f/#')) kept.push(x);
  t.same(kept, [], 'no request or answer is kept retained at the hub');
});

t.test('federation - score packets (qis/1/s/) travel: live through a hub, and by catch-up after a partition', async (t) => {
  const { a, b, m } = await hubOfTwo(t);
  await until(() => caughtUp(a) && caughtUp(b), 'links up');
  const ka = fixedKey(0x61);
  const kb = fixedKey(0x62);
  const s1 = signScorePacket(ka, bearing.tplId, { seq: 10, ts: Date.now(), k: 4, brier: 0.25, hits: 3 });
  await publishAll(a.url, [{ topic: s1.topic, packet: s1.bytes }]);
  await until(() => b.broker.scoreStore.seqOf(bearing.tplId, ka.nodeId) === 10, 'B stores the score reported at A');
  t.same(await readRetained(b.url, s1.topic, 10_000), s1.bytes, "B serves A's score retained on its own topic, byte for byte");
  t.equal(b.broker.store.size, 0, 'the score did not land in the outcome store');

  // Partition: each side reports a score the other lacks; the heal's catch-up exchanges them.
  await m.stop();
  await until(() => !a.broker.federation?.status()[0]?.connected && !b.broker.federation?.status()[0]?.connected, 'links down');
  const s2 = signScorePacket(ka, bearing.tplId, { seq: 11, ts: Date.now(), k: 5, brier: 0.2, hits: 4 });
  const s3 = signScorePacket(kb, bearing.tplId, { seq: 1, ts: Date.now(), k: 2, mae: 0.5 });
  await publishAll(a.url, [{ topic: s2.topic, packet: s2.bytes }]);
  await publishAll(b.url, [{ topic: s3.topic, packet: s3.bytes }]);
  await m.start();
  await until(
    () => b.broker.scoreStore.seqOf(bearing.tplId, ka.nodeId) === 11 && a.broker.scoreStore.seqOf(bearing.tplId, kb.nodeId) === 1 && m.broker.scoreStore.size === 2,
    'after the heal A, B and M hold both scores',
  );
  t.same(await readRetained(a.url, s3.topic, 10_000), s3.bytes, "A serves B's score reported during the partition");
  t.same(await readRetained(b.url, s2.topic, 10_000), s2.bytes, "B serves A's newer score");
  const moved = (r: Region): number => (r.broker.federation?.status()[0]?.history ?? []).reduce((n, h) => n + h.sent + h.received, 0);
  t.ok(moved(a) >= 1 && moved(b) >= 1, 'the heal moved them by catch-up');
});

t.test('federation - a forged packet is refused where it is injected and reaches no other region', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // X is a plain Aedes (no admission) acting as a lying region that A links to.
  const x = await startAedes();
  const b = await startRegion('b', pb, []);
  const a = await startRegion('a', pa, [peer(pb), peer(x.port, { name: 'liar' })]);
  t.teardown(async () => {
    await a.close();
    await b.close();
    await x.close();
  });
  await until(() => caughtUp(a), 'links up');
  const good = packetOf(1, 9, 5);
  const forged = packetOf(2, 9, 5);
  const bad = Uint8Array.from(forged.packet);
  bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1; // the signature's last byte

  // 1. A client publishes it at A: refused there (and disconnected).
  const cl = await mqtt.connectAsync(a.url, { clientId: 'forger', reconnectPeriod: 0 });
  const closed = new Promise<void>((r) => cl.once('close', () => r()));
  cl.publish(forged.topic, Buffer.from(bad), { qos: 1, retain: true });
  await closed;
  cl.end(true);
  t.match(await a.broker.metricsText(), /qis_refused_total\{code="ERR_BAD_SIGNATURE"\} 1/, 'A refused it with its code');

  // 2. The lying region holds it retained (and a good packet): A takes the good one and refuses the forgery.
  const liar = await mqtt.connectAsync(`mqtt://127.0.0.1:${x.port}`, { clientId: 'liar-pub', reconnectPeriod: 0 });
  await liar.publishAsync(forged.topic, Buffer.from(bad), { qos: 1, retain: true });
  await liar.publishAsync(good.topic, Buffer.from(good.packet), { qos: 1, retain: true });
  await liar.endAsync();
  await until(() => b.broker.store.size === 1, 'the good packet reached B through A');
  await until(async () => /qis_federation_refused_total\{peer="liar",code="ERR_BAD_SIGNATURE"\} [1-9]/.test(await a.broker.metricsText()), 'A counted the forgery from the liar');
  await a.broker.federation?.catchUp();
  for (const r of [a, b]) {
    t.equal(r.broker.store.get(bearing.tplId, parseOutcomeTopic(forged.topic).nodeId), undefined, `${r.name} does not hold the forgery`);
    t.equal(r.broker.store.size, 1, `${r.name} holds the good packet only`);
  }
  t.match(await a.broker.metricsText(), /qis_federation_link_up\{peer="liar"\} 1/, 'the link to the liar stays up (a peer is not trusted, but not cut either)');

  // 3. Score packets from the liar pass the same admission as a client's: a good one is taken and
  // reaches B, one signed by another key on a node's score topic is refused.
  const ks = fixedKey(0x71);
  const goodScore = signScorePacket(ks, bearing.tplId, { seq: 3, ts: Date.now(), k: 2, brier: 0.5, hits: 1 });
  const otherScore = signScorePacket(fixedKey(0x72), bearing.tplId, { seq: 3, ts: Date.now(), k: 2, brier: 0.5, hits: 1 });
  const forgedTopic = `qis/1/s/${bearing.tplId}/${fixedKey(0x73).nodeId}`;
  const liar2 = await mqtt.connectAsync(`mqtt://127.0.0.1:${x.port}`, { clientId: 'liar-pub-2', reconnectPeriod: 0 });
  await liar2.publishAsync(forgedTopic, Buffer.from(otherScore.bytes), { qos: 1, retain: true });
  await liar2.publishAsync(goodScore.topic, Buffer.from(goodScore.bytes), { qos: 1, retain: true });
  await liar2.endAsync();
  await until(() => b.broker.scoreStore.seqOf(bearing.tplId, ks.nodeId) === 3, "the liar's good score reached B through A");
  await until(async () => /qis_federation_refused_total\{peer="liar",code="ERR_(NODE_MISMATCH|BAD_SIGNATURE)"\} [1-9]/.test(await a.broker.metricsText()), 'A refused the score signed by another key');
  for (const r of [a, b]) t.equal(r.broker.scoreStore.size, 1, `${r.name} holds the good score only`);
});

/** A federated broker in a child process. */
async function spawnRegion(dataDir: string, port: number, federation: unknown): Promise<ChildProcess> {
  const child = spawn(process.execPath, [FED_PROC, dataDir, String(port), JSON.stringify(federation)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`broker process exited (${code})`)));
  });
  return child;
}

t.test('federation - a region killed with SIGKILL and restarted catches up', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await startRegion('a', pa, []);
  const dirB = join(tmp, 'killed-b');
  const fedB = { region: 'b', peers: [peer(pa)], reconnect: { baseMs: 100, capMs: 1000 } };
  let child = await spawnRegion(dirB, pb, fedB);
  t.teardown(async () => {
    child.kill('SIGKILL');
    await a.close();
  });
  await until(() => a.broker.aedes.connectedClients >= 1, 'B linked to A');
  await publishAll(`mqtt://127.0.0.1:${pb}`, Array.from({ length: 20 }, (_, i) => packetOf(i, 11, 1)));
  await until(() => a.broker.store.size === 20, 'A has B\'s 20 packets');
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  // While B is dead: A gets 30 new packets and deletes 5 of B's.
  await publishAll(a.url, [...Array.from({ length: 30 }, (_, i) => packetOf(100 + i, 11, 1)), ...Array.from({ length: 5 }, (_, i) => packetOf(i, 11, 2, { del: true }))]);
  t.equal(a.broker.store.size, 45);
  child = await spawnRegion(dirB, pb, fedB);
  // B's store is in its process: read it through MQTT (retained delivery) once A's digest equals what B holds.
  const bClient = await mqtt.connectAsync(`mqtt://127.0.0.1:${pb}`, { clientId: 'reader', reconnectPeriod: 0 });
  t.teardown(() => bClient.endAsync());
  const got = new Map<string, number>();
  bClient.on('message', (topic, payload) => {
    if (payload.length > 0) got.set(topic, payload.length);
  });
  await until(async () => {
    got.clear();
    await bClient.unsubscribeAsync(`qis/1/o/${bearing.tplId}/#`);
    await bClient.subscribeAsync(`qis/1/o/${bearing.tplId}/#`, { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    return got.size === 45;
  }, 'B holds the 45 packets after its restart');
  const deleted = packetOf(0, 11, 1).topic;
  t.notOk(got.has(deleted), 'a packet deleted while B was dead is gone at B too');
  t.ok(got.has(packetOf(129, 11, 1).topic), 'a packet published while B was dead is at B');
});

t.test('federation - catch-up when the stores agree is a digest exchange under 1 % of the store bytes', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const b = await startRegion('b', pb, []);
  const a = await startRegion('a', pa, [peer(pb)]);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await until(() => caughtUp(a), 'link up');
  const packets = Array.from({ length: 2000 }, (_, i) => packetOf(i, 13, 1));
  await publishAll(a.url, packets);
  await until(() => b.broker.store.size === 2000 && digestOf(a) === digestOf(b), 'B has all 2,000');
  const storeBytes = packets.reduce((n, p) => n + p.packet.length + p.topic.length, 0);
  // Reconnect: stop and restart B; A's link catches up again with nothing to exchange.
  await b.stop();
  await b.start();
  await until(() => caughtUp(a, 2), 'second catch-up done');
  const r = a.broker.federation?.status()[0]?.lastCatchUp;
  t.equal(r?.mode, 'digest');
  t.equal(r?.received, 0);
  t.equal(r?.sent, 0);
  t.ok(r !== undefined && r.bytes > 0 && r.bytes < storeBytes / 100, `catch-up bytes ${r?.bytes} < 1 % of ${storeBytes} store bytes`);
  t.match(await a.broker.metricsText(), /qis_federation_catchups_total\{peer="mqtt:\/\/127\.0\.0\.1:\d+",mode="digest"\} 2/);
  // One packet differs: still a small exchange (top level, the ranges, one range's list, one packet).
  await b.stop();
  await publishAll(a.url, [packetOf(5000, 13, 1)]);
  await b.start();
  await until(() => b.broker.store.size === 2001 && (a.broker.federation?.status()[0]?.catchUps ?? 0) >= 3, 'B got the one new packet');
  const r2 = a.broker.federation?.status()[0]?.lastCatchUp;
  t.equal(r2?.sent, 1);
  t.ok(r2 !== undefined && r2.bytes < storeBytes / 50, `one difference costs ${r2?.bytes} bytes`);
});

t.test('federation - config: keys, defaults, flags and errors naming file and key', async (t) => {
  const c = parseBrokerConfig('federation:\n  region: eu-1\n  peers:\n    - url: mqtt://peer:1883\n      share: ["*"]\n      rateLimit: 50\n', 'b.yaml');
  const o = resolveBrokerOptions(c);
  t.same(o.federation, { region: 'eu-1', peers: [{ url: 'mqtt://peer:1883', share: ['*'], accept: ['*'], rateLimit: 50 }] });
  const f = resolveBrokerOptions({}, configFromFlags(['--federation.region', 'us', '--federation.peer', `mqtt://h:1883?share=${bearing.tplId}&rateLimit=10`]));
  t.same(f.federation, { region: 'us', peers: [{ url: 'mqtt://h:1883', share: [bearing.tplId], accept: ['*'], rateLimit: 10 }] });
  const err = (text: string): string => {
    try {
      resolveBrokerOptions(parseBrokerConfig(text, 'b.yaml'));
      return 'ok';
    } catch (e) {
      return `${(e as { code?: string }).code}: ${(e as Error).message}`;
    }
  };
  t.match(err('federation:\n  region: "no spaces"\n'), /ERR_CONFIG_INVALID: b\.yaml: federation\.region: expected a region name/);
  t.match(err('federation:\n  region: r\n  peers: [{url: "http://x"}]\n'), /ERR_CONFIG_INVALID: b\.yaml: federation\.peers\[0\]\.url: expected an mqtt:\/\/ or mqtts:\/\/ URL/);
  t.match(err('federation:\n  region: r\n  peers: [{url: "mqtt://x", share: ["nope"]}]\n'), /federation\.peers\[0\]\.share\[0\]: expected a template id/);
  t.match(err('federation:\n  region: r\n  peers: [{url: "mqtt://x", colour: 1}]\n'), /federation\.peers\[0\]\.colour: unknown key/);
  t.match(err('federation:\n  region: r\n  peers: [{url: "mqtt://x", rateLimit: -1}]\n'), /federation\.peers\[0\]\.rateLimit: expected a number >= 0/);
  t.match(err('federation:\n  region: r\n  followUpMs: -5\n'), /b\.yaml: federation\.followUpMs: expected a number of ms >= 0/);
  t.equal(resolveBrokerOptions(parseBrokerConfig('federation:\n  region: r\n  followUpMs: 1000\n', 'b.yaml')).federation?.followUpMs, 1000);
  t.equal(resolveBrokerOptions(parseBrokerConfig('federation:\n  region: r\n  putTimeoutMs: 2500\n', 'b.yaml')).federation?.putTimeoutMs, 2500);
  t.match(err('federation:\n  region: r\n  putTimeoutMs: 0\n'), /b\.yaml: federation\.putTimeoutMs: expected a positive integer of milliseconds/);
  t.match(err('federation:\n  region: r\n  putTimeoutMs: 4000000000\n'), /federation\.putTimeoutMs: expected a positive integer of milliseconds, at most 3600000/);
  t.equal(resolveBrokerOptions({}, configFromFlags(['--federation.region', 'us', '--federation.put-timeout-ms', '700'])).federation?.putTimeoutMs, 700, 'and as a flag');
  const withId = resolveBrokerOptions(parseBrokerConfig('federation:\n  region: r\n  keyFile: /k.json\n  peers: [{url: "mqtt://x", identity: abc}]\n', 'b.yaml')).federation;
  t.match(withId, { keyFile: '/k.json', peers: [{ url: 'mqtt://x', identity: 'abc' }] }, 'keyFile and a peer identity');
  t.match(resolveBrokerOptions({}, configFromFlags(['--federation.region', 'us', '--federation.key-file', '/k', '--federation.peer', 'mqtt://h:1883?identity=abc'])).federation, { keyFile: '/k', peers: [{ url: 'mqtt://h:1883', identity: 'abc' }] }, 'and as flags');
  t.match(err('federation:\n  region: r\n  peers: [{url: "mqtt://x", identity: ""}]\n'), /federation\.peers\[0\]\.identity: expected the peer's identity/);
  t.match(err('cluster: redis://r:6379\nfederation:\n  region: r\n'), /b\.yaml: federation: expected no federation together with cluster/);
});

t.test('federation - share and accept lists filter templates', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const b = await startRegion('b', pb, []);
  // A shares nothing of bearing (another template id only) but accepts everything.
  const a = await startRegion('a', pa, [peer(pb, { share: ['aaaaaaaaaaaaaaaaaaaaaaaaaa'] })]);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await until(() => caughtUp(a), 'link up');
  await publishAll(a.url, [packetOf(1, 17, 1)]);
  await publishAll(b.url, [packetOf(2, 17, 1)]);
  await until(() => a.broker.store.size === 2, 'A accepts B\'s packet');
  await a.broker.federation?.catchUp();
  t.equal(b.broker.store.size, 1, 'B never got A\'s packet: A does not share the template');
});
