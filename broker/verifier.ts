/**
 * Signature verification off the main thread. Every admitted packet costs one Ed25519
 * verification (~120 µs); done inline, a burst would freeze the broker's event loop for every
 * client. A pool of worker threads takes packed batches (src/protocol/verify-wire.ts), so the main
 * thread only parses MQTT, packs the bytes once and writes the store. Each batch takes a packet of
 * every waiting source (connection) first (verify-queue.ts), so one client's burst does not delay
 * another's packet.
 *
 * A packet that finds the pool idle is verified on the main thread instead, within a budget
 * ({@link INLINE_PER_SECOND}, {@link INLINE_BURST}): a round trip to a worker thread costs more
 * than the verification itself here (two thread wake-ups: 65–80 µs of CPU and 80–100 µs of
 * latency measured on 2 cores, against ~100 µs for the verification), which is what a packet
 * paced in alone pays, a federation hop's among them. A burst keeps the pool busy, so it goes to
 * the threads as before.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { canonicalKid, PackedBatch, peerCachedOrRoom, QisError, resultAt, startVerifyWorker, verifyJob, type ErrorCode, type PackedResults, type VerifyJobResult as JobResult } from '../src/index.js';
import { FairQueue } from './verify-queue.js';

export type VerifyResult = { ok: true; packet: { seq: number; del: boolean; exp?: number } } | { ok: false; code: ErrorCode; message: string };

export interface Verifier {
  /** Threads verifying (0: the main thread). */
  readonly workers: number;
  /** Verifications run on the main thread so far (with no threads: all of them). */
  readonly inlined?: number;
  verify(topic: string, bytes: Uint8Array, o: VerifyOptions): Promise<VerifyResult>;
  close(): Promise<void>;
}

export interface VerifyOptions {
  now: number;
  maxSkewMs: number;
  depth?: number;
  /**
   * Who published the packet (its Aedes client, a federation link's name; undefined: one shared
   * lane): the pool verifies sources round robin, so one source's burst does not delay another's.
   */
  source?: object | string;
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
 * `maxQueuedPerSource`: packets of one source waiting at most (default {@link MAX_QUEUED_PER_SOURCE});
 * beyond, ERR_VERIFY_CONNECTION_BUSY.
 */
export function createVerifier(workers: number = defaultWorkers(), o: PoolOptions = {}): Verifier {
  if (!Number.isInteger(workers) || workers < 0) throw new QisError('ERR_INVALID_ARGUMENT', `verifyWorkers must be a non-negative integer, got ${workers}`);
  return workers === 0 ? inlineVerifier() : new Pool(workers, o);
}

export function toResult(r: JobResult): VerifyResult {
  if (!r.ok) return { ok: false, code: r.code, message: r.message };
  return { ok: true, packet: r.exp === undefined ? { seq: r.seq, del: r.del } : { seq: r.seq, del: r.del, exp: r.exp } };
}

/** One verification on this thread (the checks a worker runs; a fault, which would end a worker, is ERR_INTERNAL). */
function verifyHere(topic: string, bytes: Uint8Array, o: VerifyOptions): VerifyResult {
  try {
    return toResult(verifyJob({ id: 0, topic, bytes, now: o.now, maxSkewMs: o.maxSkewMs, ...(o.depth !== undefined ? { depth: o.depth } : {}) }));
  } catch (e) {
    return { ok: false, code: 'ERR_INTERNAL', message: `verification failed: ${(e as Error).message}` };
  }
}

function inlineVerifier(): Verifier {
  let inlined = 0;
  return {
    workers: 0,
    get inlined() {
      return inlined;
    },
    verify: (topic, bytes, o) => {
      inlined++;
      return Promise.resolve(verifyHere(topic, bytes, o));
    },
    close: () => Promise.resolve(),
  };
}

/**
 * Verifications per second the main thread may run itself while the pool is idle (the broker's
 * `verifyInline`; 0: never): at ~100 µs each, 2,000 a second is at most a fifth of the main
 * thread. Enough for a region's paced traffic and a federation hop's at 1,000 packets a second.
 */
export const INLINE_PER_SECOND = 2000;
/** Inline verifications in one event-loop turn at most (the bucket's size, refilled once a turn): ~1 ms of the loop at once. */
export const INLINE_BURST = 8;
/**
 * The pool idle this long at least (ms since it answered its last job) before a packet is verified
 * inline. A burst keeps the threads busy but for the moments between two socket reads, when they
 * have just answered everything; a packet arriving then is part of the burst, and goes to them.
 * Paced traffic leaves gaps longer than this (1 ms at 1,000 packets a second).
 */
export const INLINE_AFTER_IDLE_MS = 0.5;
/**
 * A packet is verified inline only if its key is in the main thread's key cache, or that cache
 * holds fewer keys than this: so inline checks add at most this many KeyObjects (~2 KB of native
 * memory each) to the main thread and never evict one (an evicted KeyObject's memory waits for a
 * full collection; measured: +150–200 MiB at 16k evictions a round). Other keys go to the pool.
 */
export const INLINE_KEYS = 4096;

/** Jobs per batch: one batch's results are resolved in one event-loop turn, so this bounds how long admission holds the loop (~32 store puts). */
const BATCH_JOBS = 32;
/**
 * Jobs per batch while more than one source waits: a quiet source's packet waits for the batches
 * already in the workers, so smaller batches then shorten its wait (each costs one more message
 * to the worker and back, a few µs against ~16 verifications).
 */
const MIXED_BATCH_JOBS = 16;
/** Bytes a batch buffer holds: 32 jobs of a 512-byte packet and a long topic. */
const BATCH_BYTES = 32 * 1024;
/** Batches a worker holds at once: the next is ready when one is done, and no more wait in a worker that could die. */
const PER_WORKER = 2;
/** Packets awaiting verification, at most; beyond, a publish is refused (ERR_VERIFY_BUSY) rather than queued without bound. */
export const MAX_QUEUED = 16_384;
/**
 * Packets one source (a client connection, a federation link) may have awaiting verification;
 * beyond, its publish is refused (ERR_VERIFY_CONNECTION_BUSY). Above what flow control lets a
 * source have unanswered: Aedes reads no further from a client until the publishes of its last
 * read are answered (one socket read: ~450 packets of 182 B), and a federation link admits one
 * put batch of 256 at a time. So one flooding connection cannot take the whole of MAX_QUEUED.
 */
export const MAX_QUEUED_PER_SOURCE = 1024;
/** Results resolved per event-loop turn when a batch is larger than that (a batch of one big job list). */
const SLICE = BATCH_JOBS;

type Resolve = (r: VerifyResult) => void;

interface Job {
  readonly topic: string;
  readonly bytes: Uint8Array;
  readonly o: VerifyOptions;
  readonly resolve: Resolve;
}

interface Batch {
  readonly packed: PackedBatch;
  readonly resolvers: Resolve[];
}

interface Slot {
  worker: Worker;
  /** Batches sent, oldest first: a worker answers in order. */
  inflight: Batch[];
}

export interface PoolOptions {
  /** Niceness of the verify threads, 0..19 (Linux; the broker's verifyNice). 0: the process's own. */
  nice?: number;
  maxQueued?: number;
  maxQueuedPerSource?: number;
  /** Tuning (the bench's A/B): jobs per batch with one source waiting, with several, and batches in a worker at once. */
  batchJobs?: number;
  mixedBatchJobs?: number;
  perWorker?: number;
  /** Verifications a second the main thread may run while the pool is idle (default {@link INLINE_PER_SECOND}; 0: never). */
  inlinePerSecond?: number;
  /** Inline verifications in one event-loop turn at most (default {@link INLINE_BURST}). */
  inlineBurst?: number;
  /** The pool idle this long (ms) at least before a packet is verified inline (default {@link INLINE_AFTER_IDLE_MS}). */
  inlineAfterIdleMs?: number;
  /** Milliseconds of a monotonic clock, for the inline budget (default performance.now). */
  clock?: () => number;
}

/**
 * The pool: jobs wait in a lane per source (verify-queue.ts); when a worker has room, a batch is
 * filled with one job of each waiting source, then the oldest jobs, and sent as a transferred
 * buffer, and each answer is resolved in slices. So a quiet source's packet waits behind the
 * batches in the workers and at most one job per busy source, not behind a flood's backlog.
 * Bounded: PER_WORKER batches in each worker, MAX_QUEUED packets in all, MAX_QUEUED_PER_SOURCE
 * waiting per source.
 */
class Pool implements Verifier {
  readonly workers: number;
  readonly #slots: Slot[] = [];
  readonly #waiting: FairQueue<Job>;
  /** Jobs waiting or in a worker. */
  #queued = 0;
  /** Jobs accepted and not yet resolved (a worker's answer is resolved in slices, after #queued counts it out). */
  #unresolved = 0;
  /** Inline budget: tokens, as of #tokensAt (ms). */
  #tokens: number;
  #tokensAt: number;
  readonly #inlinePerMs: number;
  readonly #inlineBurst: number;
  readonly #clock: () => number;
  /** The bucket was refilled this event-loop turn. */
  #refilled = false;
  /** When the pool last answered its last unresolved job (ms of #clock). */
  #idleAt = Number.NEGATIVE_INFINITY;
  readonly #idleMs: number;
  #inlined = 0;
  #scheduled = false;
  #closed = false;
  readonly #maxQueued: number;
  readonly #batchJobs: number;
  readonly #mixedBatchJobs: number;
  readonly #perWorker: number;
  readonly #nice: number;

  constructor(n: number, o: PoolOptions) {
    this.#nice = o.nice ?? 0;
    this.workers = n;
    this.#maxQueued = o.maxQueued ?? MAX_QUEUED;
    this.#waiting = new FairQueue<Job>(o.maxQueuedPerSource ?? MAX_QUEUED_PER_SOURCE);
    this.#batchJobs = o.batchJobs ?? BATCH_JOBS;
    this.#mixedBatchJobs = o.mixedBatchJobs ?? MIXED_BATCH_JOBS;
    this.#perWorker = o.perWorker ?? PER_WORKER;
    this.#inlinePerMs = (o.inlinePerSecond ?? INLINE_PER_SECOND) / 1000;
    this.#inlineBurst = o.inlineBurst ?? INLINE_BURST;
    this.#clock = o.clock ?? (() => performance.now());
    this.#idleMs = o.inlineAfterIdleMs ?? INLINE_AFTER_IDLE_MS;
    this.#tokens = this.#inlinePerMs > 0 ? this.#inlineBurst : 0;
    this.#tokensAt = this.#clock();
    for (let i = 0; i < n; i++) this.#slots.push(this.#spawn());
  }

  get inlined(): number {
    return this.#inlined;
  }

  /**
   * Whether this packet is verified here: nothing of the pool's is unresolved (so no packet
   * accepted before it is answered after it), it starts as the recognised form does (its key read
   * where packet-fast.ts reads it; any other form goes to the pool), its key needs no eviction
   * (INLINE_KEYS), the pool has been idle for INLINE_AFTER_IDLE_MS, and the budget has a token.
   */
  #inline(bytes: Uint8Array): boolean {
    if (this.#unresolved > 0 || this.#inlinePerMs === 0) return false;
    const kid = canonicalKid(bytes);
    if (!kid || !peerCachedOrRoom(kid, INLINE_KEYS)) return false;
    // Refilled once per event-loop turn, not per packet: the checks of one turn (one socket read
    // of many packets) take time of their own, which must not buy more of them in the same turn.
    if (!this.#refilled) {
      this.#refilled = true;
      setImmediate(() => {
        this.#refilled = false;
      });
      const now = this.#clock();
      if (!Number.isFinite(now)) {
        // A clock gone wrong: none this turn (NaN fails the idle check below), the bucket kept as it was.
        this.#tokensAt = Number.NaN;
        return false;
      }
      // No refill for the time since a reading that was not a number.
      if (Number.isFinite(this.#tokensAt)) this.#tokens = Math.min(this.#inlineBurst, this.#tokens + (now - this.#tokensAt) * this.#inlinePerMs);
      this.#tokensAt = now;
    }
    // A burst: the threads answered their last job just now, and the next packets are already here.
    if (!(this.#tokensAt - this.#idleAt >= this.#idleMs)) return false;
    if (!(this.#tokens >= 1)) return false;
    this.#tokens -= 1;
    return true;
  }

  /** The pool answered its last job: now, or (a clock that is not a number) as if long ago. */
  #wentIdle(): void {
    const now = this.#clock();
    this.#idleAt = Number.isFinite(now) ? now : Number.NEGATIVE_INFINITY;
  }

  #spawn(): Slot {
    const worker = startVerifyWorker({ nice: this.#nice });
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
        this.#unresolved -= b.resolvers.length;
        if (this.#unresolved === 0) this.#wentIdle();
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
    this.#unresolved -= to - from;
    if (this.#unresolved === 0) this.#wentIdle();
    for (let i = from; i < to; i++) (resolvers[i] as Resolve)(resultAt(r, view, i));
    if (to < resolvers.length) setImmediate(() => this.#resolve(resolvers, r, view, to));
  }

  verify(topic: string, bytes: Uint8Array, o: VerifyOptions): Promise<VerifyResult> {
    if (this.#closed) return Promise.reject(new QisError('ERR_CLOSED', 'the verifier is closed'));
    if (this.#queued >= this.#maxQueued) return Promise.resolve({ ok: false, code: 'ERR_VERIFY_BUSY', message: `${this.#maxQueued} packets are already awaiting verification` });
    if (this.#inline(bytes)) {
      this.#inlined++;
      return Promise.resolve(verifyHere(topic, bytes, o));
    }
    return new Promise((resolve) => {
      if (!this.#waiting.push(o.source, { topic, bytes, o, resolve })) {
        return resolve({ ok: false, code: 'ERR_VERIFY_CONNECTION_BUSY', message: `this connection already has ${this.#waiting.perSource} packets awaiting verification` });
      }
      this.#queued++;
      this.#unresolved++;
      // A full batch goes at once if a worker has room; the rest of this turn's packets (other
      // sources' among them) once the turn's I/O is parsed.
      if (this.#waiting.size >= this.#batchJobs) this.#dispatch();
      else this.#schedule();
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

  /** While a worker has room (PER_WORKER batches), a batch filled round robin from the waiting lanes goes to the least busy one. */
  #dispatch(): void {
    while (this.#waiting.size > 0) {
      const slot = this.#slots.reduce((a, b) => (b.inflight.length < a.inflight.length ? b : a));
      if (slot.inflight.length >= this.#perWorker) return;
      const b = this.#fill();
      slot.inflight.push(b);
      const m = b.packed.seal();
      slot.worker.postMessage(m, [m.buf]);
    }
  }

  /**
   * One batch from the waiting lanes (at least one job: the caller checked): one job of each
   * waiting source (round robin), then the oldest jobs whatever their source. Packed now, at
   * dispatch: the bytes are copied once (until then they are Aedes' read buffer, which admission
   * holds anyway until the store has copied them).
   */
  #fill(): Batch {
    const w = this.#waiting;
    const max = w.sources > 1 ? this.#mixedBatchJobs : this.#batchJobs;
    const first = w.peek() as Job;
    const packed = new PackedBatch(Math.max(BATCH_BYTES, PackedBatch.size(first.topic, first.bytes)));
    const resolvers: Resolve[] = [];
    const add = (j: Job | undefined): boolean => j !== undefined && resolvers.length < max && packed.add(j.topic, j.bytes, j.o) && resolvers.push(j.resolve) > 0;
    for (let turns = w.sources; turns > 0 && add(w.peek()); turns--) w.take();
    while (add(w.peekOldest())) w.takeOldest();
    return { packed, resolvers };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing: VerifyResult = { ok: false, code: 'ERR_CLOSED', message: 'the broker is closing' };
    for (const j of this.#waiting.drain()) j.resolve(closing);
    for (const s of this.#slots) for (const b of s.inflight) for (const done of b.resolvers) done(closing);
    for (const s of this.#slots) s.inflight = [];
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
