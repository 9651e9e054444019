// Enrolment wired in (PROTOCOL §10): a broker in `required` mode over loopback refuses
// unenrolled, expired, out-of-scope, unknown-operator and revoked nodes (ERR_NOT_ENROLLED with the
// reason) and serves enrolled ones; a revocation list removes the revoked nodes' stored packets;
// a node attaches its enrolment (outbox included) and warns before it expires; a revocation
// reaches every federated region. Every clock is injected: T0 is a fixed instant, never today's
// date. The querier at the sizes is test/enrolment-trust.test.ts.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrokerConfig } from '../broker/options.js';
import {
  createNode,
  decodeEnrolment,
  keyFromSeed,
  readEnrolment,
  saveKeyFile,
  signRevocation,
  type NodeKey,
  type NodeStatus,
} from '../src/index.js';
import { qis } from './helpers/cli.js';
import { bearing, situation } from './helpers/fixtures.js';
import { freePort, peer, publishAll, seed, startRegion, until } from './helpers/federation.js';
import { publishOnce, readRetained } from './helpers/retained.js';
import { clock, enrol, nowS, opA, opB, packet, startBroker } from './helpers/enrolment.js';
import { waitFor } from './helpers/wait.js';

const root = mkdtempSync(join(tmpdir(), 'qis-enrol-broker-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const enrolmentMode = (): BrokerConfig['admission'] => ({ enrolment: 'required', operators: [opA.nodeId] });

t.test('required mode refuses unenrolled, expired, out-of-scope, unknown-operator and revoked nodes, each with its reason', async (t) => {
  const b = await startBroker(t, root, enrolmentMode());
  const cases: [string, NodeKey, Uint8Array | undefined][] = [];
  const n = (i: number): NodeKey => keyFromSeed(seed(i, 0xb0));
  cases.push(['missing', n(1), undefined]);
  cases.push(['expired', n(2), enrol(opA, n(2), { expS: nowS() - 3600 })]);
  cases.push(['out-of-scope', n(3), enrol(opA, n(3), { scope: ['aaaaaaaaaaaaaaaaaaaaaaaaaa'] })]);
  cases.push(['unknown-operator', n(4), enrol(opB, n(4))]);
  cases.push(['key-mismatch', n(5), enrol(opA, n(6))]);
  for (const [reason, node, e] of cases) {
    const p = packet(node, e);
    t.equal(await publishOnce(b.url, p.topic, p.packet), 'closed', `${reason}: the publish is refused`);
    const line = b.lines.find((l) => l['code'] === 'ERR_NOT_ENROLLED' && l['topic'] === p.topic);
    t.match(line?.['msg'], new RegExp(`^${reason}: `), `${reason}: logged as ERR_NOT_ENROLLED with the reason`);
    t.equal(b.broker.store.get(bearing.tplId, node.nodeId), undefined, `${reason}: nothing stored`);
  }
  const good = keyFromSeed(seed(9, 0xb0));
  const p = packet(good, enrol(opA, good, { scope: [bearing.tplId] }));
  t.equal(await publishOnce(b.url, p.topic, p.packet), 'acked', 'an enrolled node in scope is served');
  const back = await readRetained(b.url, p.topic);
  t.ok(back && readEnrolment(back), 'its packet is retained with its enrolment (label 13)');
  t.equal(b.lines.filter((l) => l['code'] === 'ERR_NOT_ENROLLED').length, cases.length, 'one ERR_NOT_ENROLLED per refused node');
});

t.test('off mode admits packets with and without enrolment', async (t) => {
  const b = await startBroker(t, root);
  const x = keyFromSeed(seed(1, 0xb1));
  const y = keyFromSeed(seed(2, 0xb1));
  t.equal(await publishOnce(b.url, packet(x).topic, packet(x).packet), 'acked', 'unenrolled');
  const py = packet(y, enrol(opB, y, { expS: nowS() - 86_400 }));
  t.equal(await publishOnce(b.url, py.topic, py.packet), 'acked', 'an expired enrolment is not judged in off mode');
});

t.test('a revocation list removes the stored packets of the nodes it names and refuses their new ones', async (t) => {
  const b = await startBroker(t, root, enrolmentMode());
  const x = keyFromSeed(seed(1, 0xb2));
  const y = keyFromSeed(seed(2, 0xb2));
  for (const k of [x, y]) {
    const p = packet(k, enrol(opA, k));
    t.equal(await publishOnce(b.url, p.topic, p.packet), 'acked', `node ${k.nodeId.slice(0, 6)} stored`);
  }
  t.ok(b.broker.store.get(bearing.tplId, x.nodeId), 'x stored before the revocation');
  const list = signRevocation(opA, { seq: 1, ts: clock(), revoked: [x.nodeId] });
  t.equal(await publishOnce(b.url, list.topic, list.packet), 'acked', 'the operator publishes its revocation list');
  t.equal(b.broker.store.get(bearing.tplId, x.nodeId), undefined, "the revoked node's packet is gone");
  t.ok(b.broker.store.get(bearing.tplId, y.nodeId), 'the other node keeps its packet');
  t.equal(await readRetained(b.url, packet(x).topic, 500), undefined, 'and it is no longer served retained');
  t.same(await readRetained(b.url, list.topic), new Uint8Array(list.packet), 'the list is retained on qis/1/r/<operatorId>');
  const again = packet(x, enrol(opA, x));
  t.equal(await publishOnce(b.url, again.topic, again.packet), 'closed', "the revoked node's new packet is refused");
  t.match(b.lines.find((l) => l['code'] === 'ERR_NOT_ENROLLED' && l['topic'] === again.topic)?.['msg'], /^revoked: /, 'with the reason revoked');

  const stale = signRevocation(opA, { seq: 1, ts: clock(), revoked: [] });
  t.equal(await publishOnce(b.url, stale.topic, stale.packet), 'acked', 'a list with a seq not above the held one is acknowledged…');
  t.same(await readRetained(b.url, list.topic), new Uint8Array(list.packet), '…and dropped: the held list stays');
  const forged = signRevocation(opB, { seq: 5, ts: clock(), revoked: [y.nodeId] });
  t.equal(await publishOnce(b.url, list.topic, forged.packet), 'closed', "another key's list on operator A's topic is refused (owner rule)");
  const untrusted = signRevocation(opB, { seq: 5, ts: clock(), revoked: [y.nodeId] });
  t.equal(await publishOnce(b.url, untrusted.topic, untrusted.packet), 'closed', "an untrusted operator's list is refused in required mode");
  t.ok(b.broker.store.get(bearing.tplId, y.nodeId), 'y untouched by the refused lists');
});

t.test('a node attaches its enrolment to every packet, outbox included, and is served by a required-mode broker', async (t) => {
  const b = await startBroker(t, root, enrolmentMode());
  const dir = mkdtempSync(join(root, 'node-'));
  const key = keyFromSeed(seed(1, 0xb3));
  // Queued while the broker is unreachable (a closed port), then sent by a node that has it.
  const e = enrol(opA, key);
  {
    const offline = await createNode({ url: 'mqtt://127.0.0.1:1', dataDir: dir, key, enrolment: e, now: clock, connectTimeoutMs: 200, reconnect: { baseMs: 10_000, capMs: 10_000 } });
    const r = await offline.publish(bearing, situation, 'failure', { ackTimeoutMs: 0 });
    t.equal(r.acked, false, 'queued offline');
    t.ok(readEnrolment(r.packet), 'the packet it reports carries the enrolment');
    await offline.close();
  }
  const node = await createNode({ url: b.url, dataDir: dir, key, now: clock, enrolment: e });
  t.teardown(() => node.close());
  await node.flush({ timeoutMs: 10_000 });
  const stored = b.broker.store.get(bearing.tplId, key.nodeId);
  t.ok(stored && readEnrolment(stored.packet), 'the queued packet reached the broker with its enrolment');
  const r = await node.publish(bearing, situation, 'no_failure');
  t.equal(r.acked, true, 'a new packet is acknowledged');
  t.equal(b.lines.filter((l) => l['code'] === 'ERR_NOT_ENROLLED').length, 0, 'nothing refused');
});

t.test('a node without an enrolment is refused by a required-mode broker', async (t) => {
  const b = await startBroker(t, root, enrolmentMode());
  const key = keyFromSeed(seed(2, 0xb3));
  const bare = await createNode({ url: b.url, dataDir: mkdtempSync(join(root, 'node-')), key, now: clock });
  const r = await bare.publish(bearing, situation, 'failure', { ackTimeoutMs: 1500 });
  t.equal(r.acked, false, 'never acknowledged');
  await waitFor(() => b.lines.some((l) => l['code'] === 'ERR_NOT_ENROLLED'), 'the refusal');
  t.match(b.lines.find((l) => l['code'] === 'ERR_NOT_ENROLLED')?.['msg'], /^missing: /, 'refused as missing');
  await bare.close();
});

t.test('a node warns when its enrolment is about to expire or has expired (at open and on connecting)', async (t) => {
  const b = await startBroker(t, root);
  const key = keyFromSeed(seed(3, 0xb3));
  const dir = mkdtempSync(join(root, 'node-'));
  const soon = enrol(opA, key, { expS: nowS() + 2 * 86_400 });
  const node = await createNode({ url: b.url, dataDir: dir, key, now: clock, enrolment: soon });
  t.match(node.enrolment(), { operatorId: opA.nodeId, state: 'expiring', exp: decodeEnrolment(soon).exp }, 'expiring within the 7-day warning');
  const seen: NodeStatus[] = [];
  for await (const s of node.status()) {
    seen.push(s);
    if (s.type === 'connected') break;
  }
  t.match(seen[0], { type: 'enrolment', state: 'expiring', operatorId: opA.nodeId, message: /expires at .* \(in [12] day\(s\)\)/ }, 'the first status event says so');
  await node.close();
  const late = await createNode({ url: b.url, dataDir: dir, key, now: clock, enrolment: enrol(opA, key, { expS: nowS() - 60 }) });
  t.equal(late.enrolment()?.state, 'expired', 'expired');
  t.match(late.enrolment()?.message, /expired at .*refuse its packets/, 'with what it means');
  await late.close();
  const ok = await createNode({ url: b.url, dataDir: dir, key, now: clock, enrolment: enrol(opA, key, { days: 300 }) });
  t.match(ok.enrolment(), { state: 'ok' }, 'far from expiry: ok, no message');
  t.equal(ok.enrolment()?.message, undefined);
  await ok.close();
  await t.rejects(createNode({ url: b.url, dataDir: dir, key, now: clock, enrolment: enrol(opA, keyFromSeed(seed(4, 0xb3))) }), { code: 'ERR_NOT_ENROLLED' }, "another node's enrolment is refused at open");
});

t.test('a revocation removes the stored packets in every federated region (3 brokers in a chain, required mode)', async (t) => {
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  const extra = { config: { admission: { enrolment: 'required' as const, operators: [opA.nodeId] } }, now: clock };
  // a → b → c: c hears of a's packets only through b, and a of c's list only through b.
  const c = await startRegion('c', pc, [], undefined, {}, extra);
  const b = await startRegion('b', pb, [peer(pc)], undefined, {}, extra);
  const a = await startRegion('a', pa, [peer(pb)], undefined, {}, extra);
  t.teardown(async () => {
    for (const r of [a, b, c]) await r.close();
  });
  const regions = [a, b, c];
  await until(() => [a, b].every((r) => r.broker.federation?.status().every((s) => s.connected && s.catchUps >= 1)), 'links up');
  const x = keyFromSeed(seed(1, 0xb5));
  const y = keyFromSeed(seed(2, 0xb5));
  await publishAll(a.url, [packet(x, enrol(opA, x)), packet(y, enrol(opA, y))]);
  await until(() => regions.every((r) => r.broker.store.size === 2), 'both nodes stored in every region');
  const list = signRevocation(opA, { seq: 1, ts: clock(), revoked: [x.nodeId] });
  t.equal(await publishOnce(c.url, list.topic, list.packet), 'acked', 'the operator publishes its list at the far end (c)');
  await until(() => regions.every((r) => r.broker.store.get(bearing.tplId, x.nodeId) === undefined), "x's packet removed in a, b and c");
  for (const r of regions) t.ok(r.broker.store.get(bearing.tplId, y.nodeId), `${r.name}: y keeps its packet`);
  for (const r of regions) t.same(await readRetained(r.url, list.topic), new Uint8Array(list.packet), `${r.name} holds the list`);
  const again = packet(x, enrol(opA, x));
  t.equal(await publishOnce(a.url, again.topic, again.packet), 'closed', "x's new packet is refused where it is published");
});

t.test('qis revoke --url publishes the list: the broker applies it; an untrusted operator gets ERR_REVOCATION_REFUSED', async (t) => {
  // `qis revoke` stamps its list with the process clock, which no test can inject: here the broker,
  // the enrolment and the packet all run on that clock too, whatever date it says (faketime ±years).
  const b = await startBroker(t, root, enrolmentMode(), Date.now);
  const x = keyFromSeed(seed(1, 0xb4));
  const p = packet(x, enrol(opA, x, { expS: Math.floor(Date.now() / 1000) + 30 * 86_400 }), Date.now(), 'failure', Date.now());
  t.equal(await publishOnce(b.url, p.topic, p.packet), 'acked', 'stored');
  const dir = mkdtempSync(join(root, 'ops-'));
  await saveKeyFile(join(dir, 'a.json'), opA);
  await saveKeyFile(join(dir, 'b.json'), opB);
  const r = await qis(['revoke', '--operator-key', join(dir, 'a.json'), '--node', x.nodeId, '--url', b.url, '--json']);
  t.equal(r.status, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { ok: true, topic: `qis/1/r/${opA.nodeId}`, revoked: [x.nodeId], published: b.url });
  t.equal(b.broker.store.get(bearing.tplId, x.nodeId), undefined, "the revoked node's packet is gone");
  const refused = await qis(['revoke', '--operator-key', join(dir, 'b.json'), '--node', x.nodeId, '--url', b.url, '--json']);
  t.equal(refused.status, 1);
  t.match(JSON.parse(refused.stdout || refused.stderr), { code: 'ERR_REVOCATION_REFUSED' });
});
