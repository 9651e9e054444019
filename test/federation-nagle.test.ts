// Nagle-style forwarding (issue 15, item 3): a link forwards a packet at once when no batch is
// waiting for the peer's answer, keeps at most IN_FLIGHT batches unanswered, and sends what queued
// meanwhile together as the next batch the moment an answer comes. The peer is scripted (a plain
// Aedes broker and a client that says it is a qis broker and answers requests when told), so the
// test decides when a batch is acknowledged; A is a real qis broker.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { answerPayload, parsePut } from '../broker/federation.js';
import { IN_FLIGHT } from '../broker/federation/outbox.js';
import { openStore } from '../broker/store.js';
import { compileTemplate, keyFromSeed, signTemplate, templateTopic } from '../src/index.js';
import { startAedes } from './helpers/aedes.js';
import { freePort, packetOf, peer, publishAll, startRegion, until } from './helpers/federation.js';

t.test('a lone packet goes at once; packets queued behind unanswered batches go together as the next batch', async (t) => {
  const p = await startAedes();
  t.teardown(() => p.close());
  const a = await startRegion('a', await freePort(), [peer(p.port)]);
  t.teardown(() => a.close());

  // The scripted peer: catch-up requests answered as a peer in sync with A would; 'put' batches
  // recorded (their item counts) and answered only when released.
  const peerScript = await scriptedPeer(t, p.url, (payload) => answerPayload(a.broker.store, payload, a.broker.scoreStore));
  const puts = peerScript.puts;

  const status = () => a.broker.federation?.status()[0];
  await until(() => (status()?.connected ?? false) && status()?.peerKind === 'qis' && (status()?.catchUps ?? 0) >= 1, 'A linked to the scripted qis peer and caught up');
  const metric = async (name: string): Promise<number> => {
    const m = new RegExp(`^${name}\\{peer="[^"]*"(?:,direction="out")?\\} (\\d+)$`, 'm').exec(await a.broker.metricsText());
    return m ? Number(m[1]) : 0;
  };
  const before = puts.length;
  const outBefore = await metric('qis_federation_forwarded_total');

  // 1. An idle link: one packet is sent on its own, without waiting for more.
  peerScript.hold = true;
  await publishAll(a.url, [packetOf(0, 31, 1)]);
  await until(() => puts.length === before + 1, 'the lone packet reached the peer');
  t.equal(puts[before]?.n, 1, 'a batch of one, sent while the link was otherwise idle');

  // 2. A second packet still goes at once (IN_FLIGHT batches may be unanswered); past that they queue.
  t.equal(IN_FLIGHT, 2, 'two batches in flight (the rest of this test counts on it)');
  await publishAll(a.url, [packetOf(1, 31, 1)]);
  await until(() => puts.length === before + 2, 'the second packet reached the peer');
  t.equal(puts[before + 1]?.n, 1, 'the second packet alone too, one batch still unanswered');

  const queued = Array.from({ length: 5 }, (_, i) => packetOf(10 + i, 31, 1));
  for (const q of queued) await publishAll(a.url, [q]); // one at a time: each admitted (and forwarded) before the next
  await until(async () => (await metric('qis_federation_pending')) === 7, 'A holds 7 forwards unacknowledged: 2 sent, 5 queued');
  t.equal(puts.length, before + 2, 'nothing more was sent while two batches wait for their answer');

  // 3. One answer: the five queued packets go as one batch.
  const admittedBy = performance.now(); // each of the five was acknowledged to its publisher, so admitted, before this
  await new Promise((r) => setTimeout(r, 200));
  peerScript.hold = false;
  const released = performance.now();
  peerScript.held.shift()?.();
  await until(() => puts.length === before + 3, 'the next batch reached the peer');
  t.equal(puts[before + 2]?.n, 5, 'the five queued packets went together');
  // qis_federation_lag_ms counts from admission here, not from the send: the five waited in the
  // queue until `released`, so their answer came at least released − admittedBy after admission.
  await until(async () => (await metric('qis_federation_pending')) === 1, 'the batch of five answered (one lone packet still unanswered)');
  const lag = Number(/^qis_federation_lag_ms\{peer="[^"]*"\} ([\d.e+-]+)$/m.exec(await a.broker.metricsText())?.[1]);
  t.ok(lag >= released - admittedBy, `lag ${lag.toFixed(1)} ms counts from admission (the batch waited ${(released - admittedBy).toFixed(1)} ms in the queue)`);
  for (const ack of peerScript.held.splice(0)) ack();
  await until(async () => (await metric('qis_federation_pending')) === 0, 'every forward acknowledged');
  t.equal((await metric('qis_federation_forwarded_total')) - outBefore, 7, 'seven packets forwarded and acknowledged');
  t.equal(puts.length, before + 3, 'in three put batches: 1, 1 and 5');
});

t.test('at connect, template documents are admitted by the peer before the catch-up sends a packet', async (t) => {
  const p = await startAedes();
  t.teardown(() => p.close());
  // The scripted peer answers catch-up requests from an empty store of its own (so the catch-up
  // sends A's packets), records what each request and put carried, and holds put answers when told.
  const empty = await emptyStore(t);
  const peerScript = await scriptedPeer(t, p.url, (payload) => answerPayload(empty, payload));
  peerScript.hold = true;
  const log = peerScript.log;

  // A holds three template documents (more than IN_FLIGHT batches) and a packet of the peer's
  // cohort, stored while it had no link; then it starts with the link to the scripted peer, whose
  // answers to puts are held: what A sends at connect is what this test watches.
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'qis-nagle-a-'));
  const a0 = await startRegion('a', port, [], dir);
  const curator = keyFromSeed(new Uint8Array(32).fill(7));
  const docs = ['pump-a', 'pump-b', 'pump-c'].map((name) =>
    compileTemplate({ name, version: 1, fields: [{ name: 'pump', kind: 'category' }], outcome: { kind: 'category', labels: ['ok', 'leak'] } }),
  );
  await publishAll(a0.url, docs.map((d) => ({ topic: templateTopic(d.tplId), packet: signTemplate(curator, d) })));
  await publishAll(a0.url, [packetOf(0, 32, 1)]);
  await a0.stop();
  const a = await startRegion('a', port, [peer(p.port)], dir);
  t.teardown(() => a.close());

  await until(() => log.some((l) => l.startsWith('put:')), 'A sent its first put after connecting');
  const first = log.find((l) => l.startsWith('put:')) as string;
  t.match(first, /^put:t+$/, `the first put carries template documents only (sent: ${log.join(' ')})`);
  t.equal(first.length - 'put:'.length, 3, 'all three documents in it');
  // While the documents' answer is held, the catch-up has not started: no request, no packet.
  await new Promise((r) => setTimeout(r, 300));
  t.same(log, [first], 'nothing else sent before the peer answered the documents');
  peerScript.hold = false;
  for (const ack of peerScript.held.splice(0)) ack();
  await until(() => log.some((l) => /^put:.*o/.test(l)), 'the catch-up sent the packet');
  const iReq = log.indexOf('req');
  t.ok(iReq > 0, 'the catch-up asked after the documents were answered');
});

t.test('a peer that stops answering live batches: after putTimeoutMs the link reconnects and catches up, and forwarding resumes', async (t) => {
  const p = await startAedes();
  t.teardown(() => p.close());
  const empty = await emptyStore(t);
  // The peer's catch-up answers come from an empty store: after a reconnect, A's catch-up sends
  // every packet A holds (score packets too: none).
  const peerScript = await scriptedPeer(t, p.url, (payload) => answerPayload(empty, payload, empty));
  const a = await startRegion('a', await freePort(), [peer(p.port)], undefined, { putTimeoutMs: 300 });
  t.teardown(() => a.close());
  let connects = 0;
  p.broker.on('client', (c) => {
    if (c.id.startsWith('qis-fed-a-')) connects++;
  });
  const answerSubs: number[] = [];
  p.broker.on('subscribe', (subs, c) => {
    if (c?.id.startsWith('qis-fed-a-')) for (const x of subs) if (x.topic.startsWith('qis/1/f/res/')) answerSubs.push(x.qos);
  });
  const status = () => a.broker.federation?.status()[0];
  await until(() => (status()?.connected ?? false) && status()?.peerKind === 'qis' && (status()?.catchUps ?? 0) >= 1, 'A linked to the scripted peer and caught up');
  const connectsBefore = connects;
  const puts = peerScript.puts;
  const before = puts.length;

  // The peer goes silent: two lone batches fill the IN_FLIGHT slots and are never answered; a third packet queues behind them.
  peerScript.hold = true;
  const packets = [packetOf(0, 33, 1), packetOf(1, 33, 1), packetOf(2, 33, 1)];
  for (const q of packets) await publishAll(a.url, [q]);
  await until(() => puts.length === before + 2, 'two batches sent and left unanswered');
  // The peer answers again from now on (the two held batches stay unanswered for good).
  peerScript.hold = false;

  // Past putTimeoutMs (not the 30 s request timeout) the link is taken for dead: it reconnects and its catch-up sends what the peer lacks.
  await until(() => connects > connectsBefore, 'the link reconnected', 20_000);
  await until(() => (status()?.connected ?? false) && (status()?.catchUps ?? 0) >= 2, 'the link caught up after reconnecting', 20_000);
  const sentAfter = puts.slice(before + 2).reduce((n, x) => n + x.n, 0);
  t.ok(sentAfter >= packets.length, `the catch-up sent the three packets (${sentAfter} items in puts after the silent ones)`);
  t.equal(peerScript.held.length, 2, 'the two silent batches were never answered');

  // Live forwarding works again on the new connection: a new packet goes as a put of its own, and is answered.
  const n = puts.length;
  await publishAll(a.url, [packetOf(3, 33, 1)]);
  await until(() => puts.length > n, 'a new packet forwarded live after the reconnect', 20_000);
  t.equal(puts[n]?.n, 1, 'a batch of one, at once');
  // Requests and answers travel at QoS 0 (the answer is the acknowledgement: no PUBACK either way).
  t.same([...new Set(peerScript.reqQos)], [0], 'every request and put was published at QoS 0');
  t.ok(answerSubs.length >= 2 && answerSubs.every((q) => q === 0), `the answer topic subscribed at QoS 0 on each connection (${answerSubs.join(', ')})`);
  await until(async () => /^qis_federation_pending\{[^}]*\} 0$/m.test(await a.broker.metricsText()), 'nothing left unacknowledged on the new connection');
});

/** An empty store of the scripted peer's own (its catch-up answers say it lacks everything), removed at teardown. */
async function emptyStore(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'qis-nagle-empty-'));
  const store = await openStore({ dir, fsync: 'never' });
  t.teardown(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

/**
 * A scripted qis peer on a plain Aedes broker: says it is a qis broker, answers catch-up requests
 * with `answer`, records every put (its link and items) and every request ('req') and put
 * ('put:' and t/o per item: template document or outcome packet) in arrival order, and answers a
 * put at once, or holds the answer while `hold` is set (`held` answers it later). `reqQos`: the QoS
 * each request was published with (the peer subscribes at 1, so it is the sender's).
 */
async function scriptedPeer(t: Test, url: string, answer: (payload: Buffer) => Buffer | undefined) {
  const ctl = await mqtt.connectAsync(url, { clientId: 'peer-script', reconnectPeriod: 0 });
  t.teardown(() => ctl.endAsync(true));
  const s = { hold: false, held: [] as (() => void)[], puts: [] as { link: string; id: string; n: number }[], log: [] as string[], reqQos: [] as number[] };
  ctl.on('message', (topic, payload, packet) => {
    s.reqQos.push(packet.qos);
    const link = topic.slice('qis/1/f/req/'.length);
    const reply = (body: Buffer): void => void ctl.publish(`qis/1/f/res/${link}`, body, { qos: 1 });
    const put = parsePut(payload);
    if (!put) {
      s.log.push('req');
      const res = answer(payload);
      if (res) reply(res);
      return;
    }
    s.puts.push({ link, id: put.id, n: put.items.length });
    s.log.push(`put:${put.items.map(([tp]) => (tp.startsWith('qis/1/t/') ? 't' : tp.startsWith('qis/1/o/') ? 'o' : '?')).join('')}`);
    const ack = (): void => reply(Buffer.from(JSON.stringify({ id: put.id, stored: put.items.length, stale: 0, refused: 0, retry: [] })));
    if (s.hold) s.held.push(ack);
    else ack();
  });
  await ctl.subscribeAsync('qis/1/f/req/#', { qos: 1 });
  await ctl.publishAsync('qis/1/broker', JSON.stringify({ kind: 'qis', region: 'p' }), { qos: 1, retain: true });
  return s;
}
