// Federation peers authenticated on both sides (issue 14, deliverable 5; PROTOCOL §8, §11): links
// log in with the broker's own key; each side applies its own share/accept to a link whoever
// opened it (live forwarding and catch-up); transient refusals are retried; regions exchange
// names (no echo: a ring of 3 costs 4 link messages per update); a region name claimed twice is
// ERR_REGION_CONFLICT. Real qis brokers over loopback.
import t from 'tap';
import { compileTemplate, createOutcomePacket, keyFromSeed, type Template } from '../src/index.js';
import { bearing, bearingDoc } from './helpers/fixtures.js';
import { SIT, freePort, packetOf, peer, publishAll, seed, startRegion, until, type Region } from './helpers/federation.js';

/** A second template (another id): what share/accept lists leave out. */
const other: Template = compileTemplate({ ...bearingDoc, name: 'bearing-failure-other' });

const keyA = keyFromSeed(seed(1, 0xfed));
const keyB = keyFromSeed(seed(2, 0xfed));

const linked = (r: Region): boolean => (r.broker.federation?.status() ?? []).every((s) => s.connected && s.catchUps >= 1);
const closeAll = (rs: Region[]) => async () => {
  for (const r of rs) await r.close();
};

function packetFor(tpl: Template, i: number, salt: number): { topic: string; packet: Uint8Array } {
  const { topic, packet } = createOutcomePacket({ key: keyFromSeed(seed(i, salt)), template: tpl, situation: SIT, outcome: 'failure', seq: 1, ts: Date.now() });
  return { topic, packet };
}

/** A Prometheus counter's value (sum over label sets whose labels include `labels`). */
async function counter(r: Region, name: string, labels: string): Promise<number> {
  let n = 0;
  for (const line of (await r.broker.metricsText()).split('\n')) if (line.startsWith(`${name}{`) && line.includes(labels)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

const has = (r: Region, tpl: Template, i: number, salt: number): boolean => r.broker.store.get(tpl.tplId, keyFromSeed(seed(i, salt)).nodeId) !== undefined;

t.test('a link logs in with its broker key: a peer naming that key in auth.peers serves it; qis/1/broker names region and key', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // B accepts links only from A's broker key, and nobody anonymous.
  const b = await startRegion('b', pb, [], undefined, {}, { config: { auth: { allowAnonymous: false, peers: [keyA.nodeId] } } });
  const a = await startRegion('a', pa, [peer(pb)], undefined, {}, { key: keyA });
  t.teardown(closeAll([a, b]));
  await until(() => linked(a), 'A linked to B with its key');
  t.match(a.broker.federation?.status()[0], { connected: true, peerKind: 'qis', region: 'b' }, "A's link learned B's region");
  await publishAll(a.url, [packetOf(1, 0x51, 1)]);
  await until(() => b.broker.store.size === 1, 'the packet crossed the authenticated link');
  // Another broker key (C) is not in B's auth.peers: its link is refused at CONNECT.
  const pc = await freePort();
  const c = await startRegion('c', pc, [peer(pb)], undefined, {}, { key: keyFromSeed(seed(3, 0xfed)) });
  t.teardown(() => c.close());
  await until(async () => (await counter(b, 'qis_refused_total', 'code="ERR_LOGIN_REFUSED"')) >= 1, "B refuses C's link");
  t.equal(c.broker.federation?.status()[0]?.connected, false, "C's link is down");
});

t.test('each side applies its own share and accept to a link whoever opened it: live and catch-up, both directions', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // A shares and accepts only `bearing` with B; B shares and accepts everything with A. Both link
  // to each other. A names B by its key (identity); B knows A's link by the region A's own link reached.
  const aPeer = peer(pb, { share: [bearing.tplId], accept: [bearing.tplId], identity: keyB.nodeId });
  const a = await startRegion('a', pa, [aPeer], undefined, {}, { key: keyA });
  const b = await startRegion('b', pb, [peer(pa)], undefined, {}, { key: keyB });
  t.teardown(closeAll([a, b]));
  await until(() => linked(a) && linked(b), 'both links up');

  // Live: `other` stays where it was published, both ways; `bearing` crosses both ways.
  await publishAll(a.url, [packetFor(bearing, 1, 0x61), packetFor(other, 2, 0x61)]);
  await publishAll(b.url, [packetFor(bearing, 3, 0x61), packetFor(other, 4, 0x61)]);
  await until(() => has(b, bearing, 1, 0x61) && has(a, bearing, 3, 0x61), 'bearing crossed both ways');
  await a.broker.federation?.catchUp();
  await b.broker.federation?.catchUp();
  t.notOk(has(b, other, 2, 0x61), "live: A's `other` never reached B (A's share, also on B's link to A)");
  t.notOk(has(a, other, 4, 0x61), "live: B's `other` never entered A (A's accept, also on B's batches to A)");

  // Catch-up: each side publishes while the other is down; on reconnection both catch up.
  await b.stop();
  await publishAll(a.url, [packetFor(bearing, 5, 0x61), packetFor(other, 6, 0x61)]);
  await a.stop();
  await b.start();
  await publishAll(b.url, [packetFor(bearing, 7, 0x61), packetFor(other, 8, 0x61)]);
  await a.start();
  await until(() => linked(a) && linked(b), 'both links up again');
  await until(() => has(b, bearing, 5, 0x61) && has(a, bearing, 7, 0x61), 'bearing caught up both ways');
  await a.broker.federation?.catchUp();
  await b.broker.federation?.catchUp();
  t.notOk(has(b, other, 6, 0x61), "catch-up: A's `other` was not served to B's link (A's share on its answers)");
  t.notOk(has(a, other, 8, 0x61), "catch-up: B's put batches of `other` were refused by A (A's accept)");
  t.ok(has(b, other, 4, 0x61) && has(a, other, 2, 0x61), 'each keeps its own `other` packets');
});

t.test('forwards the receiver refuses for its rate limit are retried: 150 packets at 20/s all arrive; a permanent refusal is not retried', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // B takes 20 publishes/s per client (burst 100) and only `bearing` (closed registry).
  const b = await startRegion('b', pb, [], undefined, {}, { config: { admission: { ratePerSecond: 20, burst: 100, registry: 'closed', templates: [bearing.tplId] } } });
  const a = await startRegion('a', pa, [peer(pb)]);
  t.teardown(closeAll([a, b]));
  await until(() => linked(a), 'link up');
  await publishAll(a.url, [...Array.from({ length: 150 }, (_, i) => packetOf(i, 0x71, 1)), packetFor(other, 1, 0x72)]);
  await until(() => b.broker.store.size === 150, 'all 150 arrived at B without a reconnect', 60_000);
  t.ok((await counter(b, 'qis_refused_total', 'code="ERR_RATE_LIMITED"')) > 0, 'B did refuse some for its rate limit');
  t.equal(a.broker.federation?.status()[0]?.catchUps, 1, 'no reconnect, no second catch-up: the retries carried them');
  await until(() => a.broker.federation?.status()[0]?.retrying === 0, 'nothing left to retry');
  // The unknown template's packet may itself have met the rate limit first (transient: retried),
  // so its permanent refusal can come after the retry queue emptied: wait for it, then watch.
  await until(async () => (await counter(b, 'qis_refused_total', 'code="ERR_TEMPLATE_UNKNOWN"')) >= 1, 'the unknown template refused at B');
  await new Promise((r) => setTimeout(r, 1_500));
  t.equal(await counter(b, 'qis_refused_total', 'code="ERR_TEMPLATE_UNKNOWN"'), 1, 'the packet of an unknown template (a permanent refusal) was refused once and not sent again');
  t.notOk(has(b, other, 1, 0x72));
});

t.test('a ring of 3 regions: one update costs 4 link messages (never echoed back to where it came from)', async (t) => {
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  const a = await startRegion('a', pa, [peer(pb)]);
  const b = await startRegion('b', pb, [peer(pc)]);
  const c = await startRegion('c', pc, [peer(pa)]);
  t.teardown(closeAll([a, b, c]));
  await until(() => linked(a) && linked(b) && linked(c), 'ring up');
  const received = async (): Promise<number> => (await counter(a, 'qis_federation_received_total', 'kind="o"')) + (await counter(b, 'qis_federation_received_total', 'kind="o"')) + (await counter(c, 'qis_federation_received_total', 'kind="o"'));
  for (let u = 1; u <= 3; u++) {
    const before = await received();
    await publishAll(a.url, [packetOf(1, 0x81, u)]);
    await until(() => [b, c].every((r) => r.broker.store.get(bearing.tplId, keyFromSeed(seed(1, 0x81)).nodeId)?.seq === u), `update ${u} everywhere`);
    await new Promise((r) => setTimeout(r, 1_000)); // late duplicates would arrive by now
    const n = (await received()) - before;
    t.equal(n, 4, `update ${u}: ${n} link messages (A→B, A→C, then B→C and C→B; none back to A)`);
  }
});

t.test('two brokers with one region name: ERR_REGION_CONFLICT, and the first link is never knocked off', async (t) => {
  const [pc, p1, p2, p3] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const c = await startRegion('c', pc, []);
  const x1 = await startRegion('x', p1, [peer(pc)], undefined, {}, { key: keyFromSeed(seed(4, 0xfed)) });
  t.teardown(closeAll([c, x1]));
  await until(() => linked(x1), 'the first region x links to C');
  const x2 = await startRegion('x', p2, [peer(pc)], undefined, {}, { key: keyFromSeed(seed(5, 0xfed)) });
  t.teardown(() => x2.close());
  await until(async () => (await counter(c, 'qis_refused_total', 'code="ERR_REGION_CONFLICT"')) >= 2, 'C refuses the second x, again and again');
  t.same(
    x1.broker.federation?.status().map((s) => [s.connected, s.catchUps]),
    [[true, 1]],
    'the first x stayed connected throughout (one catch-up: never reconnected)',
  );
  t.equal(x2.broker.federation?.status()[0]?.connected, false, 'the second x has no link');
  // A broker linking to a broker of its own region name: refused too.
  const c2 = await startRegion('c', p3, [peer(pc)]);
  t.teardown(() => c2.close());
  const before = await counter(c, 'qis_refused_total', 'code="ERR_REGION_CONFLICT"');
  await until(async () => (await counter(c, 'qis_refused_total', 'code="ERR_REGION_CONFLICT"')) > before + 1, "C refuses a link naming C's own region");
  t.equal(c2.broker.federation?.status()[0]?.connected, false);
});
