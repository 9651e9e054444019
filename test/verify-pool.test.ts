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
