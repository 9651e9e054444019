/**
 * Signature verification off the main thread. Every admitted packet costs one Ed25519
 * verification (~120 µs); done inline, a burst would freeze the broker's event loop for every
 * client. A pool of worker threads takes packed batches (src/protocol/verify-wire.ts), so the main
 * thread only parses MQTT, packs the bytes once and writes the store.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { PackedBatch, QisError, resultAt, startVerifyWorker, verifyJob, type ErrorCode, type PackedResults, type VerifyJobResult as JobResult } from '../src/index.js';

export type VerifyResult = { ok: true; packet: { seq: number; del: boolean; exp?: number } } | { ok: false; code: ErrorCode; message: string };

export interface Verifier {
  /** Threads verifying (0: the main thread). */
  readonly workers: number;
  verify(topic: string, bytes: Uint8Array, o: { now: number; maxSkewMs: number; depth?: number }): Promise<VerifyResult>;
  close(): Promise<void>;
}

/**
 * Default pool size: one thread per core but one, so the main thread (MQTT, the store, ordinary
 * traffic) keeps a core during a burst. Measured on 2 cores (bench/broker.ts): one verify thread
 * kept ordinary-traffic p99 at 27 ms where two gave 68 ms, for 10–25 % less burst ingest.
 */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

/**
 * Starts `workers` verify threads (0: verify inline). `maxQueued`: packets awaiting verification
 * at most (default {@link MAX_QUEUED}); beyond, verify() answers ERR_VERIFY_BUSY.
 */
export function createVerifier(workers: number = defaultWorkers(), o: { maxQueued?: number } = {}): Verifier {
  if (!Number.isInteger(workers) || workers < 0) throw new QisError('ERR_INVALID_ARGUMENT', `verifyWorkers must be a non-negative integer, got ${workers}`);
  return workers === 0 ? inlineVerifier() : new Pool(workers, o.maxQueued ?? MAX_QUEUED);
}

export function toResult(r: JobResult): VerifyResult {
  if (!r.ok) return { ok: false, code: r.code, message: r.message };
  return { ok: true, packet: r.exp === undefined ? { seq: r.seq, del: r.del } : { seq: r.seq, del: r.del, exp: r.exp } };
}

function inlineVerifier(): Verifier {
  let id = 0;
  return {
    workers: 0,
    verify: (topic, bytes, o) => Promise.resolve(toResult(verifyJob({ id: id++, topic, bytes, ...o }))),
    close: () => Promise.resolve(),
  };
}

/** Jobs per batch: one batch's results are resolved in one event-loop turn, so this bounds how long admission holds the loop (~32 store puts). */
const BATCH_JOBS = 32;
/** Bytes a batch buffer holds: 32 jobs of a 512-byte packet and a long topic. */
const BATCH_BYTES = 32 * 1024;
/** Batches a worker holds at once: the next is ready when one is done, and no more wait in a worker that could die. */
const PER_WORKER = 2;
/** Packets awaiting verification, at most; beyond, a publish is refused (ERR_VERIFY_BUSY) rather than queued without bound. */
export const MAX_QUEUED = 16_384;
/** Results resolved per event-loop turn when a batch is larger than that (a batch of one big job list). */
const SLICE = BATCH_JOBS;

type Resolve = (r: VerifyResult) => void;

interface Batch {
  readonly packed: PackedBatch;
  readonly resolvers: Resolve[];
}

interface Slot {
  worker: Worker;
  /** Batches sent, oldest first: a worker answers in order. */
  inflight: Batch[];
}

/**
 * The pool: jobs are packed as they arrive into the open batch (32 jobs at most), batches go to
 * the least busy worker as transferred buffers, and each answer is resolved in one turn. Bounded:
 * PER_WORKER batches in each worker, MAX_QUEUED packets in all.
 */
class Pool implements Verifier {
  readonly workers: number;
  readonly #slots: Slot[] = [];
  #open: Batch | undefined;
  readonly #ready: Batch[] = [];
  #queued = 0;
  #scheduled = false;
  #closed = false;
  readonly #maxQueued: number;

  constructor(n: number, maxQueued: number) {
    this.workers = n;
    this.#maxQueued = maxQueued;
    for (let i = 0; i < n; i++) this.#slots.push(this.#spawn());
  }

  #spawn(): Slot {
    const worker = startVerifyWorker();
    const slot: Slot = { worker, inflight: [] };
    worker.unref();
    worker.on('message', (r: PackedResults) => {
      const b = slot.inflight.shift();
      if (!b) return;
      this.#queued -= b.resolvers.length;
      this.#dispatch();
      this.#resolve(b.resolvers, r, Buffer.from(r.buf), 0);
    });
    // A worker that dies (it should not) is replaced; its batches were transferred to it, so their
    // publishes are refused (ERR_INTERNAL: the client is disconnected and resends a QoS 1 publish).
    const replace = (): void => {
      if (this.#closed) return;
      const i = this.#slots.indexOf(slot);
      if (i < 0) return;
      this.#slots[i] = this.#spawn();
      for (const b of slot.inflight) {
        this.#queued -= b.resolvers.length;
        for (const done of b.resolvers) done({ ok: false, code: 'ERR_INTERNAL', message: 'a verify worker thread died' });
      }
      slot.inflight = [];
      this.#dispatch();
    };
    worker.on('error', replace);
    worker.on('exit', replace);
    return slot;
  }

  /** Resolves from index `from`, SLICE per turn: a big answer never holds the event loop. */
  #resolve(resolvers: readonly Resolve[], r: PackedResults, view: Buffer, from: number): void {
    const to = Math.min(resolvers.length, from + SLICE);
    for (let i = from; i < to; i++) (resolvers[i] as Resolve)(resultAt(r, view, i));
    if (to < resolvers.length) setImmediate(() => this.#resolve(resolvers, r, view, to));
  }

  verify(topic: string, bytes: Uint8Array, o: { now: number; maxSkewMs: number; depth?: number }): Promise<VerifyResult> {
    if (this.#closed) return Promise.reject(new QisError('ERR_CLOSED', 'the verifier is closed'));
    if (this.#queued >= this.#maxQueued) return Promise.resolve({ ok: false, code: 'ERR_VERIFY_BUSY', message: `${this.#maxQueued} packets are already awaiting verification` });
    return new Promise((resolve) => {
      // Packed now: the bytes are copied out of the socket's read buffer at once, and only once.
      let b = this.#open;
      if (!b || !b.packed.add(topic, bytes, o)) {
        if (b) this.#seal();
        b = this.#open = { packed: new PackedBatch(Math.max(BATCH_BYTES, PackedBatch.size(topic, bytes))), resolvers: [] };
        b.packed.add(topic, bytes, o);
      }
      b.resolvers.push(resolve);
      this.#queued++;
      if (b.resolvers.length >= BATCH_JOBS) {
        this.#seal();
        this.#dispatch();
      } else this.#schedule();
    });
  }

  #seal(): void {
    if (this.#open) this.#ready.push(this.#open);
    this.#open = undefined;
  }

  /** The rest of this turn's packets go out together, once the turn's I/O is parsed. */
  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#seal();
      this.#dispatch();
    });
  }

  /** Ready batches to the least busy workers, PER_WORKER each at most. */
  #dispatch(): void {
    while (this.#ready.length > 0) {
      const slot = this.#slots.reduce((a, b) => (b.inflight.length < a.inflight.length ? b : a));
      if (slot.inflight.length >= PER_WORKER) return;
      const b = this.#ready.shift() as Batch;
      slot.inflight.push(b);
      const m = b.packed.seal();
      slot.worker.postMessage(m, [m.buf]);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing: VerifyResult = { ok: false, code: 'ERR_CLOSED', message: 'the broker is closing' };
    this.#seal();
    for (const b of [...this.#ready, ...this.#slots.flatMap((s) => s.inflight)]) for (const done of b.resolvers) done(closing);
    this.#ready.length = 0;
    for (const s of this.#slots) s.inflight = [];
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
