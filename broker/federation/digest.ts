/**
 * Digests of a store for catch-up (docs/protocol-choices.md, "Federation catch-up"): per-range
 * XOR of entry hashes, so two brokers compare 256 × 8 bytes and list only the ranges that differ.
 */
import { createHash } from 'node:crypto';
import { MAX_PACKET_BYTES, decodeCbor, decodeSign1, parseOutcomeTopic, parseScoreTopic } from '../../src/index.js';
import type { KeyState, Store, StoreKey } from '../store.js';

/** Digest ranges: a key's range is the first byte of SHA-256(tplId/nodeId). */
export const RANGES = 256;

export type Scope = '*' | readonly string[];
const inScope = (scope: Scope, tplId: string): boolean => scope === '*' || scope.includes(tplId);

function rangeOf(tplId: string, nodeId: string): number {
  return createHash('sha256').update(`${tplId}/${nodeId}`).digest()[0] as number;
}

/** 8 bytes of SHA-256 over one entry: two 32-bit words, XORed into its range (order-free). */
function entryHash(k: StoreKey): [number, number] {
  const d = createHash('sha256').update(`${k.tplId}/${k.nodeId}/${k.seq}/${k.del ? 1 : 0}`).digest();
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
  /** Keys whose state changed since the last flush: their latest state (null: gone). At most one per key of the store. */
  #dirty = new Map<string, { tplId: string; nodeId: string; after: KeyState | null }>();
  /** Every key's entry, by `tplId/nodeId`. */
  readonly #entries = new Map<string, Entry>();

  constructor(keys: readonly StoreKey[]) {
    for (const k of keys) this.apply(k.tplId, k.nodeId, undefined, k);
  }

  /** A key changed (`before` is not needed: the index holds what it applied). */
  apply(tplId: string, nodeId: string, before: KeyState | undefined, after: KeyState | undefined): void {
    if (before === undefined && after === undefined) return;
    this.#dirty.set(`${tplId}/${nodeId}`, { tplId, nodeId, after: after === undefined ? null : { seq: after.seq, del: after.del } });
  }

  #flush(): void {
    if (this.#dirty.size === 0) return;
    const dirty = this.#dirty;
    this.#dirty = new Map();
    for (const [key, { tplId, nodeId, after }] of dirty) {
      const old = this.#entries.get(key);
      if (old && after && old.seq === after.seq && old.del === after.del) continue;
      let t = this.#byTpl.get(tplId);
      if (!t) this.#byTpl.set(tplId, (t = { words: new Uint32Array(RANGES * 2), n: 0 }));
      const r = old?.r ?? rangeOf(tplId, nodeId);
      const flip = (a: number, b: number, dn: number): void => {
        for (const d of [this.#all, t]) {
          d.words[2 * r] = (d.words[2 * r] as number) ^ a;
          d.words[2 * r + 1] = (d.words[2 * r + 1] as number) ^ b;
          d.n += dn;
        }
      };
      if (old) flip(old.a, old.b, -1);
      if (after) {
        const [a, b] = entryHash({ tplId, nodeId, seq: after.seq, del: after.del });
        flip(a, b, 1);
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

/**
 * `store`'s digests within `scope`: from its {@link DigestIndex} (built on the first call, one
 * pass over the keys, then kept up to date) when the store can be watched, else computed afresh.
 */
export function storeRanges(store: Store, scope: Scope): { ranges: Buffer; n: number; keysIn(r: number): StoreKey[] } {
  if (store.watchKeys && store.keys) {
    let ix = indexes.get(store);
    if (!ix) {
      const built = new DigestIndex(store.keys());
      store.watchKeys((tpl, node, before, after) => built.apply(tpl, node, before, after));
      indexes.set(store, (ix = built));
    }
    const d = ix.digest(scope);
    const index = ix;
    return { ...d, keysIn: (r) => index.keysIn(r, scope) };
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
