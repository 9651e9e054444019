/** Worker thread of the verifier pool: verifies batches of packets (PROTOCOL §5 checks). */
import { parentPort } from 'node:worker_threads';
import { checkPacket } from '../src/index.js';
import type { Job, JobResult } from './verifier.js';

parentPort?.on('message', (batch: Job[]) => {
  const out: JobResult[] = batch.map((j) => verifyJob(j));
  parentPort?.postMessage(out);
});

/** One job, as the pool and the inline path both run it. */
export function verifyJob(j: Job): JobResult {
  const r = checkPacket(j.topic, j.bytes, { now: j.now, maxSkewMs: j.maxSkewMs, ...(j.depth !== undefined ? { depth: j.depth } : {}) });
  if (!r.ok) return { id: j.id, ok: false, code: r.code, message: r.message };
  const p = r.packet;
  return { id: j.id, ok: true, seq: p.seq, del: p.del, ...(p.exp !== undefined ? { exp: p.exp } : {}) };
}
