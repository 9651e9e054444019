/**
 * Digests of a store for catch-up (docs/protocol-choices.md, "Federation catch-up"): per-range
 * XOR of entry hashes, so two brokers compare 256 × 8 bytes and list only the ranges that differ.
 */
import crypto, { createHash } from 'node:crypto';
import { MAX_PACKET_BYTES, decodeCbor, decodeSign1, parseOutcomeTopic, parseScoreTopic } from '../../src/index.js';
import type { KeyState, Store, StoreKey } from '../store.js';

/** Digest ranges: a key's range is the first byte of SHA-256(tplId/nodeId). */
export const RANGES = 256;

export type Scope = '*' | readonly string[];
const inScope = (scope: Scope, tplId: string): boolean => scope === '*' || scope.includes(tplId);

/**
 * SHA-256 of a short string: crypto.hash (Node 20.12 and later) is one call with no Hash object,
 * 0.7 µs here against 1.6 µs for createHash().update().digest() (a scratch loop of 200,000), and
 * an index of 1M keys hashes 2M of them.
 */
const sha256: (s: string) => Buffer = typeof crypto.hash === 'function' ? (s) => crypto.hash('sha256', s, 'buffer') : (s) => createHash('sha256').update(s).digest();

function rangeOf(tplId: string, nodeId: string): number {
  return sha256(`${tplId}/${nodeId}`)[0] as number;
}

/** 8 bytes of SHA-256 over one entry: two 32-bit words, XORed into its range (order-free). */
function entryHash(k: StoreKey): [number, number] {
  const d = sha256(`${k.tplId}/${k.nodeId}/${k.seq}/${k.del ? 1 : 0}`);
  return [d.readUInt32LE(0), d.readUInt32LE(4)];
}

/** Per-range digests of a store's keys within `scope`: RANGES × 8 bytes, plus each key's range. */
export function digest(keys: readonly StoreKey[], scope: Scope): { ranges: Buffer; byRange: Map<number, StoreKey[]>; n: number } {
  const words = new Uint32Array(RANGES * 2);
  const byRange = new Map<number, StoreKey[]>();
  let n = 0;
  for (const k of keys) {
    if (!inScope(scope, k.tplId)) continue;
    n++;
    const r = rangeOf(k.tplId, k.nodeId);
    const [a, b] = entryHash(k);
    words[2 * r] = (words[2 * r] as number) ^ a;
    words[2 * r + 1] = (words[2 * r + 1] as number) ^ b;
    let list = byRange.get(r);
    if (!list) byRange.set(r, (list = []));
    list.push(k);
  }
  return { ranges: Buffer.from(words.buffer), byRange, n };
}

/** A key's change as the index notes it, to be hashed: its latest state (null: gone). */
interface Noted {
  readonly tplId: string;
  readonly nodeId: string;
  readonly after: KeyState | null;
}

/** One key as the index holds it: its range (hashed once, when first seen), its state and that state's 8-byte entry hash. */
interface Entry {
  readonly tplId: string;
  readonly nodeId: string;
  readonly r: number;
  seq: number;
  del: boolean;
  a: number;
  b: number;
}

/**
 * A store's range digests kept up to date as it changes (Store.watchKeys), so a peer's `root`
 * or `ranges` request costs O(ranges × templates asked about), not a hash of every key: one
 * request on a store of 100k packets used to block the event loop 0.55 s. Per template: its range
 * words and count (a scope is the XOR of its templates'); per range: its keys (for `entries`).
 *
 * Changes are batched: `apply` only notes a key's latest state; the hashing happens when a digest
 * or a range's keys are asked for, once per changed key however often it changed meanwhile (a
 * live broker updates the same nodes many times between two catch-ups). Each key keeps its range
 * and its entry hash, so a change costs one SHA-256, not three (range, old entry, new entry).
 */
export class DigestIndex {
  readonly #all = { words: new Uint32Array(RANGES * 2), n: 0 };
  readonly #byTpl = new Map<string, { words: Uint32Array; n: number }>();
  readonly #byRange: Map<string, Entry>[] = Array.from({ length: RANGES }, () => new Map<string, Entry>());
  /** Keys whose state changed since the last round of flushSome took the noted ones: their latest state (null: gone). At most one per key of the store. */
  #dirty = new Map<string, Noted>();
  /** Every key's entry, by `tplId/nodeId`. */
  readonly #entries = new Map<string, Entry>();

  /**
   * Starts from a snapshot of the store's keys without noting them yet: seedSome notes them (or
   * the first digest, all at once), each unless the store reported a change of it since (newer,
   * already noted by apply).
   */
  constructor(keys: readonly StoreKey[]) {
    if (keys.length > 0) this.#seeding = { keys, at: 0, since: new Set() };
  }

  /** A key changed (`before` is not needed: the index holds what it applied). */
  apply(tplId: string, nodeId: string, before: KeyState | undefined, after: KeyState | undefined): void {
    if (before === undefined && after === undefined) return;
    this.#seeding?.since.add(`${tplId}/${nodeId}`);
    this.#dirty.set(`${tplId}/${nodeId}`, { tplId, nodeId, after: after === undefined ? null : { seq: after.seq, del: after.del } });
  }

  /** A snapshot of the store's keys still to note (digestReady seeds them in slices), and the keys changed since it was taken. */
  #seeding: { keys: readonly StoreKey[]; at: number; since: Set<string> } | undefined;

  /** A round of flushSome: the noted changes it took, and how many of them are not yet hashed. */
  #work: { it: Iterator<[string, Noted]>; left: number } | undefined;

  /** Keys still to note or hash. */
  get pending(): number {
    return this.#dirty.size + (this.#work?.left ?? 0) + (this.#seeding ? this.#seeding.keys.length - this.#seeding.at : 0);
  }

  /** Notes up to `max` keys of the snapshot; returns how many are left. */
  seedSome(max: number): number {
    const sd = this.#seeding;
    if (!sd) return 0;
    const end = Math.min(sd.keys.length, sd.at + max);
    for (; sd.at < end; sd.at++) {
      const k = sd.keys[sd.at] as StoreKey;
      const key = `${k.tplId}/${k.nodeId}`;
      if (!sd.since.has(key)) this.#dirty.set(key, { tplId: k.tplId, nodeId: k.nodeId, after: { seq: k.seq, del: k.del } });
    }
    const left = sd.keys.length - sd.at;
    if (left === 0) this.#seeding = undefined;
    return left;
  }

  #flush(): void {
    this.seedSome(Number.POSITIVE_INFINITY);
    this.flushSome(Number.POSITIVE_INFINITY);
  }

  /**
   * Hashes up to `max` of the noted changes, oldest first; returns how many are left. A round
   * takes the noted changes as they are (changes noted meanwhile wait for the next round, after
   * them) and walks them with one iterator across calls: deleting entries as they are hashed left
   * a 1M-entry map full of holes that every call's new iterator walked over again.
   */
  flushSome(max: number): number {
    let done = 0;
    while (done < max) {
      let w = this.#work;
      if (w === undefined) {
        if (this.#dirty.size === 0) break;
        w = this.#work = { it: this.#dirty.entries(), left: this.#dirty.size };
        this.#dirty = new Map();
      }
      const next = w.it.next();
      if (next.done) {
        this.#work = undefined;
        continue;
      }
      w.left--;
      done++;
      this.#hashOne(next.value[0], next.value[1]);
    }
    return (this.#work?.left ?? 0) + this.#dirty.size;
  }

  /** One noted change into the digests and the key's entry. */
  #hashOne(key: string, { tplId, nodeId, after }: Noted): void {
    const old = this.#entries.get(key);
    if (old && after && old.seq === after.seq && old.del === after.del) return;
    let t = this.#byTpl.get(tplId);
    if (!t) this.#byTpl.set(tplId, (t = { words: new Uint32Array(RANGES * 2), n: 0 }));
    const r = old?.r ?? rangeOf(tplId, nodeId);
    if (old) this.#flip(t, r, old.a, old.b, -1);
    if (after) {
      const [a, b] = entryHash({ tplId, nodeId, seq: after.seq, del: after.del });
      this.#flip(t, r, a, b, 1);
      if (old) Object.assign(old, { seq: after.seq, del: after.del, a, b });
      else {
        const e: Entry = { tplId, nodeId, r, seq: after.seq, del: after.del, a, b };
        this.#entries.set(key, e);
        this.#byRange[r]!.set(key, e);
      }
    } else if (old) {
      this.#entries.delete(key);
      this.#byRange[r]!.delete(key);
    }
    if (t.n === 0) this.#byTpl.delete(tplId);
  }

  /** XORs an entry hash into range `r` of the whole store's digest and of its template's `t`; dn: the entry counted in (1) or out (-1). */
  #flip(t: { words: Uint32Array; n: number }, r: number, a: number, b: number, dn: number): void {
    for (const d of [this.#all, t]) {
      d.words[2 * r] = (d.words[2 * r] as number) ^ a;
      d.words[2 * r + 1] = (d.words[2 * r + 1] as number) ^ b;
      d.n += dn;
    }
  }

  /** The range digests and key count of `scope`. */
  digest(scope: Scope): { ranges: Buffer; n: number } {
    this.#flush();
    if (scope === '*') return { ranges: Buffer.from(this.#all.words.slice().buffer), n: this.#all.n };
    const words = new Uint32Array(RANGES * 2);
    let n = 0;
    for (const tpl of new Set(scope)) {
      const t = this.#byTpl.get(tpl);
      if (!t) continue;
      n += t.n;
      for (let i = 0; i < words.length; i++) words[i] = (words[i] as number) ^ (t.words[i] as number);
    }
    return { ranges: Buffer.from(words.buffer), n };
  }

  /** The keys of range `r` within `scope`. */
  keysIn(r: number, scope: Scope): StoreKey[] {
    this.#flush();
    const out: StoreKey[] = [];
    for (const k of this.#byRange[r]?.values() ?? []) if (inScope(scope, k.tplId)) out.push({ tplId: k.tplId, nodeId: k.nodeId, seq: k.seq, del: k.del });
    return out;
  }
}

const indexes = new WeakMap<Store, DigestIndex>();
/** Indexes being built or brought up to date in slices (digestReady), by store. */
const readying = new WeakMap<Store, Promise<void>>();

/**
 * Keys hashed (or seeded) per event-loop turn while digestReady works: ~5–10 ms of the loop.
 * Measured before it (a scratch script, this machine): the index of a 1M-key store, built and
 * hashed at once on the first catch-up request, held the event loop 8 s (1.6 s noting the keys,
 * 6.5 s hashing them); 100k keys, 0.65 s.
 */
export const DIGEST_SLICE = 2000;

/** `store`'s index, watching it from now on; a new one starts from a snapshot of its keys, noted and hashed later (in slices by digestReady, else at once when asked). */
function indexOf(store: Store): DigestIndex | undefined {
  if (!store.watchKeys || !store.keys) return undefined;
  let ix = indexes.get(store);
  if (!ix) {
    const built = new DigestIndex(store.keys());
    store.watchKeys((tpl, node, before, after) => built.apply(tpl, node, before, after));
    indexes.set(store, (ix = built));
  }
  return ix;
}

/**
 * Builds `store`'s digest index (on first use) and hashes what changed since the last request,
 * DIGEST_SLICE keys an event-loop turn, so a peer's catch-up request never holds the broker's
 * loop for long. Undefined when there is at most a slice to do (storeRanges does it at once) or
 * the store cannot be watched; otherwise a promise, shared by concurrent callers, that resolves
 * when the index is up to date (storeRanges is then cheap). Never rejects.
 */
export function digestReady(store: Store): Promise<void> | undefined {
  const busy = readying.get(store);
  if (busy) return busy;
  const ix = indexOf(store);
  if (!ix || ix.pending <= DIGEST_SLICE) return undefined;
  const work = (async () => {
    const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
    while (ix.seedSome(DIGEST_SLICE) > 0) await turn();
    while (ix.flushSome(DIGEST_SLICE) > 0) await turn();
  })().finally(() => readying.delete(store));
  readying.set(store, work);
  return work;
}

/**
 * `store`'s digests within `scope`: from its {@link DigestIndex} (built on the first call, then
 * kept up to date; what is not yet hashed is hashed now, at once: call digestReady first on a
 * broker's event loop) when the store can be watched, else computed afresh.
 */
export function storeRanges(store: Store, scope: Scope): { ranges: Buffer; n: number; keysIn(r: number): StoreKey[] } {
  const ix = indexOf(store);
  if (ix) {
    const d = ix.digest(scope);
    return { ...d, keysIn: (r) => ix.keysIn(r, scope) };
  }
  const d = digest(store.keys?.() ?? [], scope);
  return { ranges: d.ranges, n: d.n, keysIn: (r) => d.byRange.get(r) ?? [] };
}

export const rootOf = (ranges: Buffer, n: number): string => createHash('sha256').update(ranges).update(String(n)).digest('hex').slice(0, 32);

/** Ranges whose 8-byte digests differ. */
export function differingRanges(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let r = 0; r < RANGES; r++) if (a.compare(b, r * 8, r * 8 + 8, r * 8, r * 8 + 8) !== 0) out.push(r);
  return out;
}

/** A digest of a whole store (every key and seq, live or deleted): equal digests, equal stores. */
export function storeDigest(store: Store): string {
  const d = digest(store.keys?.() ?? [], '*');
  return rootOf(d.ranges, d.n);
}

/**
 * Whether a forwarded outcome or score packet's seq is not above the one held (decoded, not
 * verified): loops and echoes end here, before any signature work. Only the seq is read (no
 * node id hash, no check of the other fields: admission does those for a packet that is newer).
 * Malformed input is "not stale", so admission refuses it with its own code.
 */
export function notNewer(store: Store, scoreStore: Store | undefined, topic: string, payload: Uint8Array): boolean {
  try {
    const isScore = topic.startsWith('qis/1/s/');
    if (!isScore && !topic.startsWith('qis/1/o/')) return false;
    const { tplId, nodeId } = isScore ? parseScoreTopic(topic) : parseOutcomeTopic(topic);
    const held = (isScore ? scoreStore : store)?.seqOf(tplId, nodeId);
    if (held === undefined) return false;
    const seq = seqOf(payload);
    return seq !== undefined && seq <= held;
  } catch {
    return false;
  }
}

/** A packet's seq (payload label 3) as signed, or undefined when it is not an unsigned integer; throws on malformed CBOR or COSE. */
function seqOf(packet: Uint8Array): number | undefined {
  if (packet.length > MAX_PACKET_BYTES) return undefined;
  const payload = decodeCbor(decodeSign1(packet).payload, { markFloats: true });
  const seq = payload instanceof Map ? payload.get(3) : undefined;
  return typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0 ? seq : undefined;
}
