// A query's verification while its packets arrive (src/node/cohort-verify.ts): past the share the
// main thread checks itself, packets go to worker threads; the fold must equal foldCohort's.
import { availableParallelism } from 'node:os';
import t from 'tap';
import { address, foldCohort, keyFromSeed, outcomeTopic, signPacket } from '../src/index.js';
import { CohortStream, queryThreadsLoad, queryThreadsRunning, setQueryThreadsIdleMs, shardOf, stopQueryThread, threadsOnline } from '../src/node/cohort-verify.js';
import { bearing, situation } from './helpers/fixtures.js';

const NOW = 1_795_000_000_000;

/** Polls (bounded: 300 polls) until the query threads are gone; true once they are. */
async function stopped(pollMs = 50): Promise<boolean> {
  for (let i = 0; i < 300 && queryThreadsRunning() > 0; i++) await new Promise((r) => setTimeout(r, pollMs));
  return queryThreadsRunning() === 0;
}

/** `count` packets of distinct nodes (seeds filled with first, first + 1, …), one each, seq 1. */
function signedCohort(count: number, first: number, out: (i: number) => string = () => 'ok'): { topic: string; payload: Uint8Array }[] {
  const addr = address(bearing, situation);
  return Array.from({ length: count }, (_, i) => {
    const key = keyFromSeed(new Uint8Array(32).fill(i + first));
    const topic = outcomeTopic(addr, key.nodeId);
    return { topic, payload: signPacket(key, topic, { fp: addr.fp, seq: 1, ts: NOW - 1000, out: out(i) }) };
  });
}

t.test('cohort stream - past the inline share, worker threads give the same fold as foldCohort, in arrival order', async (t) => {
  const addr = address(bearing, situation);
  const now = NOW;
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

t.test('cohort stream - idle query threads stop, also after a read reset before its first batch went out', async (t) => {
  const addr = address(bearing, situation);
  const messages = signedCohort(140, 1);
  setQueryThreadsIdleMs(200);
  t.teardown(() => setQueryThreadsIdleMs(30_000));

  // A whole query: threads start, answer, and stop once idle.
  const whole = new CohortStream({ address: addr, widen: 0, now: NOW });
  for (const m of messages) whole.add(m.topic, m.payload);
  t.ok(queryThreadsRunning() > 0, 'the threads are up (started by this read, or still up from the test before)');
  t.equal((await whole.finish()).packets.length, messages.length, 'every packet verified and kept');
  t.ok(await stopped(), 'stopped after the idle time');

  // A read that starts the threads, then resets (a new connection) before a batch went out: no
  // answer will ever come back to arm the idle stop, so using the threads must arm it.
  const reset = new CohortStream({ address: addr, widen: 0, now: NOW });
  for (const m of messages) reset.add(m.topic, m.payload); // 128 inline, the rest packed, none sent
  t.ok(queryThreadsRunning() > 0, 'the read started the threads again');
  reset.reset();
  t.ok(await stopped(), 'stopped after the idle time, with no batch ever sent');
});

t.test('cohort stream - a read that finds the threads up checks none of its packets here; one that does not, a small cohort all', async (t) => {
  const addr = address(bearing, situation);
  const messages = signedCohort(50, 101, (i) => (i % 2 === 0 ? 'failure' : 'ok'));
  const forged = Uint8Array.from(messages[7]!.payload);
  forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
  messages.push({ topic: messages[7]!.topic, payload: forged });
  const o = { address: addr, widen: 0, now: NOW };
  const want = foldCohort(messages, o);
  t.equal(want.dropped.ERR_BAD_SIGNATURE, 1, 'the forged copy is refused');

  setQueryThreadsIdleMs(100);
  t.teardown(() => setQueryThreadsIdleMs(30_000));
  await threadsOnline();
  t.ok(await stopped(), 'the threads stopped as idle');
  const alone = new CohortStream(o);
  for (const m of messages) alone.add(m.topic, m.payload);
  t.equal(alone.inlined, messages.length, 'with no thread up, a small cohort is checked here');
  t.equal(queryThreadsRunning(), 0, '... and starts none');
  t.same(await alone.finish(), want, 'the same fold as foldCohort');

  setQueryThreadsIdleMs(30_000);
  await threadsOnline();
  const answered = (): number => queryThreadsLoad().answered.reduce((a, b) => a + b, 0);
  const before = answered();
  const up = new CohortStream(o);
  for (const m of messages) up.add(m.topic, m.payload);
  t.equal(up.inlined, 0, 'with a thread up, none is checked here');
  t.same(await up.finish(), want, 'the same fold as foldCohort');
  t.ok(answered() > before, 'the threads answered its batches');
});

const oneCore = availableParallelism() < 2 ? 'one core here: one query thread, nothing to spread over' : false;

/** `count` signed packets of distinct nodes whose topics all fall in shard 0 of `n` (one thread's by shard). */
function oneShard(n: number, count: number, seedBase: number): { topic: string; payload: Uint8Array }[] {
  const addr = address(bearing, situation);
  const messages: { topic: string; payload: Uint8Array }[] = [];
  for (let i = 0; messages.length < count; i++) {
    const seed = new Uint8Array(32);
    new DataView(seed.buffer).setUint32(0, seedBase + i);
    const key = keyFromSeed(seed);
    const topic = outcomeTopic(addr, key.nodeId);
    if (shardOf(topic, n) !== 0) continue;
    messages.push({ topic, payload: signPacket(key, topic, { fp: addr.fp, seq: 1, ts: NOW - 1000, out: i % 3 === 0 ? 'failure' : 'ok' }) });
  }
  return messages;
}
t.test('cohort stream - a cohort all of one shard: each thread holds 2 batches at most, the rest wait and are spread over every thread; a small read meanwhile is checked here', { skip: oneCore }, async (t) => {
  await threadsOnline();
  const n = queryThreadsRunning();
  // Two batches of 128 per thread and two more: some must wait.
  const messages = oneShard(n, 128 * (2 * n + 2), 1000);
  const o = { address: address(bearing, situation), widen: 0, now: NOW };
  const want = foldCohort(messages, o);
  const before = queryThreadsLoad().answered;
  const stream = new CohortStream(o);
  for (const m of messages) stream.add(m.topic, m.payload);
  const load = queryThreadsLoad();
  t.same(load.inFlight, Array.from({ length: n }, () => 2), 'every thread holds 2 batches, its shard or not');
  t.equal(load.waiting, 2, 'the other 2 wait on the main thread');

  // A small read now finds the threads busy: it is checked here, not queued behind the big one.
  const small = oneShard(n, 20, 900_000);
  const smallStream = new CohortStream(o);
  for (const m of small) smallStream.add(m.topic, m.payload);
  t.equal(smallStream.inlined, small.length, 'a small read meanwhile is checked on the main thread');
  t.same(await smallStream.finish(), foldCohort(small, o), '... and folds the same as foldCohort');

  t.same(await stream.finish(), want, 'the big one folds the same as foldCohort');
  const after = queryThreadsLoad();
  t.same(after.inFlight, Array.from({ length: n }, () => 0), 'nothing out');
  t.equal(after.waiting, 0, 'nothing waiting');
  t.ok(
    after.answered.every((x, i) => x > (before[i] as number)),
    `every thread answered some of them (batches by thread: ${after.answered.map((x, i) => x - (before[i] as number)).join(', ')})`,
  );
});

t.test('cohort stream - a read reset (or abandoned) takes its waiting batches out; the next round folds alone', { skip: oneCore }, async (t) => {
  await threadsOnline();
  const n = queryThreadsRunning();
  const messages = oneShard(n, 128 * (2 * n + 3), 2000);
  const o = { address: address(bearing, situation), widen: 0, now: NOW };
  const stream = new CohortStream(o);
  for (const m of messages) stream.add(m.topic, m.payload);
  t.equal(queryThreadsLoad().waiting, 3, '3 batches wait');
  stream.reset();
  t.equal(queryThreadsLoad().waiting, 0, 'the reset took them out');
  const again = messages.slice(0, 300);
  for (const m of again) stream.add(m.topic, m.payload);
  t.same(await stream.finish(), foldCohort(again, o), 'the new round folds its own messages only');
});

t.test('cohort stream - a thread lost mid-read, behind a batch still out, fails the read with ERR_INTERNAL, not the process; a new thread takes its place', { skip: oneCore }, async (t) => {
  const n = availableParallelism();
  // Threads stopped first, so that this read starts them: the first thread is still loading (its
  // batches, first in the fold, wait for it) when the last one is lost.
  setQueryThreadsIdleMs(50);
  t.teardown(() => setQueryThreadsIdleMs(30_000));
  await threadsOnline();
  t.ok(await stopped(20), 'no thread up');
  setQueryThreadsIdleMs(30_000);
  const messages = oneShard(n, 128 + 128 * (2 * n + 2), 3000);
  const o = { address: address(bearing, situation), widen: 0, now: NOW };
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => void process.off('unhandledRejection', onUnhandled));
  const stream = new CohortStream(o);
  for (const m of messages) stream.add(m.topic, m.payload);
  t.equal(stream.inlined, 128, 'the first 128 checked here (no thread was up)');
  await stopQueryThread(n - 1);
  await t.rejects(stream.finish(), { code: 'ERR_INTERNAL', message: /a verify worker thread stopped/ }, 'the read fails');
  await new Promise((r) => setTimeout(r, 50));
  t.same(unhandled, [], 'no unhandled rejection');
  t.equal(queryThreadsRunning(), n, 'as many threads as before');
  const small = messages.slice(0, 300);
  const next = new CohortStream(o);
  for (const m of small) next.add(m.topic, m.payload);
  t.same(await next.finish(), foldCohort(small, o), 'the next read is verified (by the new thread too)');
});
