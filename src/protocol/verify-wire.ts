/**
 * The verifier pool's wire between the main thread and its worker threads: a batch of jobs packed
 * into one ArrayBuffer that is transferred, not cloned (a structured clone of N job objects costs
 * the main thread a property walk per field; a transfer costs nothing), and the results packed the
 * same way back. Refusals (rare: forgeries, junk) carry their code and message beside the buffer.
 *
 * Job record: u32 bytesLen, u32 topicLen, i32 depth (−1: none), f64 now, f64 maxSkewMs, then the
 * topic (UTF-8) and the packet bytes. Result record (RESULT_BYTES): u8 ok, u8 del, f64 seq, f64 exp
 * (NaN: none).
 */
import { Worker } from 'node:worker_threads';
import type { ErrorCode } from './errors.js';
import type { Ed25519Backend } from './identity.js';
import { checkPacket, type CheckResult, type VerifyOptions } from './packet.js';

/**
 * A verify worker thread (src/protocol/verify-worker.ts). Started from here so that the URL is
 * resolved beside this module: in dist/src/protocol/ as compiled, and in dist/cli/ in the CLI
 * bundle, where cli/bundle.ts writes the worker as its own entry. `nice` (1..19, Linux): the thread
 * lowers its own CPU priority to that niceness as it starts (the broker's `verifyNice`), so the
 * threads that do not verify (MQTT, the store) go first when the cores are short.
 */
export function startVerifyWorker(o: { readonly nice?: number } = {}): Worker {
  return new Worker(new URL('./verify-worker.js', import.meta.url), o.nice ? { workerData: { nice: o.nice } } : {});
}

const JOB_HEAD = 28;
const RESULT_BYTES = 24;

/** A batch being packed: jobs are written in as they come, so the socket buffer is never held. */
export class PackedBatch {
  #buf: Buffer;
  #used = 0;
  count = 0;

  constructor(capacity: number) {
    this.#buf = Buffer.allocUnsafeSlow(capacity);
  }

  /** Bytes a job takes. */
  static size(topic: string, bytes: Uint8Array): number {
    return JOB_HEAD + Buffer.byteLength(topic, 'utf8') + bytes.length;
  }

  /** False when the job does not fit (the caller seals this batch and opens another). */
  add(topic: string, bytes: Uint8Array, o: { now: number; maxSkewMs: number; depth?: number }): boolean {
    const need = PackedBatch.size(topic, bytes);
    if (this.#used + need > this.#buf.length) return false;
    const b = this.#buf;
    const at = this.#used;
    const tl = b.write(topic, at + JOB_HEAD, 'utf8');
    b.writeUInt32LE(bytes.length, at);
    b.writeUInt32LE(tl, at + 4);
    b.writeInt32LE(o.depth ?? -1, at + 8);
    b.writeDoubleLE(o.now, at + 12);
    b.writeDoubleLE(o.maxSkewMs, at + 20);
    b.set(bytes, at + JOB_HEAD + tl);
    this.#used = at + need;
    this.count++;
    return true;
  }

  /** The buffer to transfer and the jobs in it (this batch is done with it). */
  seal(): { buf: ArrayBuffer; count: number } {
    return { buf: this.#buf.buffer as ArrayBuffer, count: this.count };
  }
}

/**
 * Worker side: calls `fn` with each job of a packed batch, in order (topic, packet bytes as a
 * view into the batch, and the check's options). Jobs with the same options (a query's all have
 * them, a broker's mostly) share one options object, built once, not once per job (object
 * spreads are slow on Node 20).
 */
function eachJob(ab: ArrayBuffer, count: number, extra: { readonly expectFp?: Uint8Array; readonly backend?: Ed25519Backend }, fn: (topic: string, bytes: Uint8Array, o: VerifyOptions) => void): void {
  const b = Buffer.from(ab);
  let o: VerifyOptions | undefined;
  let at = 0;
  for (let i = 0; i < count; i++) {
    const bl = b.readUInt32LE(at);
    const tl = b.readUInt32LE(at + 4);
    const depth = b.readInt32LE(at + 8);
    const now = b.readDoubleLE(at + 12);
    const maxSkewMs = b.readDoubleLE(at + 20); // NaN in a query's batch: no skew check
    if (!o || o.now !== now || (o.depth ?? -1) !== depth || !Object.is(o.maxSkewMs ?? Number.NaN, maxSkewMs)) {
      const n: { -readonly [K in keyof VerifyOptions]: VerifyOptions[K] } = { now };
      if (depth >= 0) n.depth = depth;
      if (!Number.isNaN(maxSkewMs)) n.maxSkewMs = maxSkewMs;
      if (extra.expectFp) n.expectFp = extra.expectFp;
      if (extra.backend) n.backend = extra.backend;
      o = n;
    }
    const t0 = at + JOB_HEAD;
    fn(b.toString('utf8', t0, t0 + tl), new Uint8Array(ab, t0 + tl, bl), o);
    at = t0 + tl + bl;
  }
}

/** A refusal, by job index. */
export interface Refusal {
  readonly i: number;
  readonly code: ErrorCode;
  readonly message: string;
}

/** What a worker posts back for one packed batch. */
export interface PackedResults {
  readonly buf: ArrayBuffer;
  readonly count: number;
  readonly refusals: readonly Refusal[];
}

/** Worker side: verifies a packed batch and packs the results. */
export function verifyPacked(m: { buf: ArrayBuffer; count: number }): PackedResults {
  const out = Buffer.allocUnsafeSlow(m.count * RESULT_BYTES);
  const refusals: Refusal[] = [];
  let i = 0;
  eachJob(m.buf, m.count, {}, (topic, bytes, o) => {
    // The checks of verifyJob (src/protocol/verify-job.ts), without a result object per job.
    const r = checkPacket(topic, bytes, o);
    const at = i * RESULT_BYTES;
    if (r.ok) {
      out.writeUInt8(1, at);
      out.writeUInt8(r.packet.del ? 1 : 0, at + 1);
      out.writeDoubleLE(r.packet.seq, at + 8);
      out.writeDoubleLE(r.packet.exp ?? Number.NaN, at + 16);
    } else {
      out.writeUInt8(0, at);
      refusals.push({ i, code: r.code, message: r.message });
    }
    i++;
  });
  return { buf: out.buffer as ArrayBuffer, count: m.count, refusals };
}

/** Main side: the result of job `i` of a packed batch. */
export function resultAt(
  r: PackedResults,
  view: Buffer,
  i: number,
): { ok: true; packet: { seq: number; del: boolean; exp?: number } } | { ok: false; code: ErrorCode; message: string } {
  const at = i * RESULT_BYTES;
  if (view.readUInt8(at) !== 1) {
    const f = r.refusals.find((x) => x.i === i);
    return f ? { ok: false, code: f.code, message: f.message } : { ok: false, code: 'ERR_INTERNAL', message: 'the verify worker returned no result for a job' };
  }
  const seq = view.readDoubleLE(at + 8);
  const del = view.readUInt8(at + 1) === 1;
  const exp = view.readDoubleLE(at + 16);
  return Number.isNaN(exp) ? { ok: true, packet: { seq, del } } : { ok: true, packet: { seq, del, exp } };
}

/** A query's batch (src/node/cohort-verify.ts): the packets' full checks, with the query's options. */
export interface CheckBatch {
  readonly buf: ArrayBuffer;
  readonly count: number;
  readonly check: { readonly expectFp?: Uint8Array; readonly backend?: Ed25519Backend };
}

/** Worker side: {@link checkPacket} of every packet of a query's batch, in order. */
export function checkPackedBatch(m: CheckBatch): CheckResult[] {
  const out: CheckResult[] = [];
  eachJob(m.buf, m.count, m.check, (topic, bytes, o) => out.push(checkPacket(topic, bytes, o)));
  return out;
}
