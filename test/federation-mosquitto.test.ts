// Federation interop: a real Mosquitto is a region. It has no digests, so our links fall back to
// the full retained exchange; packets and signed tombstones still travel through it.
import t from 'tap';
import mqtt from 'mqtt';
import { parseOutcomeTopic } from '../src/index.js';
import { bearing } from './helpers/fixtures.js';
import { startMosquitto } from './helpers/mosquitto.js';
import { readRetained } from './helpers/retained.js';
import { peer, freePort, startRegion, until, digestOf, packetOf, publishAll } from './helpers/federation.js';

t.test('federation - a Mosquitto broker as a region: full retained exchange, then live forwarding both ways', async (t) => {
  const mosq = await startMosquitto();
  const murl = `mqtt://127.0.0.1:${mosq.port}`;
  t.teardown(() => mosq.stop());
  // Before any link: Mosquitto holds 3 retained packets (published by a plain client), A holds 4.
  await publishAll(murl, [1, 2, 3].map((i) => packetOf(i, 21, 1)));
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await startRegion('a', pa, []);
  await publishAll(a.url, [10, 11, 12, 13].map((i) => packetOf(i, 21, 1)));
  await a.stop();
  const a2 = await startRegion('a', pa, [peer(mosq.port)], a.dataDir);
  const b = await startRegion('b', pb, [peer(mosq.port)]);
  t.teardown(async () => {
    await a2.close();
    await b.close();
  });
  await until(() => a2.broker.federation?.status()[0]?.catchUps === 1, 'A caught up with Mosquitto');
  const s = a2.broker.federation?.status()[0];
  t.equal(s?.peerKind, 'mqtt', 'Mosquitto has no digests');
  t.equal(s?.lastCatchUp?.mode, 'full');
  await until(() => a2.broker.store.size === 7, 'A took Mosquitto\'s 3 retained packets');
  t.ok(await readRetained(murl, packetOf(10, 21, 1).topic), 'Mosquitto holds A\'s packet retained');
  await until(() => b.broker.store.size === 7, 'B has the 3 packets that Mosquitto had and the 4 A sent there');
  await until(() => digestOf(a2) === digestOf(b), 'A and B agree through Mosquitto');

  // Live: published at A, through Mosquitto to B; a signed tombstone at B removes it at A.
  await publishAll(a2.url, [packetOf(30, 21, 5)]);
  const id30 = parseOutcomeTopic(packetOf(30, 21, 5).topic).nodeId;
  await until(() => b.broker.store.get(bearing.tplId, id30)?.seq === 5, 'B got A\'s new packet');
  const tomb = packetOf(30, 21, 6, { del: true });
  await publishAll(b.url, [tomb]);
  await until(() => a2.broker.store.get(bearing.tplId, id30) === undefined && a2.broker.store.seqOf(bearing.tplId, id30) === 6, 'A applied B\'s tombstone');
  // Mosquitto keeps the signed tombstone retained in place of the packet: a late reader cannot get the deleted packet.
  const held = await readRetained(murl, packetOf(30, 21, 5).topic);
  t.same(held && Buffer.from(held), Buffer.from(tomb.packet), 'Mosquitto retains the signed tombstone');

  // Mosquitto checks no seq: a client replays the deleted packet there. A and B hold the
  // tombstone's seq, so it is stale for them, live or in a catch-up.
  const c = await mqtt.connectAsync(murl, { clientId: 'replayer', reconnectPeriod: 0 });
  await c.publishAsync(packetOf(30, 21, 5).topic, Buffer.from(packetOf(30, 21, 5).packet), { qos: 1, retain: true });
  await c.endAsync();
  await a2.broker.federation?.catchUp();
  await new Promise((r) => setTimeout(r, 300));
  t.equal(a2.broker.store.get(bearing.tplId, id30), undefined, 'the replayed deleted packet is not resurrected at A');
  t.equal(b.broker.store.get(bearing.tplId, id30), undefined, 'nor at B');
});
