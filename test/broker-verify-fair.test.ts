// Issue 15: fair verification per connection, end to end. A real broker on loopback with one
// verify thread; one connection floods it with signed packets while another publishes one. The
// quiet connection's packet must be verified ahead of the flood's backlog (the packets the flood
// had waiting when it arrived), behind at most the batch in the worker and one flood packet.
// Positions are read from the broker's own verifier (wrapped to record the order of calls and
// answers), never timed.
import t from 'tap';
import mqtt, { type MqttClient } from 'mqtt';
import { createOutcomePacket, parseOutcomeTopic } from '../src/index.js';
import { createVerifier, type Verifier } from '../broker/verifier.js';
import { bearing, fixedKey, situation } from './helpers/fixtures.js';
import { startQisBroker } from './helpers/qis-broker.js';

const NOW = Date.now();
const FLOOD = 1500;
/** Pool sizes (batches of 4, 2 while connections mix, one batch in the worker): a bound far below the backlog a loopback flood builds. */
const BATCH = 4;
const MIXED = 2;
/** Flood packets the quiet one may wait behind once it is queued: the batch in the worker, then one per busy connection. */
const BOUND = BATCH + 1;
/** The quiet connection publishes when this many flood packets await verification. */
const TRIGGER = 48;

t.test('broker - a quiet connection\'s packet is verified ahead of a flooding connection\'s backlog', async (t) => {
  const inner = createVerifier(1, { batchJobs: BATCH, mixedBatchJobs: MIXED, perWorker: 1 });
  /** Per verify() call, in call order: which client; answered: call indexes in answer order. */
  const calls: string[] = [];
  const answered: number[] = [];
  let quietAt = -1;
  let answeredBeforeQuiet = 0;
  let quiet: MqttClient | undefined;
  const quietPacket = createOutcomePacket({ key: fixedKey(2), template: bearing, situation, outcome: 'failure', seq: 1, ts: NOW });
  let quietPuback: Promise<unknown> | undefined;
  const recording: Verifier = {
    workers: inner.workers,
    verify(topic, bytes, o) {
      const who = (o.source as { id?: string } | undefined)?.id ?? '?';
      const i = calls.push(who) - 1;
      if (who === 'quiet') {
        quietAt = i;
        answeredBeforeQuiet = answered.length;
      }
      const p = inner.verify(topic, bytes, o).then((r) => {
        answered.push(i);
        return r;
      });
      const waiting = calls.length - answered.length;
      if (who === 'flood' && waiting >= TRIGGER && quiet && !quietPuback) quietPuback = quiet.publishAsync(quietPacket.topic, Buffer.from(quietPacket.packet), { qos: 1, retain: true });
      return p;
    },
    close: () => inner.close(),
  };
  const b = await startQisBroker({ admission: { ratePerSecond: 0 } }, undefined, { verifier: recording, now: () => NOW });
  t.teardown(() => b.close());
  const opts = { reconnectPeriod: 0, protocolVersion: 4 as const };
  quiet = await mqtt.connectAsync(b.url, { ...opts, clientId: 'quiet' });
  const flood = await mqtt.connectAsync(b.url, { ...opts, clientId: 'flood' });
  t.teardown(() => Promise.all([quiet?.endAsync(true), flood.endAsync(true)]));

  const key = fixedKey(1);
  const packets = Array.from({ length: FLOOD }, (_, k) => createOutcomePacket({ key, template: bearing, situation, outcome: 'failure', seq: k + 1, ts: NOW }));
  await Promise.all(packets.map((p) => flood.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })));
  t.ok(quietPuback, `the flood had ${TRIGGER} packets awaiting verification at some point`);
  await quietPuback;

  const q = answered.indexOf(quietAt);
  t.ok(quietAt >= 0 && q >= 0, 'the quiet packet went through the verifier');
  // The flood's backlog when the quiet packet arrived: called before it, not answered yet.
  const before = new Set(answered.slice(0, answeredBeforeQuiet));
  const backlog = calls.slice(0, quietAt).flatMap((who, i) => (who === 'flood' && !before.has(i) ? [i] : []));
  const ahead = answered.slice(answeredBeforeQuiet, q).filter((i) => calls[i] === 'flood').length;
  t.ok(backlog.length > 4 * BOUND, `the flood had a backlog when the quiet packet arrived (${backlog.length} packets)`);
  t.ok(ahead <= BOUND, `verified behind at most ${BOUND} flood packets (${ahead} of the ${backlog.length} waiting)`);
  // A connection's own packets keep their order.
  const floodOrder = answered.filter((i) => calls[i] === 'flood');
  t.same(floodOrder, [...floodOrder].sort((x, y) => x - y), "the flood's packets verified in the order they came");
  // Everything was admitted: the flood's node at its last seq, the quiet node's packet.
  const seqOf = (topic: string): number | undefined => {
    const p = parseOutcomeTopic(topic);
    return b.broker.store.seqOf(p.tplId, p.nodeId);
  };
  t.equal(seqOf(packets[0]!.topic), FLOOD, 'every flood packet admitted, the last stored');
  t.equal(seqOf(quietPacket.topic), 1, 'the quiet packet stored');
});
