/**
 * The log store's memory: the index (template, node) → entry, the trie of live packets, packet
 * bytes in slabs, the counters, and the seq floors (tombstones). Every change goes through
 * installPut / installTomb; the log (log.ts), the replay (replay.ts) and the compaction
 * (compaction.ts) change it only that way.
 */
import { ID_CHARS, expired, packetOf } from './common.js';
import { HEADER_BYTES, MIN_TOPIC } from './format.js';
import { KeyIndex, type TplIndex } from './keys.js';
import { Trie, type Bucket } from './trie.js';
import type { KeyState, KeyWatcher, StoreKey, StoredPacket, Tombstone } from './types.js';

const SLAB_BYTES = 256 * 1024;

/** One (template, node): its live packet, or its tombstone. */
export class Entry {
  seq = 0;
  /** Live: exp in Unix s, -1 when none. */
  exp = -1;
  /** Tombstone: Unix ms of the deletion. -1 while live (and in a new entry). */
  at = -1;
  /** Live: the trie node of its bucket. null: a tombstone. */
  bucket: Bucket<Entry> | null = null;
  /** Live: the slab holding its packet (null during the replay, until loadPackets). */
  slab: Buffer | null = null;
  /** Live: offset of its packet in `slab` (during the replay: in the log file). */
  off = 0;
  len = 0;
  /** Bytes of its record in a compacted log. */
  rec = 0;
  /** Live: its index in bucket.leaves. */
  slot = 0;
  /** Tombstone with its proof: the tombstone's topic (its bytes are at slab/off/len). null: no proof. */
  ttopic: string | null = null;
  /** A tombstone of a key that never held a packet here (a cold floor: bounded, forgotten past the TTL). */
  cold = false;
  constructor(
    readonly tpl: string,
    readonly node: string,
  ) {}
}

/**
 * Packet bytes packed into 256 KiB slabs: one ArrayBuffer per packet would cost ~300 bytes of
 * bookkeeping each and slow the GC. Slabs are append-only, so views handed out stay valid;
 * compaction copies the live packets into a fresh arena and the old slabs are collected.
 */
export class Arena {
  readonly slabs = new Set<Buffer>();
  slab: Buffer = Buffer.alloc(0);
  private used = 0;
  bytes = 0;
  /** Reserves len bytes in `this.slab` and returns their offset. */
  alloc(len: number): number {
    if (this.used + len > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slabs.add(this.slab);
      this.used = 0;
    }
    const off = this.used;
    this.used += len;
    this.bytes += len;
    return off;
  }

  /** Copies e's bytes (slab/off/len) into this arena unless they are in it already. */
  adopt(e: Entry): void {
    const slab = e.slab as Buffer;
    if (this.slabs.has(slab)) return;
    const off = this.alloc(e.len);
    slab.copy(this.slab, off, e.off, e.off + e.len);
    e.slab = this.slab;
    e.off = off;
  }
}

export class LogState {
  readonly index = new KeyIndex<Entry>();
  readonly trie = new Trie<Entry>(
    (e) => this.view(e),
    (tpl, node) => this.index.get(tpl, node),
  );
  readonly expiring = new Set<Entry>();
  arena = new Arena();
  liveCount = 0;
  tombCount = 0;
  /** Cold floors: tombstones of keys that never held a packet here (Entry.cold). */
  coldCount = 0;
  /** Size the log would have right after a compaction. */
  liveBytes = HEADER_BYTES;
  /** Watchers of key changes (watchKeys): federation digests. */
  readonly #watchers = new Set<KeyWatcher>();

  constructor(
    private readonly now: () => number,
    private readonly tombstoneTtlMs: number,
  ) {}

  // ---------------------------------------------------------------- reads

  get size(): number {
    return this.liveCount;
  }

  seqOf(tplId: string, nodeId: string): number | undefined {
    // A deletion's seq is a floor kept for ever: a packet older than it never comes back.
    return this.index.get(tplId, nodeId)?.seq;
  }

  get(tplId: string, nodeId: string): StoredPacket | undefined {
    const e = this.index.get(tplId, nodeId);
    return e === undefined || e.bucket === null || expired(e, this.now()) ? undefined : this.view(e);
  }

  getByTopic(topic: string): StoredPacket | undefined {
    if (typeof topic !== 'string' || topic.length < MIN_TOPIC) return undefined;
    const cut = topic.length - ID_CHARS - 1;
    // tplId and nodeId sit at fixed places in an outcome topic; the bucket comparison below
    // rejects any other string.
    const e = this.index.get(topic.slice(8, 8 + ID_CHARS), topic.slice(cut + 1));
    if (e === undefined || e.bucket === null || topic.charCodeAt(cut) !== 47 || e.bucket.path !== topic.slice(0, cut)) return undefined;
    return expired(e, this.now()) ? undefined : this.view(e);
  }

  tombstone(tplId: string, nodeId: string): Tombstone | undefined {
    const e = this.index.get(tplId, nodeId);
    if (e === undefined || e.bucket !== null) return undefined;
    const t = { tplId: e.tpl, nodeId: e.node, seq: e.seq, at: e.at };
    if (e.ttopic === null || e.slab === null || this.forgotten(e, this.now())) return t;
    return { ...t, topic: e.ttopic, packet: e.slab.subarray(e.off, e.off + e.len) };
  }

  keys(): StoreKey[] {
    return this.index.entries().map((e) => ({ tplId: e.tpl, nodeId: e.node, seq: e.seq, del: e.bucket === null }));
  }

  watchKeys(fn: KeyWatcher): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  /** Tells the watchers that (e.tpl, e.node) went from `before` to what e holds now (or was forgotten). */
  protected changed(e: Entry, before: KeyState | undefined, forgotten = false): void {
    if (this.#watchers.size === 0) return;
    const after = forgotten ? undefined : { seq: e.seq, del: e.bucket === null };
    for (const w of this.#watchers) w(e.tpl, e.node, before, after);
  }

  match(filter: string): Iterable<StoredPacket> {
    return this.trie.match(filter, this.now());
  }

  /** A tombstone past its TTL has no proof any more (compaction drops the bytes); its seq still blocks. */
  forgotten(e: Entry, nowMs: number): boolean {
    return e.at + this.tombstoneTtlMs <= nowMs;
  }

  /** Whether an operation with `seq` must be refused as stale. */
  blocks(e: Entry, seq: number): boolean {
    return seq <= e.seq;
  }

  view(e: Entry): StoredPacket {
    const slab = e.slab as Buffer;
    return packetOf(e.tpl, e.node, `${(e.bucket as Bucket<Entry>).path}/${e.node}`, e.seq, slab.subarray(e.off, e.off + e.len), e.exp);
  }

  // ---------------------------------------------------------------- changes

  /**
   * Makes (ti, node) live in `bucket` with a packet of `len` bytes, which the caller then places
   * (keepBytes, or a file offset during replay). `found` is ti.nodes.get(node), already looked up
   * by the caller, which has also checked seq; `node` is only used when it is undefined.
   */
  installPut(ti: TplIndex<Entry>, found: Entry | undefined, node: string, bucket: Bucket<Entry>, seq: number, exp: number, len: number, rec: number): Entry {
    const before = this.#watchers.size > 0 ? stateOf(found) : undefined;
    const e = this.release(ti, found, node, bucket);
    if (e.cold) this.coldCount--;
    e.cold = false; // it holds a packet: its floor is exact and kept for ever from now on
    if (e.bucket === null) this.trie.attach(e, bucket);
    e.slab = null; // the caller places the bytes
    e.ttopic = null;
    e.len = len;
    e.seq = seq;
    e.exp = exp;
    e.at = -1;
    e.rec = rec;
    this.liveBytes += rec;
    this.liveCount++;
    if (exp >= 0) this.expiring.add(e);
    this.changed(e, before);
    return e;
  }

  /**
   * Turns (ti, node) into a tombstone. `found` and `node` as for installPut. `cold`: the deletion
   * is of a key that never held a packet; it stays cold only if the key was unknown or cold.
   */
  installTomb(ti: TplIndex<Entry>, found: Entry | undefined, node: string, seq: number, at: number, rec: number, cold = false): Entry {
    const before = this.#watchers.size > 0 ? stateOf(found) : undefined;
    const wasCold = found?.cold === true;
    const e = this.release(ti, found, node, null);
    e.cold = cold && (found === undefined || wasCold);
    this.coldCount += (e.cold ? 1 : 0) - (wasCold ? 1 : 0);
    e.seq = seq;
    e.at = at;
    e.exp = -1;
    e.rec = rec;
    e.slab = null;
    e.ttopic = null; // the caller adds a proof
    this.liveBytes += rec;
    this.tombCount++;
    this.changed(e, before);
    return e;
  }

  /**
   * The entry of (ti, node) (`found`, or a new one added to ti), taken out of the counters, and
   * out of its bucket unless that is `stay`: the first half of installPut and installTomb.
   */
  private release(ti: TplIndex<Entry>, found: Entry | undefined, node: string, stay: Bucket<Entry> | null): Entry {
    if (found === undefined) {
      const e = new Entry(ti.tpl, node);
      ti.nodes.add(e);
      return e;
    }
    if (found.bucket !== null) {
      this.liveBytes -= found.rec;
      this.liveCount--;
      if (found.exp >= 0) this.expiring.delete(found);
      if (found.bucket !== stay) this.trie.detach(found);
    } else if (found.at >= 0) {
      this.liveBytes -= found.rec;
      this.tombCount--;
    }
    return found;
  }

  /**
   * Forgets a cold floor past the tombstone TTL (compaction): the key never held a packet here,
   * so PROTOCOL §6 loses nothing a node ever stored; a replay of it is a new cold tombstone.
   */
  forgetCold(e: Entry): void {
    const before = this.#watchers.size > 0 ? stateOf(e) : undefined;
    this.index.delete(e);
    this.liveBytes -= e.rec;
    this.tombCount--;
    this.coldCount--;
    e.cold = false;
    if (before !== undefined) this.changed(e, before, true);
  }

  /** Copies a live entry's packet into the arena. */
  keepBytes(e: Entry, packet: Uint8Array): void {
    const off = this.arena.alloc(packet.length);
    this.arena.slab.set(packet, off);
    e.slab = this.arena.slab;
    e.off = off;
  }
}

/** What a key was before a change (undefined: the store did not know it). */
function stateOf(e: Entry | undefined): KeyState | undefined {
  return e === undefined ? undefined : { seq: e.seq, del: e.bucket === null };
}
