/**
 * Catch-up (docs/protocol-choices.md, "Federation catch-up"): on every (re)connection, and after
 * packets were dropped, a link exchanges with its peer only what differs. With a qis peer: root
 * digest, then range digests, then the entries of differing ranges, then the newer packets each
 * way (outcome store, then score store). With any other peer (Mosquitto): the full retained
 * exchange, ended by a sync-marker round trip.
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { QisError } from '../../src/index.js';
import { scoreTopicOfStored } from '../admission.js';
import type { Store, StoreKey } from '../store.js';
import { passes, type CatchUpReport } from './common.js';
import { RANGES, differingRanges, digestReady, rootOf, storeRanges, type Scope } from './digest.js';
import type { Inbox } from './inbox.js';
import { marker } from './mqtt.js';
import { BATCH, type Outbox } from './outbox.js';
import type { StoreKind } from './serve.js';
import type { LinkState } from './state.js';

const KEYS_PER_GET = 500;
const RANGES_PER_LIST = 64;
/**
 * Rounds of one kind (entries lists, gets, puts) a catch-up keeps in flight at once: the next
 * request is on the wire while the peer answers (or admits) the one before, instead of a round
 * trip each. Memory: at most this many answers (KEYS_PER_GET packets) or batches (BATCH) at once.
 * The peer serves a link's requests under its rate (LINK_REQUEST_BURST 500) and queues 64 batches.
 */
const PIPELINE = 4;
/** Catch-ups a link's status keeps. */
const HISTORY = 8;

type Counts = Omit<CatchUpReport, 'bytes' | 'ms'>;

function* chunks<T>(xs: Iterable<T>, n: number): Generator<T[]> {
  let out: T[] = [];
  for (const x of xs) {
    out.push(x);
    if (out.length === n) {
      yield out;
      out = [];
    }
  }
  if (out.length > 0) yield out;
}

/**
 * Runs `fn` over `items` with at most `depth` running at once, taking the next item only when a
 * run ended (so a lazy `items` holds at most `depth` in memory). The first failure stops it.
 */
async function pipelined<T>(items: Iterable<T>, depth: number, fn: (x: T) => Promise<void>, stop: { failed: boolean } = { failed: false }): Promise<void> {
  const it = items[Symbol.iterator]();
  // `stop` may be shared by pipelines of one catch-up: when one fails, the others stop too.
  const worker = async (): Promise<void> => {
    for (let n = it.next(); !stop.failed && !n.done; n = it.next()) {
      try {
        await fn(n.value);
      } catch (e) {
        stop.failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
}

export class CatchUp {
  #count = 0;
  #last: CatchUpReport | undefined;
  readonly #history: CatchUpReport[] = [];
  #running: Promise<void> | undefined;
  #again = false;
  #later: NodeJS.Timeout | undefined;

  constructor(
    private readonly s: LinkState,
    private readonly outbox: Outbox,
    private readonly inbox: Inbox,
    private readonly followUpMs: number,
  ) {}

  status(): { catchUps: number; lastCatchUp?: CatchUpReport; history: CatchUpReport[] } {
    return { catchUps: this.#count, ...(this.#last ? { lastCatchUp: this.#last } : {}), history: [...this.#history] };
  }

  /** Runs a catch-up now (or once more after the running one). */
  now(): Promise<void> {
    if (!this.s.connected || !this.s.client) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#run()
      .catch((e: unknown) => this.s.log.warn({ err: (e as Error).message }, 'federation catch-up failed (retried at the next connection)'))
      .finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #run(): Promise<void> {
    do {
      this.#again = false;
      const c = this.s.client;
      if (!c || !this.s.connected) return;
      const t0 = performance.now();
      const meter = { bytes: 0 };
      const r = this.s.peerKind === 'qis' ? await this.#digestCatchUps(c, meter) : await this.#fullCatchUp(c, meter);
      this.#report({ ...r, bytes: meter.bytes, ms: Math.round(performance.now() - t0) });
    } while (this.#again);
  }

  #report(report: CatchUpReport): void {
    const { m, name } = this.s;
    this.#count++;
    this.#last = report;
    this.#history.push(report);
    if (this.#history.length > HISTORY) this.#history.shift();
    m.catchUps.inc({ peer: name, mode: report.mode });
    m.lastCatchUp.set({ peer: name }, this.s.host.now() / 1000);
    m.catchUpBytes.inc({ peer: name }, report.bytes);
    this.s.log.info(report, 'federation catch-up done');
    // What reaches the peer after this catch-up arrives live (the link subscribed first); an
    // optional follow-up (federation.followUpMs, default off) only costs ~120 bytes in sync.
    if ((report.sent > 0 || report.received > 0) && this.followUpMs > 0) this.soon(this.followUpMs);
  }

  /** After dropping received packets: a catch-up a little later fetches them again. */
  soon(delayMs = 5_000): void {
    if (this.#later) return;
    this.#later = setTimeout(() => {
      this.#later = undefined;
      void this.now();
    }, delayMs);
    this.#later.unref();
  }

  /** The link is closing: no later catch-up; resolves when the running one ended. */
  async close(): Promise<void> {
    if (this.#later) clearTimeout(this.#later);
    await this.#running;
  }

  /** Digests cover the templates either list names (both sides compute them over the same scope). */
  #scope(): Scope {
    const p = this.s.peer;
    return p.share.includes('*') || p.accept.includes('*') ? '*' : [...new Set([...p.share, ...p.accept])].sort();
  }

  /** Outcome packets, then score packets (each store its own digests; requests about scores say `store: 's'`). */
  async #digestCatchUps(c: MqttClient, meter: { bytes: number }): Promise<Counts> {
    const host = this.s.host;
    const o = await this.#digestCatchUp(c, host.store, 'o', meter);
    if (!host.scoreStore) return o;
    const sc = await this.#digestCatchUp(c, host.scoreStore, 's', meter);
    return { mode: 'digest', received: o.received + sc.received, sent: o.sent + sc.sent };
  }

  async #digestCatchUp(c: MqttClient, store: Store, kind: StoreKind, meter: { bytes: number }): Promise<Counts> {
    const ask = (body: Record<string, unknown>): Promise<Record<string, unknown>> => this.s.requests.request(c, { ...(kind === 's' ? { store: kind } : {}), ...body }, meter);
    const scope = this.#scope();
    // The index is brought up to date in slices first (digest.ts): never the loop held for it.
    await digestReady(store);
    let mine = storeRanges(store, scope);
    const root = await ask({ op: 'root', scope });
    if (root.root === rootOf(mine.ranges, mine.n)) return { mode: 'digest', received: 0, sent: 0 };
    const theirs = Buffer.from(String((await ask({ op: 'ranges', scope })).ranges), 'base64');
    await digestReady(store);
    mine = storeRanges(store, scope);
    if (theirs.length !== RANGES * 8) throw new QisError('ERR_PAYLOAD_INVALID', 'peer sent a digest of the wrong size');
    const diff = differingRanges(mine.ranges, theirs);
    const remote = new Map<string, [number, boolean]>();
    await pipelined(chunks(diff, RANGES_PER_LIST), PIPELINE, async (ranges) => {
      const res = await ask({ op: 'entries', scope, ranges });
      for (const e of (res.entries as [string, string, number, number][]) ?? []) remote.set(`${e[0]}/${e[1]}`, [e[2], e[3] === 1]);
    });
    // What they have newer (and we accept): fetch. What we have newer (and share): send.
    const { share, accept } = this.s.peer;
    const want: [string, string][] = [];
    for (const [key, [seq]] of remote) {
      const [tplId = '', nodeId = ''] = key.split('/');
      if (!passes(accept, tplId)) continue;
      if ((store.seqOf(tplId, nodeId) ?? -1) < seq) want.push([tplId, nodeId]);
    }
    // Packets are read from the store a batch at a time, as a slot frees (PIPELINE batches in memory).
    function* push(): Generator<[string, Uint8Array]> {
      for (const r of diff) {
        for (const k of mine.keysIn(r)) {
          if (!passes(share, k.tplId)) continue;
          const theirSeq = remote.get(`${k.tplId}/${k.nodeId}`)?.[0] ?? -1;
          if (theirSeq >= k.seq) continue;
          const bytes = packetOf(k, store, kind);
          if (bytes) yield bytes;
        }
      }
    }
    // One flag for both pipelines: a failed get stops the puts too (the catch-up is over; the next one starts afresh).
    const stop = { failed: false };
    let sent = 0;
    const sending = pipelined(
      chunks(push(), BATCH),
      PIPELINE,
      async (items) => {
        if (this.s.client !== c) throw new Error('link closed during catch-up');
        const n = await this.outbox.put(c, items, meter); // not `sent += await …`: that reads `sent` before the wait
        sent += n;
      },
      stop,
    );
    let received = 0;
    const fetching = pipelined(chunks(want, KEYS_PER_GET), PIPELINE, async (keys) => {
      const res = await ask({ op: 'get', keys });
      const items = (res.items as [string, string][]) ?? [];
      await Promise.all(
        items.map(async ([topic, b64]) => {
          const r = await this.inbox.admitOne(topic, Buffer.from(b64, 'base64'));
          if (r === 'stored') received++;
        }),
      );
    }, stop);
    await Promise.all([sending, fetching]);
    return { mode: 'digest', received, sent };
  }

  /** A peer without digests (Mosquitto): our retained packets go there, theirs arrive by subscription. */
  async #fullCatchUp(c: MqttClient, meter: { bytes: number }): Promise<Counts> {
    const host = this.s.host;
    let sent = 0;
    const stores: [Store, StoreKind][] = [[host.store, 'o'], ...(host.scoreStore ? [[host.scoreStore, 's'] as [Store, StoreKind]] : [])];
    for (const [store, kind] of stores) {
      for (const k of store.keys?.() ?? []) {
        if (!passes(this.s.peer.share, k.tplId)) continue;
        const bytes = packetOf(k, store, kind);
        if (!bytes) continue;
        meter.bytes += bytes[1].length;
        this.outbox.send(bytes[0], bytes[1]);
        sent++;
      }
    }
    // Their retained packets were delivered at our SUBSCRIBE (the inbox admits them); round-trip
    // a marker so they have been received before this catch-up reports.
    await marker(c, `qis/1/sync/${this.s.clientId}/${randomBytes(4).toString('hex')}`);
    await this.outbox.drained();
    while (!this.inbox.idle()) await new Promise((r) => setTimeout(r, 20));
    return { mode: 'full', received: 0, sent };
  }
}

/** The topic and signed bytes of a store key: its packet, or (outcome store) its tombstone. */
function packetOf(k: StoreKey, store: Store, kind: StoreKind): [string, Uint8Array] | undefined {
  if (!k.del) {
    const p = store.get(k.tplId, k.nodeId);
    return p ? [kind === 's' ? scoreTopicOfStored(p.topic) : p.topic, p.packet] : undefined;
  }
  if (kind === 's') return undefined; // scores are never deleted (§9)
  const t = store.tombstone(k.tplId, k.nodeId);
  return t?.topic && t.packet ? [t.topic, t.packet] : undefined;
}
