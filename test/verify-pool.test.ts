// The broker's verifier pool (broker/verifier.ts, packed batches to worker threads) against the
// inline check of the same jobs: every accept, refusal code, seq, del and exp the same, in order,
// across batch boundaries; and its bound (ERR_VERIFY_BUSY).
import t from 'tap';
import { verifyJob } from '../src/protocol/verify-job.js';
import { createVerifier, toResult } from '../broker/verifier.js';
import { hex, vector } from './helpers/vectors.js';

interface PacketCase { topic: string; packet: string; fields: Record<string, unknown> }
const v = vector<{ packet: PacketCase[] }>('protocol-v1.json');

/** Valid packets, one-bit forgeries of each part, and a packet on another node's topic. */
function jobs(): { topic: string; bytes: Uint8Array; now: number; maxSkewMs: number }[] {
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
  const pool = createVerifier(2);
  try {
    const got = await Promise.all(all.map((j) => pool.verify(j.topic, j.bytes, j)));
    const want = all.map((j, i) => toResult(verifyJob({ id: i, ...j })));
    t.same(got, want, 'every verdict as inline');
    t.ok(want.some((r) => r.ok) && want.some((r) => !r.ok && r.code === 'ERR_BAD_SIGNATURE') && want.some((r) => !r.ok && r.code === 'ERR_TS_FUTURE'), 'the jobs hold accepts, forgeries and a future ts');
  } finally {
    await pool.close();
  }
});

t.test('verify pool - bounded: beyond maxQueued a job is refused with ERR_VERIFY_BUSY, and the rest still verify', async (t) => {
  const [j] = jobs();
  const pool = createVerifier(1, { maxQueued: 3 });
  try {
    const ps = Array.from({ length: 5 }, () => pool.verify(j!.topic, j!.bytes, j!));
    const rs = await Promise.all(ps);
    t.same(rs.map((r) => r.ok), [true, true, true, false, false], 'three verified, two refused');
    t.equal(rs[3]!.ok ? undefined : rs[3]!.code, 'ERR_VERIFY_BUSY');
    const again = await pool.verify(j!.topic, j!.bytes, j!);
    t.ok(again.ok, 'room again once the queue drained');
  } finally {
    await pool.close();
  }
});

t.test('verify pool - fair across sources: a quiet source overtakes a flood queued before it', async (t) => {
  const [j] = jobs();
  // Batches of 4 (2 while sources mix), one batch in the worker at a time: small enough that the
  // bound (the batch in the worker + one job per busy source) is far below the flood's backlog.
  const pool = createVerifier(1, { batchJobs: 4, mixedBatchJobs: 2, perWorker: 1 });
  try {
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
  } finally {
    await pool.close();
  }
});

t.test('verify pool - per-source bound: beyond maxQueuedPerSource that source is refused (ERR_VERIFY_CONNECTION_BUSY), others are not', async (t) => {
  const [j] = jobs();
  const pool = createVerifier(1, { maxQueuedPerSource: 3 });
  try {
    const verify = (source: string) => pool.verify(j!.topic, j!.bytes, { ...j!, source });
    const rs = await Promise.all([...Array.from({ length: 5 }, () => verify('flood')), verify('quiet')]);
    t.same(rs.map((r) => (r.ok ? 'ok' : r.code)), ['ok', 'ok', 'ok', 'ERR_VERIFY_CONNECTION_BUSY', 'ERR_VERIFY_CONNECTION_BUSY', 'ok'], "the flood's 4th and 5th refused, the quiet source's job verified");
    t.ok((await verify('flood')).ok, "room again once the flood's lane drained");
  } finally {
    await pool.close();
  }
});
