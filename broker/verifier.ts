/**
 * Signature verification off the main thread. Every admitted packet costs one Ed25519
 * verification (~120 µs); done inline, a burst would freeze the broker's event loop for every
 * client. A pool of worker threads takes batches (one message per worker per event-loop turn),
 * so the main thread only parses MQTT and writes the store.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { QisError, type ErrorCode } from '../src/index.js';
import { verifyJob, type Job, type JobResult } from './verify-job.js';

export type VerifyResult = { ok: true; packet: { seq: number; del: boolean; exp?: number } } | { ok: false; code: ErrorCode; message: string };

export interface Verifier {
  /** Threads verifying (0: the main thread). */
  readonly workers: number;
  verify(topic: string, bytes: Uint8Array, o: { now: number; maxSkewMs: number; depth?: number }): Promise<VerifyResult>;
  close(): Promise<void>;
}

const MAX_BATCH = 256;

/**
 * Default pool size: one thread per core but one, so the main thread (MQTT, the store, ordinary
 * traffic) keeps a core during a burst. Measured on 2 cores (bench/broker.ts): one verify thread
 * kept ordinary-traffic p99 at 27 ms where two gave 68 ms, for 10–25 % less burst ingest.
 */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

/** Starts `workers` verify threads (0: verify inline). */
export function createVerifier(workers: number = defaultWorkers()): Verifier {
  if (!Number.isInteger(workers) || workers < 0) throw new QisError('ERR_INVALID_ARGUMENT', `verifyWorkers must be a non-negative integer, got ${workers}`);
  return workers === 0 ? inlineVerifier() : new Pool(workers);
}

function toResult(r: JobResult): VerifyResult {
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

interface Slot {
  worker: Worker;
  inflight: Map<number, Job>;
}

class Pool implements Verifier {
  readonly workers: number;
  readonly #slots: Slot[] = [];
  readonly #waiting = new Map<number, (r: VerifyResult) => void>();
  #queue: Job[] = [];
  #scheduled = false;
  #next = 0;
  #closed = false;

  constructor(n: number) {
    this.workers = n;
    for (let i = 0; i < n; i++) this.#slots.push(this.#spawn());
  }

  #spawn(): Slot {
    const worker = new Worker(new URL('./verify-worker.js', import.meta.url));
    const slot: Slot = { worker, inflight: new Map() };
    worker.unref();
    worker.on('message', (results: JobResult[]) => {
      for (const r of results) {
        slot.inflight.delete(r.id);
        const done = this.#waiting.get(r.id);
        this.#waiting.delete(r.id);
        done?.(toResult(r));
      }
    });
    // A worker that dies (it should not) is replaced and its jobs go to the queue again.
    const replace = (): void => {
      if (this.#closed) return;
      const i = this.#slots.indexOf(slot);
      if (i < 0) return;
      this.#slots[i] = this.#spawn();
      this.#queue.push(...slot.inflight.values());
      slot.inflight.clear();
      this.#schedule();
    };
    worker.on('error', replace);
    worker.on('exit', replace);
    return slot;
  }

  verify(topic: string, bytes: Uint8Array, o: { now: number; maxSkewMs: number; depth?: number }): Promise<VerifyResult> {
    if (this.#closed) return Promise.reject(new QisError('ERR_CLOSED', 'the verifier is closed'));
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      // A copy of just these bytes: postMessage would otherwise clone the whole socket read buffer
      // the payload is a view of (tens of kilobytes per packet).
      this.#queue.push({ id, topic, bytes: bytes.slice(), ...o });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#dispatch();
    });
  }

  /** Spreads the queue over the workers, least loaded first, in batches. */
  #dispatch(): void {
    while (this.#queue.length > 0) {
      const slot = this.#slots.reduce((a, b) => (b.inflight.size < a.inflight.size ? b : a));
      const batch = this.#queue.splice(0, Math.min(MAX_BATCH, Math.ceil(this.#queue.length / this.#slots.length)));
      for (const j of batch) slot.inflight.set(j.id, j);
      slot.worker.postMessage(batch);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const [, done] of this.#waiting) done({ ok: false, code: 'ERR_CLOSED', message: 'the broker is closing' });
    this.#waiting.clear();
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
