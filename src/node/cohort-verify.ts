/**
 * A query's verification while its packets arrive (issue 15): each cohort message is checked as it
 * comes, not after the sync marker, and folded in arrival order (CohortFolder). The first
 * INLINE_FIRST messages are checked here on the main thread; a bigger cohort goes in packed
 * batches to verify worker threads (src/protocol/verify-worker.ts, shared by every query of the
 * process, started on the first big read, stopped after 2 s idle), one per core, while the main
 * thread keeps receiving. The verdicts are those of checkPacket with the folder's options, wherever it ran.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { CohortFolder, type CohortFold, type FoldOptions } from '../protocol/cohort.js';
import { QisError } from '../protocol/errors.js';
import type { CheckResult } from '../protocol/packet.js';
import { PackedBatch, startVerifyWorker, type CheckBatch } from '../protocol/verify-wire.js';

/** Messages checked on the main thread before the workers are used: a small cohort never waits for a thread to start. */
const INLINE_FIRST = 128;
/** Messages per batch to a worker. */
const BATCH = 128;
/** A batch's buffer: 128 packets of 512 bytes and their topics. */
const BATCH_BYTES = 128 * 1024;

interface Pending {
  readonly resolve: (r: CheckResult[]) => void;
  readonly reject: (e: Error) => void;
}
interface Thread {
  worker: Worker;
  /** Started (its modules loaded): until one is, the main thread goes on checking. */
  online: boolean;
  /** Batches sent, oldest first (a worker answers in order). */
  readonly pending: Pending[];
}

/** The process's verify threads for queries, started on first use. Bounded: one per core. */
let threads: Thread[] | undefined;
/** Idle threads are stopped after this: a query process that is done exits, a busy one keeps them. */
const IDLE_MS = 2000;
let idleTimer: NodeJS.Timeout | undefined;

function start(): Thread {
  const t: Thread = { worker: startVerifyWorker(), online: false, pending: [] };
  t.worker.unref();
  t.worker.once('online', () => (t.online = true));
  t.worker.on('message', (r: CheckResult[]) => {
    t.pending.shift()?.resolve(r);
    if (threads?.every((x) => x.pending.length === 0)) {
      idleTimer = setTimeout(stopIdle, IDLE_MS);
      idleTimer.unref();
    }
  });
  const fail = (e?: Error): void => {
    const i = threads ? threads.indexOf(t) : -1;
    if (i < 0) return; // stopped as idle
    (threads as Thread[])[i] = start();
    const err = new QisError('ERR_INTERNAL', `a verify worker thread stopped: ${e?.message ?? 'it exited'}`);
    for (const p of t.pending.splice(0)) p.reject(err);
  };
  t.worker.on('error', fail);
  t.worker.on('exit', () => fail());
  return t;
}

function stopIdle(): void {
  const ts = threads;
  if (!ts || ts.some((t) => t.pending.length > 0)) return;
  threads = undefined;
  for (const t of ts) void t.worker.terminate();
}

/** Starts the threads if they are not; true once one of them is online. */
function threadsReady(): boolean {
  clearTimeout(idleTimer);
  threads ??= Array.from({ length: Math.max(1, availableParallelism()) }, start);
  return threads.some((t) => t.online);
}

/** Starts the threads and resolves once one is online (a test that must reach them waits for it). */
export async function threadsOnline(): Promise<void> {
  while (!threadsReady()) await new Promise((r) => setTimeout(r, 10));
}

function check(batch: PackedBatch, o: CheckBatch['check']): Promise<CheckResult[]> {
  clearTimeout(idleTimer);
  const all = threads as Thread[];
  const online = all.filter((t) => t.online);
  const t = (online.length > 0 ? online : all).reduce((a, b) => (b.pending.length < a.pending.length ? b : a));
  return new Promise((resolve, reject) => {
    t.pending.push({ resolve, reject });
    const { buf, count } = batch.seal();
    t.worker.postMessage({ buf, count, check: o }, [buf]);
  });
}

/**
 * Folds a cohort as its messages arrive: add() each message the read keeps (in order), reset()
 * when the read starts again on a new connection, finish() once the read ended.
 */
export class CohortStream {
  readonly #o: FoldOptions;
  readonly #accept: (topic: string) => boolean;
  #folder: CohortFolder;
  #count = 0;
  #open: PackedBatch | undefined;
  /** The batches out, in order: each folds once it and every batch before it are back. */
  #chain: Promise<void> = Promise.resolve();
  #gen = 0;
  /** A batch went to a thread: a message checked here must wait for it (arrival order). */
  #sent = false;
  #failed: Error | undefined;

  /** `accept`: the topics of the cohort (a read may also carry other messages, e.g. revocation lists). */
  constructor(o: FoldOptions, accept: (topic: string) => boolean = () => true) {
    this.#o = o;
    this.#accept = accept;
    this.#folder = new CohortFolder(o);
  }

  add(topic: string, payload: Uint8Array): void {
    if (!this.#accept(topic)) return;
    // Checked here while the cohort is small or no thread has started yet (a thread takes tens of
    // milliseconds to load, far more on a busy machine: the read does not wait for it). A message
    // checked here waits for the batches sent before it, so the fold keeps the arrival order.
    if (this.#count++ < INLINE_FIRST || !threadsReady()) {
      if (!this.#sent) return this.#folder.add(topic, payload);
      this.#send();
      const gen = this.#gen;
      this.#chain = this.#chain.then(() => {
        if (gen === this.#gen) this.#folder.add(topic, payload);
      });
      return;
    }
    const opts = this.#folder.verifyOptions;
    const job = { now: opts.now ?? Date.now(), maxSkewMs: Number.NaN, ...(opts.depth !== undefined ? { depth: opts.depth } : {}) };
    if (!this.#open || !this.#open.add(topic, payload, job)) {
      if (this.#open) this.#send();
      this.#open = new PackedBatch(Math.max(BATCH_BYTES, PackedBatch.size(topic, payload)));
      this.#open.add(topic, payload, job);
    }
    if (this.#open.count >= BATCH) this.#send();
  }

  #send(): void {
    const batch = this.#open;
    this.#open = undefined;
    if (!batch) return;
    this.#sent = true;
    const gen = this.#gen;
    const opts = this.#folder.verifyOptions;
    const answer = check(batch, { ...(opts.expectFp ? { expectFp: opts.expectFp } : {}), ...(opts.backend ? { backend: opts.backend } : {}) });
    // Folded in order as the batches come back, during the read.
    this.#chain = this.#chain.then(() =>
      answer.then(
        (rs) => {
          if (gen === this.#gen) for (const r of rs) this.#folder.addChecked(r);
        },
        (e: unknown) => {
          if (gen === this.#gen) this.#failed = e as Error;
        },
      ),
    );
  }

  /** The read starts again (a new connection): what came so far is forgotten. */
  reset(): void {
    this.#gen++;
    this.#folder = new CohortFolder(this.#o);
    this.#count = 0;
    this.#sent = false;
    this.#open = undefined;
    this.#chain = Promise.resolve();
    this.#failed = undefined;
  }

  /** The fold, once every batch is back. */
  async finish(): Promise<CohortFold> {
    this.#send();
    await this.#chain;
    if (this.#failed) throw this.#failed;
    return this.#folder.finish();
  }
}
