// A query's verification while its packets arrive (src/node/cohort-verify.ts): past the share the
// main thread checks itself, packets go to worker threads; the fold must equal foldCohort's.
import t from 'tap';
import { address, foldCohort, keyFromSeed, outcomeTopic, signPacket } from '../src/index.js';
import { CohortStream, threadsOnline } from '../src/node/cohort-verify.js';
import { bearing, situation } from './helpers/fixtures.js';

t.test('cohort stream - past the inline share, worker threads give the same fold as foldCohort, in arrival order', async (t) => {
  const addr = address(bearing, situation);
  const now = 1_795_000_000_000;
  const keys = Array.from({ length: 200 }, (_, i) => keyFromSeed(new Uint8Array(32).fill(i + 1)));
  const messages: { topic: string; payload: Uint8Array }[] = [];
  keys.forEach((key, i) => {
    const topic = outcomeTopic(addr, key.nodeId);
    for (const seq of [1, 2]) messages.push({ topic, payload: signPacket(key, topic, { fp: addr.fp, seq, ts: now - 1000, out: i % 3 === 0 ? 'failure' : 'ok' }) });
    if (i % 10 === 0) messages.push({ topic, payload: messages[messages.length - 1]!.payload }); // a duplicate
    if (i % 7 === 0) {
      const forged = signPacket(key, topic, { fp: addr.fp, seq: 9, ts: now - 1000, out: 'ok' });
      forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
      messages.push({ topic, payload: forged });
    }
    if (i % 11 === 0) messages.push({ topic, payload: signPacket(key, topic, { fp: addr.fp, seq: 3, ts: now - 1000, exp: Math.floor(now / 1000) - 1, out: 'ok' }) });
  });
  t.ok(messages.length > 300, 'more messages than the main thread checks itself');
  const o = { address: addr, widen: 0, now };
  const want = foldCohort(messages, o);
  const stream = new CohortStream(o);
  // The first part before any thread is up (the inline share, then batches queued for a starting
  // thread), the rest once one is.
  for (const m of messages.slice(0, 150)) stream.add(m.topic, m.payload);
  await threadsOnline();
  for (const m of messages.slice(150)) stream.add(m.topic, m.payload);
  const got = await stream.finish();
  t.same(got, want, 'the same packets, counts and drops');
  t.ok((want.dropped.ERR_BAD_SIGNATURE ?? 0) > 0 && (want.dropped.ERR_EXPIRED ?? 0) > 0 && want.duplicates > 0 && want.superseded > 0, 'forged, expired, duplicate and superseded messages were in it');
});
