// The broker's verifier pool (broker/verifier.ts, packed batches to worker threads) against the
// inline check of the same jobs: every accept, refusal code, seq, del and exp the same, in order,
// across batch boundaries; and its bound (ERR_VERIFY_BUSY). The tests of the threads' own
// mechanics turn main-thread verification off (inlinePerSecond 0); the last ones test it.
import type { Worker } from 'node:worker_threads';
import t from 'tap';
import { verifyJob } from '../src/protocol/verify-job.js';
import { createVerifier, INLINE_KEYS, toResult } from '../broker/verifier.js';
import { createOutcomePacket } from '../src/index.js';
import { peerCachedOrRoom, peerNodeId } from '../src/protocol/identity.js';
import { bearing, fixedKey, situation } from './helpers/fixtures.js';
import { hex, vector } from './helpers/vectors.js';

interface PacketCase { topic: string; packet: string; fields: Record<string, unknown> }
const v = vector<{ packet: PacketCase[] }>('protocol-v1.json');

/** Valid packets, one-bit forgeries of each part, and a packet on another node's topic. */
interface Job { topic: string; bytes: Uint8Array; now: number; maxSkewMs: number }
function jobs(): Job[] {
  const out: { topic: string; bytes: Uint8Array; now: number; maxSkewMs: number }[] = [];
  for (const c of v.packet) {
    const bytes = hex(c.packet);
    const now = (c.fields['4'] as number) + 1000; // the vector's own ts: no dependence on today's date
    out.push({ topic: c.topic, bytes, now, maxSkewMs: 60_000 });
    for (const at of [bytes.length - 1, bytes.length - 40, 20, 3]) {
      const bad = bytes.slice();
      bad[at] = (bad[at] as number) ^ 1;
      out.push({ topic: c.topic, bytes: bad, now, maxSkewMs: 60_000 });
    }
    out.push({ topic: c.topic, bytes, now: (c.fields['4'] as number) - 120_000, maxSkewMs: 60_000 }); // ts in the future
    out.push({ topic: `${c.topic.slice(0, -1)}a`, bytes, now, maxSkewMs: 60_000 });
  }
  return out;
}

t.test('verify pool - same verdicts as the inline check, in order, over many batches', async (t) => {
  const base = jobs();
  const all = Array.from({ length: 150 }, (_, i) => base[i % base.length]!);
  // One pool of two workers (a worker thread's start is slow under the test loader): batches go to both.
  const pool = createVerifier(2, { inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  const got = await Promise.all(all.map((j) => pool.verify(j.topic, j.bytes, j)));
  const want = all.map((j, i) => toResult(verifyJob({ id: i, ...j })));
  t.same(got, want, 'every verdict as inline');
  t.ok(want.some((r) => r.ok) && want.some((r) => !r.ok && r.code === 'ERR_BAD_SIGNATURE') && want.some((r) => !r.ok && r.code === 'ERR_TS_FUTURE'), 'the jobs hold accepts, forgeries and a future ts');
});

t.test('verify pool - bounded: beyond maxQueued a job is refused with ERR_VERIFY_BUSY, and the rest still verify', async (t) => {
  const [j] = jobs();
  const pool = createVerifier(1, { maxQueued: 3, inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  const ps = Array.from({ length: 5 }, () => pool.verify(j!.topic, j!.bytes, j!));
  const rs = await Promise.all(ps);
  t.same(rs.map((r) => r.ok), [true, true, true, false, false], 'three verified, two refused');
  t.equal(rs[3]!.ok ? undefined : rs[3]!.code, 'ERR_VERIFY_BUSY');
  const again = await pool.verify(j!.topic, j!.bytes, j!);
  t.ok(again.ok, 'room again once the queue drained');
});

t.test('verify pool - fair across sources: a quiet source overtakes a flood queued before it', async (t) => {
  const [j] = jobs();
  // Batches of 4 (2 while sources mix), one batch in the worker at a time: small enough that the
  // bound (the batch in the worker + one job per busy source) is far below the flood's backlog.
  const pool = createVerifier(1, { batchJobs: 4, mixedBatchJobs: 2, perWorker: 1, inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  const order: string[] = [];
  const job = (source: string, k: number): Promise<void> => pool.verify(j!.topic, j!.bytes, { ...j!, source }).then((r) => void order.push(r.ok ? `${source}${k}` : `refused ${source}${k}`));
  // All in one turn: the first 4 flood jobs go to the worker at once, the rest wait in the flood's lane.
  const all = [...Array.from({ length: 100 }, (_, k) => job('flood', k)), job('quiet', 0), job('other', 0), job('quiet', 1)];
  await Promise.all(all);
  t.same(order.slice(0, 4), ['flood0', 'flood1', 'flood2', 'flood3'], 'the batch already in the worker first');
  // Then one job of each source per batch (of 2 while sources mix; a lane joins behind the lanes
  // already waiting), and once the flood is alone, batches of 4 in arrival order.
  t.same(order.slice(4, 14), ['flood4', 'quiet0', 'other0', 'flood5', 'quiet1', 'flood6', 'flood7', 'flood8', 'flood9', 'flood10'], 'then one job per source per turn');
  t.same(order.filter((x) => x.startsWith('flood')), Array.from({ length: 100 }, (_, k) => `flood${k}`), "a source's jobs in their order");
});

t.test('verify pool - per-source bound: beyond maxQueuedPerSource that source is refused (ERR_VERIFY_CONNECTION_BUSY), others are not', async (t) => {
  const [j] = jobs();
  const pool = createVerifier(1, { maxQueuedPerSource: 3, inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  const verify = (source: string) => pool.verify(j!.topic, j!.bytes, { ...j!, source });
  const rs = await Promise.all([...Array.from({ length: 5 }, () => verify('flood')), verify('quiet')]);
  t.same(rs.map((r) => (r.ok ? 'ok' : r.code)), ['ok', 'ok', 'ok', 'ERR_VERIFY_CONNECTION_BUSY', 'ERR_VERIFY_CONNECTION_BUSY', 'ok'], "the flood's 4th and 5th refused, the quiet source's job verified");
  t.ok((await verify('flood')).ok, "room again once the flood's lane drained");
});

t.test('verify pool - while the pool is idle the main thread verifies, with the verdicts of verify-job\'s check', async (t) => {
  const all = jobs();
  const pool = createVerifier(1, { clock: () => 0, inlineBurst: all.length, inlineAfterIdleMs: 0 });
  t.teardown(() => pool.close());
  const got = [];
  for (const j of all) got.push(await pool.verify(j.topic, j.bytes, j)); // one at a time: the pool is idle at each
  t.same(got, all.map((j, i) => toResult(verifyJob({ id: i, ...j }))), 'every verdict as the check of verify-job');
  // A forgery in the envelope's first bytes has no kid where the main thread looks: the pool checks it.
  const canonical = all.filter((j) => j.bytes[3] === 0xa1).length;
  t.ok(canonical > 0 && canonical < all.length, 'the jobs hold packets of both starts');
  t.equal(pool.inlined, canonical, 'each packet of the canonical start verified on the main thread, the rest by the pool');
});

t.test('verify pool - the inline budget: a burst, then a refill over time; none while a job of the pool is unanswered', async (t) => {
  const [j] = jobs();
  let ms = 1000;
  // 4 a second: a token each 250 ms; at most 2 in a row.
  const pool = createVerifier(1, { clock: () => ms, inlinePerSecond: 4, inlineBurst: 2, inlineAfterIdleMs: 0 });
  t.teardown(() => pool.close());
  const order: number[] = [];
  const verify = (k: number) => pool.verify(j!.topic, j!.bytes, j!).then((r) => void order.push(r.ok ? k : -k));
  // One turn: two tokens, then the pool; the third and fourth wait for a worker.
  const first = [verify(1), verify(2), verify(3), verify(4)];
  t.equal(pool.inlined, 2, 'the bucket\'s two tokens spent on the main thread');
  ms += 250; // a token back, but jobs 3 and 4 are still unanswered
  const fifth = verify(5);
  t.equal(pool.inlined, 2, 'no inline check while the pool holds an earlier job');
  await Promise.all([...first, fifth]);
  t.same(order, [1, 2, 3, 4, 5], 'answered in the order asked');
  await verify(6);
  t.equal(pool.inlined, 3, 'the pool idle again: the refilled token spent');
  await verify(7);
  t.equal(pool.inlined, 3, 'no token left: to the pool');
  ms += 10_000; // long idle: the bucket holds its size, not more
  for (let k = 8; k < 12; k++) await verify(k);
  t.equal(pool.inlined, 5, 'two more in a row after a long wait, then the pool');
});

t.test('verify pool - the budget is refilled once an event-loop turn: one read of many packets takes at most inlineBurst inline', async (t) => {
  const [j] = jobs();
  let ms = 0;
  // A clock that jumps a second at each look: refilled at each packet, the bucket would never run out.
  const pool = createVerifier(1, { clock: () => (ms += 1000), inlinePerSecond: 1000, inlineBurst: 3 });
  t.teardown(() => pool.close());
  const rs = await Promise.all(Array.from({ length: 20 }, () => pool.verify(j!.topic, j!.bytes, j!)));
  t.ok(rs.every((r) => r.ok), 'all 20 verified');
  t.equal(pool.inlined, 3, 'three on the main thread in that turn, the rest by the pool');
  await pool.verify(j!.topic, j!.bytes, j!);
  t.equal(pool.inlined, 4, 'a later turn: refilled');
});

t.test('verify pool - back to inline once the pool\'s answers are all resolved: a batch resolved in several slices, a worker that died', async (t) => {
  const [j] = jobs();
  let ms = 0;
  let swallow = false;
  const workers: Worker[] = [];
  const real = await import('../src/index.js');
  // The pool's threads, captured; while `swallow`, a job sent to one never reaches it (so it is in flight when the thread dies).
  const { createVerifier: create } = await t.mockImport<typeof import('../broker/verifier.js')>('../broker/verifier.js', {
    '../src/index.js': {
      ...real,
      startVerifyWorker: (o: { nice?: number }) => {
        const w = real.startVerifyWorker(o);
        const post = w.postMessage.bind(w);
        w.postMessage = (m: unknown, tl?: Parameters<Worker["postMessage"]>[1]) => (swallow ? undefined : post(m, tl));
        workers.push(w);
        return w;
      },
    },
  });
  // A token a second; batches of 64, answered in slices of 32.
  const pool = create(1, { clock: () => ms, inlinePerSecond: 1, inlineBurst: 1, batchJobs: 64 });
  t.teardown(() => pool.close());
  // Between the two slices (job 32 answered, 27 still to resolve), with a token back: a packet goes to the pool, behind them.
  const order: number[] = [];
  let between: Promise<unknown> | undefined;
  let inlinedBetween = -1;
  const first = await Promise.all(
    Array.from({ length: 60 }, (_, k) =>
      pool.verify(j!.topic, j!.bytes, j!).then((r) => {
        order.push(k);
        if (k === 32) {
          ms += 1000;
          between = pool.verify(j!.topic, j!.bytes, j!).then(() => void order.push(60));
          inlinedBetween = pool.inlined ?? -1;
        }
        return r;
      }),
    ),
  );
  await between;
  t.ok(first.every((r) => r.ok));
  t.equal(inlinedBetween, 1, 'one inline, 59 to the pool in one batch, and the packet between its slices to the pool too');
  t.same(order, Array.from({ length: 61 }, (_, k) => k), 'answered in the order asked');
  t.equal(pool.inlined, 1);
  ms += 1000;
  t.ok((await pool.verify(j!.topic, j!.bytes, j!)).ok);
  t.equal(pool.inlined, 2, 'the batch resolved in two slices: the pool idle again, inline');
  swallow = true;
  const lost = pool.verify(j!.topic, j!.bytes, j!);
  await new Promise((r) => setImmediate(r)); // dispatched to the thread, which never gets it
  swallow = false;
  await workers[0]!.terminate();
  t.match(await lost, { ok: false, code: 'ERR_INTERNAL' }, 'the job of the dead thread is refused');
  ms += 1000;
  t.ok((await pool.verify(j!.topic, j!.bytes, j!)).ok);
  t.equal(pool.inlined, 3, 'its job counted out: inline again');
  t.equal(workers.length, 2, 'the thread was replaced');
});

t.test('verify pool - a packet arriving within inlineAfterIdleMs of the pool\'s last answer goes to the pool (a burst between two reads)', async (t) => {
  const [j] = jobs();
  let ms = 100;
  const pool = createVerifier(1, { clock: () => ms, inlinePerSecond: 1000, inlineBurst: 1, inlineAfterIdleMs: 5 });
  t.teardown(() => pool.close());
  const verify = async (): Promise<void> => void t.ok((await pool.verify(j!.topic, j!.bytes, j!)).ok);
  await Promise.all([verify(), verify()]);
  t.equal(pool.inlined, 1, 'a pool idle since it started: the first inline, the second (no token left) to the pool');
  ms += 3; // tokens back, but the pool answered 3 ms ago
  await verify();
  t.equal(pool.inlined, 1, 'within 5 ms of its answer: to the pool');
  ms += 4;
  await verify();
  t.equal(pool.inlined, 1, 'still within 5 ms of its last answer');
  ms += 5;
  await verify();
  t.equal(pool.inlined, 2, '5 ms after its last answer: inline');
});

t.test('verify pool - a clock that gives NaN or Infinity: no inline check in that turn, and the bucket as it was once the clock is right again', async (t) => {
  const [j] = jobs();
  let ms = 1000;
  const pool = createVerifier(1, { clock: () => ms, inlineBurst: 3, inlineAfterIdleMs: 0 });
  const verify = () => pool.verify(j!.topic, j!.bytes, j!);
  t.teardown(() => pool.close());
  t.ok((await verify()).ok);
  t.equal(pool.inlined, 1, 'one token of three spent');
  // Each reading in a turn of its own: the bucket is refilled once a turn.
  const nextTurn = () => new Promise((r) => setImmediate(r));
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
    await nextTurn();
    ms = bad;
    t.ok((await Promise.all([verify(), verify()])).every((r) => r.ok));
  }
  t.equal(pool.inlined, 1, 'the turns with a bad reading: to the pool');
  await nextTurn();
  ms = 1000; // the same reading as before: no time to refill for
  await Promise.all([verify(), verify(), verify()]);
  t.equal(pool.inlined, 3, 'a finite clock again: the two tokens left, neither lost nor refilled');
});

t.test('verify pool - inlinePerSecond 0: every packet goes to the threads', async (t) => {
  const [j] = jobs();
  const pool = createVerifier(1, { inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  for (let k = 0; k < 3; k++) t.ok((await pool.verify(j!.topic, j!.bytes, j!)).ok);
  t.equal(pool.inlined, 0);
});

// Last: it fills this process's key cache.
t.test('verify pool - the main thread checks a new key only while its key cache has room for it (INLINE_KEYS)', async (t) => {
  const TS = 1_700_000_000_000; // the packets' own ts and the check's clock: no dependence on today's date
  const [known, fresh] = [901, 902].map((n) => {
    const p = createOutcomePacket({ key: fixedKey(n), template: bearing, situation, outcome: 'failure', seq: 1, ts: TS });
    return { topic: p.topic, bytes: p.packet, now: TS + 1000, maxSkewMs: 60_000 };
  }) as [Job, Job];
  t.notOk(peerCachedOrRoom(known.bytes.subarray(10, 42), 0) || peerCachedOrRoom(fresh.bytes.subarray(10, 42), 0), 'neither key is cached yet');
  const pool = createVerifier(1, { clock: () => 0, inlineBurst: 100, inlineAfterIdleMs: 0 });
  t.teardown(() => pool.close());
  t.ok((await pool.verify(known.topic, known.bytes, known)).ok);
  t.equal(pool.inlined, 1, 'a new key while the cache has room: the main thread');
  // Other keys until the cache holds INLINE_KEYS.
  for (let i = 0; i < INLINE_KEYS; i++) peerNodeId(Uint8Array.from({ length: 32 }, (_, k) => (k < 4 ? (i >> (8 * k)) & 255 : 7)));
  t.ok((await pool.verify(fresh.topic, fresh.bytes, fresh)).ok, 'a new key is still verified');
  t.equal(pool.inlined, 1, '... by the pool: checking it here would evict a key');
  t.ok((await pool.verify(known.topic, known.bytes, known)).ok);
  t.equal(pool.inlined, 2, 'a cached key: the main thread');
});

t.test('verify pool - its threads are named qis-verify in /proc (top -H, ps -L), and no other thread is', { skip: process.platform !== 'linux' && 'thread names are read from Linux /proc' }, async (t) => {
  const { readdirSync, readFileSync } = await import('node:fs');
  const named = (): number => readdirSync('/proc/self/task').filter((tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'latin1').trim() === 'qis-verify').length;
  const before = named();
  const [j] = jobs();
  const pool = createVerifier(2, { inlinePerSecond: 0 });
  t.teardown(() => pool.close());
  // One answer from each thread: a job per thread, both busy at once (each holds a batch).
  const rs = await Promise.all(Array.from({ length: 64 }, (_, i) => pool.verify(j!.topic, j!.bytes, { ...j!, source: `s${i % 2}` })));
  t.ok(rs.every((r) => r.ok), 'the threads verified');
  t.equal(named() - before, 2, 'two more threads named qis-verify: the pool\'s two');
  await pool.close();
  t.equal(named(), before, 'gone once the pool is closed');
});
