/**
 * One verification job and its result: what the verifier pool (broker/verifier.ts) sends its
 * worker threads (broker/verify-worker.ts) and what it runs inline with no threads. A module of
 * its own so that neither of the two imports the other.
 */
// From the module itself, not src/index.js: a worker thread starts by loading only what it runs.
import type { ErrorCode } from './errors.js';
import { checkPacket } from './packet.js';

/** One packet to verify. */
export interface Job {
  readonly id: number;
  readonly topic: string;
  readonly bytes: Uint8Array;
  readonly now: number;
  readonly maxSkewMs: number;
  readonly depth?: number;
}

export type JobResult =
  | { readonly id: number; readonly ok: true; readonly seq: number; readonly del: boolean; readonly exp?: number }
  | { readonly id: number; readonly ok: false; readonly code: ErrorCode; readonly message: string };

/** One job, as the pool's threads and the inline path both run it (PROTOCOL §5 checks). */
export function verifyJob(j: Job): JobResult {
  const r = checkPacket(j.topic, j.bytes, { now: j.now, maxSkewMs: j.maxSkewMs, ...(j.depth !== undefined ? { depth: j.depth } : {}) });
  if (!r.ok) return { id: j.id, ok: false, code: r.code, message: r.message };
  const p = r.packet;
  return { id: j.id, ok: true, seq: p.seq, del: p.del, ...(p.exp !== undefined ? { exp: p.exp } : {}) };
}
