/**
 * A query's verification while its packets arrive (issue 15): each cohort message is checked as it
 * comes, not after the sync marker, and folded in arrival order (CohortFolder). The first
 * INLINE_FIRST messages are checked here on the main thread, unless the threads are up already; a
 * bigger cohort goes in packed batches to verify worker threads (src/protocol/verify-worker.ts,
 * shared by every query of the process, started on the first big read, stopped after IDLE_MS
 * idle), one per core. A thread holds IN_FLIGHT batches at most; the rest wait here (a read's
 * round has maxQueryMessages at most; a round reset or abandoned takes its own out) and go to the
 * first thread with room, its own shard's first, so
 * the thread that shares its core with the main thread (reading, collecting garbage) does less and
 * both finish together. Meanwhile the main thread only receives and packs: it never verifies past
 * INLINE_FIRST, even while the threads are still starting (their first batches wait), as every
 * cycle it spends verifying delays the receipt of the rest of the cohort. It takes no share of the
 * batches either: with one thread per core the cores are busy until the last batch is back.
 * The verdicts are those of checkPacket with the folder's options, wherever it ran.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { CohortFolder, type CohortFold, type FoldOptions } from '../protocol/cohort.js';
import { QisError } from '../protocol/errors.js';
import type { CheckResult } from '../protocol/packet.js';
import { PackedBatch, startVerifyWorker, type CheckBatch } from '../protocol/verify-wire.js';

/** Messages checked on the main thread before the workers are used, unless they are up already: a small cohort never waits for a thread to start. */
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
  /** Started (its modules loaded): a read that finds one online checks none of its packets here. */
  online: boolean;
  /** Batches sent, oldest first (a worker answers in order). */
  readonly pending: Pending[];
  /** Batches answered so far. */
  answered: number;
}

/** The process's verify threads for queries, started on first use. Bounded: one per core. */
let threads: Thread[] | undefined;
/**
 * Idle threads are stopped after this (they never hold the process open: a query process that is
 * done exits). Long enough that a node querying its cohort again finds the threads started and
 * their key caches (node ids and KeyObjects, src/protocol/identity.ts) warm.
 */
const IDLE_MS = 30_000;
let idleMs = IDLE_MS;
let idleTimer: NodeJS.Timeout | undefined;

/**
 * How long idle threads stay up (default 30 s). For tests, which cannot wait 30 s, and for a
 * long-running process that would rather free the threads sooner or keep them longer.
 * @throws QisError ERR_INVALID_ARGUMENT unless a positive finite number of ms
 */
export function setQueryThreadsIdleMs(ms: number): void {
  if (!Number.isFinite(ms) || ms <= 0) throw new QisError('ERR_INVALID_ARGUMENT', `idle ms must be a positive number, not ${ms}`);
  idleMs = ms;
}

/** Query verify threads up now (0 when stopped as idle or never started). */
export function queryThreadsRunning(): number {
  return threads?.length ?? 0;
}

/**
 * What the query verify threads up now hold (empty lists when none is up): batches each has
 * answered since it started and has out now, and the batches waiting on the main thread for one.
 */
export function queryThreadsLoad(): { answered: number[]; inFlight: number[]; waiting: number } {
  return { answered: threads?.map((t) => t.answered) ?? [], inFlight: threads?.map((t) => t.pending.length) ?? [], waiting: waiting.reduce((a, q) => a + q.length, 0) };
}

function start(): Thread {
  const t: Thread = { worker: startVerifyWorker(), online: false, pending: [], answered: 0 };
  t.worker.once('online', () => (t.online = true));
  t.worker.on('message', (r: CheckResult[]) => {
    t.answered++;
    t.pending.shift()?.resolve(r);
    pump();
    if (t.pending.length === 0) t.worker.unref();
    armIdle();
  });
  const fail = (e?: Error): void => {
    const i = threads ? threads.indexOf(t) : -1;
    if (i < 0) return; // stopped as idle
    (threads as Thread[])[i] = start();
    const err = new QisError('ERR_INTERNAL', `a verify worker thread stopped: ${e?.message ?? 'it exited'}`);
    for (const p of t.pending.splice(0)) p.reject(err);
    pump(); // what waited for it goes to its successor
    armIdle(); // it may have held the last batches out
  };
  t.worker.on('error', fail);
  t.worker.on('exit', () => fail());
  // Held (ref) only while it has batches out, so a process waiting for them stays up and a finished
  // one exits. After the listeners: adding a 'message' listener refs the worker's port again.
  t.worker.unref();
  return t;
}

/**
 * (Re)starts the idle countdown when no thread has a batch out: after the last answer, and at every
 * use of the threads, so a read that ends before it sends a batch (reset, or abandoned on an
 * error) does not leave them up for ever in a long-running process.
 */
function armIdle(): void {
  if (!threads || !idle(threads)) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(stopIdle, idleMs);
  idleTimer.unref();
}

function stopIdle(): void {
  const ts = threads;
  if (!ts || !idle(ts)) return;
  threads = undefined;
  for (const t of ts) void t.worker.terminate();
}

/** Starts the threads if they are not; true once one of them is online. */
function threadsReady(): boolean {
  clearTimeout(idleTimer);
  threads ??= Array.from({ length: Math.max(1, availableParallelism()) }, start);
  armIdle(); // stopIdle() leaves threads with batches out alone; their last answer arms it again
  return threads.some((t) => t.online);
}

/** No batch out in `ts` and none waiting for one (pump() sends a waiting batch as soon as a thread has room, so the second is a guard). */
function idle(ts: readonly Thread[]): boolean {
  return ts.every((t) => t.pending.length === 0) && waiting.every((q) => q.length === 0);
}

/** Threads up, one of them online, and idle: a read's first packets would find them so. */
function threadsFree(): boolean {
  return threads !== undefined && threads.some((t) => t.online) && idle(threads);
}

/** Starts the threads and resolves once one is online. */
export async function threadsOnline(): Promise<void> {
  while (!threadsReady()) await new Promise((r) => setTimeout(r, 10));
}

/** Threads (and batches) a read spreads its packets over. */
function shards(): number {
  threadsReady();
  return (threads as Thread[]).length;
}

/**
 * A packet's shard, by the node id that ends its topic: a node's packets go to the same thread
 * (but for what another thread takes over at the end, {@link pump}), whose key cache
 * (src/protocol/identity.ts) then holds mostly its share of the cohort and finds it warm when the
 * cohort is read again. Hostile topics only choose a shard.
 */
export function shardOf(topic: string, n: number): number {
  return (topic.charCodeAt(topic.length - 2) || 0) % n;
}

/**
 * Batches a thread holds at once: one being checked and one ready behind it, so it never waits
 * for the main thread between two. The rest wait in {@link waiting}. With every batch posted at
 * once (as before), each thread had its shard's half: the one sharing its core with the main thread
 * finished 7–71 ms after the other in a 10k query (scratch timeline, 8 queries on Mosquitto).
 */
const IN_FLIGHT = 2;

interface Waiting {
  /** The read's round it belongs to (CohortStream): a reset or abandoned round takes its own out. */
  readonly round: object;
  readonly buf: ArrayBuffer;
  readonly count: number;
  readonly o: CheckBatch['check'];
  readonly p: Pending;
}
/** Sealed batches not yet sent, per shard (the thread of that index takes its own first), oldest first. */
const waiting: Waiting[][] = [];

function send(t: Thread, w: Waiting): void {
  if (t.pending.length === 0) t.worker.ref();
  t.pending.push(w.p);
  t.worker.postMessage({ buf: w.buf, count: w.count, check: w.o }, [w.buf]);
}

/**
 * Fills every thread up to IN_FLIGHT: its own shard's oldest batch, else the oldest of the longest
 * other queue (that thread is behind). A node's packets then meet a thread whose key cache lacks
 * them only in what is taken over, which is what the cache's size (16,384 keys) absorbs.
 */
function pump(): void {
  const all = threads;
  if (!all) return;
  all.forEach((t, i) => {
    while (t.pending.length < IN_FLIGHT) {
      let q = waiting[i];
      if (!q?.length) q = waiting.reduce<Waiting[] | undefined>((a, b) => (b.length > (a?.length ?? 0) ? b : a), undefined);
      const w = q?.shift();
      if (!w) return;
      send(t, w);
    }
  });
}

function check(batch: PackedBatch, shard: number, o: CheckBatch['check'], round: object): Promise<CheckResult[]> {
  threadsReady(); // started again if they were stopped as idle while this batch filled
  const n = (threads as Thread[]).length;
  return new Promise((resolve, reject) => {
    const { buf, count } = batch.seal();
    (waiting[shard % n] ??= []).push({ round, buf, count, o, p: { resolve, reject } });
    pump();
  });
}

/**
 * Stops query thread `i` as if it had died (for tests of a thread lost mid-read): its batches out
 * fail with ERR_INTERNAL and a new thread takes its place. Resolves once it has exited.
 */
export async function stopQueryThread(i: number): Promise<void> {
  const t = threads?.[i];
  if (!t) throw new QisError('ERR_INVALID_ARGUMENT', `no query thread ${i} is up`);
  await t.worker.terminate();
}

/** Takes a round's batches out of the queues unchecked (each answers no results): nobody reads them. */
function drop(round: object): void {
  for (let i = 0; i < waiting.length; i++) {
    const q = waiting[i];
    if (!q?.some((w) => w.round === round)) continue;
    waiting[i] = q.filter((w) => {
      if (w.round !== round) return true;
      w.p.resolve([]);
      return false;
    });
  }
  armIdle();
}

/**
 * Folds a cohort as its messages arrive: add() each message the read keeps (in order), reset()
 * when the read starts again on a new connection, finish() once the read ended.
 */
export class CohortStream {
  readonly #o: FoldOptions;
  readonly #accept: (topic: string) => boolean;
  readonly #job: { readonly now: number; readonly maxSkewMs: number; readonly depth?: number };
  #folder: CohortFolder;
  #count = 0;
  /** This round of the read (a reset starts another): its batches in the queues carry it. */
  #round: object = {};
  /** Messages of this read checked here: INLINE_FIRST, or none when the threads were up at its first. */
  #inline = INLINE_FIRST;
  /** The batch being packed for each shard. */
  #open: (PackedBatch | undefined)[] = [];
  /** The batches out, in order: each folds once it and every batch before it are back. */
  #chain: Promise<void> = Promise.resolve();
  #gen = 0;
  #failed: Error | undefined;

  /** `accept`: the topics of the cohort (a read may also carry other messages, e.g. revocation lists). */
  constructor(o: FoldOptions, accept: (topic: string) => boolean = () => true) {
    this.#o = o;
    this.#accept = accept;
    this.#folder = new CohortFolder(o);
    const opts = this.#folder.verifyOptions;
    // maxSkewMs NaN: a query checks no skew (PROTOCOL §7). The same for every batch of the read.
    this.#job = { now: opts.now ?? Date.now(), maxSkewMs: Number.NaN, ...(opts.depth !== undefined ? { depth: opts.depth } : {}) };
  }

  add(topic: string, payload: Uint8Array): void {
    if (!this.#accept(topic)) return;
    // A small cohort is checked here: it never waits for a thread to start, nor behind another
    // read's batches. Every batch goes after all of these, so the fold keeps the arrival order.
    // With the threads up and free (an earlier query), none is: they would wait idle while the
    // main thread checked them (10–25 ms of a 10k read, scratch timeline).
    if (this.#count === 0) this.#inline = threadsFree() ? 0 : INLINE_FIRST;
    if (this.#count++ < this.#inline) return this.#folder.add(topic, payload);
    // The first batch of this read starts the threads if they are not up.
    if (this.#open.length === 0) this.#open = new Array<PackedBatch | undefined>(shards()).fill(undefined);
    const shard = shardOf(topic, this.#open.length);
    let open = this.#open[shard];
    if (!open || !open.add(topic, payload, this.#job)) {
      if (open) this.#send(shard);
      open = new PackedBatch(Math.max(BATCH_BYTES, PackedBatch.size(topic, payload)));
      open.add(topic, payload, this.#job);
      this.#open[shard] = open;
    }
    if (open.count >= BATCH) this.#send(shard);
  }

  #send(shard: number): void {
    const batch = this.#open[shard];
    this.#open[shard] = undefined;
    if (!batch) return;
    const gen = this.#gen;
    const opts = this.#folder.verifyOptions;
    // Batches fold in the order they are sent: a node's packets keep their arrival order, as they
    // all go through its shard's batches; packets of different nodes fold the same in any order.
    // Its failure is taken at once, not when the chain reaches it: a batch that fails (its thread
    // stopped) while an earlier one is still out would otherwise be an unhandled rejection.
    const answer = check(batch, shard, { ...(opts.expectFp ? { expectFp: opts.expectFp } : {}), ...(opts.backend ? { backend: opts.backend } : {}) }, this.#round).then(
      (rs) => ({ rs }),
      (e: unknown) => ({ e: e as Error }),
    );
    // Folded in order as the batches come back, during the read.
    this.#chain = this.#chain.then(() =>
      answer.then((a) => {
        if (gen !== this.#gen) return;
        if ('e' in a) this.#failed = a.e;
        else for (const r of a.rs) this.#folder.addChecked(r);
      }),
    );
  }

  /** Messages of this read checked on the main thread so far. */
  get inlined(): number {
    return Math.min(this.#count, this.#inline);
  }

  /**
   * The read starts again (a new connection), or is abandoned: what came so far is forgotten, and
   * its batches still waiting for a thread are taken out.
   */
  reset(): void {
    drop(this.#round);
    this.#round = {};
    this.#gen++;
    this.#folder = new CohortFolder(this.#o);
    this.#count = 0;
    this.#open = [];
    this.#chain = Promise.resolve();
    this.#failed = undefined;
  }

  /** The fold, once every batch is back. */
  async finish(): Promise<CohortFold> {
    for (let i = 0; i < this.#open.length; i++) this.#send(i);
    await this.#chain;
    if (this.#failed) throw this.#failed;
    return this.#folder.finish();
  }
}
