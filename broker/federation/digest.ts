/**
 * Digests of a store for catch-up (docs/protocol-choices.md, "Federation catch-up"): per-range
 * XOR of entry hashes, so two brokers compare 256 × 8 bytes and list only the ranges that differ.
 */
import { createHash } from 'node:crypto';
import { decodePacket, parseOutcomeTopic, parseScoreTopic } from '../../src/index.js';
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

/**
 * A store's range digests kept up to date as it changes (Store.watchKeys), so a peer's `root`
 * or `ranges` request costs O(ranges × templates asked about), not a hash of every key: one
 * request on a store of 100k packets used to block the event loop 0.55 s. Per template: its range
 * words and count (a scope is the XOR of its templates'); per range: its keys (for `entries`).
 */
export class DigestIndex {
  readonly #all = { words: new Uint32Array(RANGES * 2), n: 0 };
  readonly #byTpl = new Map<string, { words: Uint32Array; n: number }>();
  readonly #byRange: Map<string, StoreKey>[] = Array.from({ length: RANGES }, () => new Map<string, StoreKey>());

  constructor(keys: readonly StoreKey[]) {
    for (const k of keys) this.apply(k.tplId, k.nodeId, undefined, k);
  }

  apply(tplId: string, nodeId: string, before: KeyState | undefined, after: KeyState | undefined): void {
    if (before === undefined && after === undefined) return;
    const r = rangeOf(tplId, nodeId);
    let t = this.#byTpl.get(tplId);
    if (!t) this.#byTpl.set(tplId, (t = { words: new Uint32Array(RANGES * 2), n: 0 }));
    const flip = (k: KeyState, dn: number): void => {
      const [a, b] = entryHash({ tplId, nodeId, ...k });
      for (const d of [this.#all, t]) {
        d.words[2 * r] = (d.words[2 * r] as number) ^ a;
        d.words[2 * r + 1] = (d.words[2 * r + 1] as number) ^ b;
        d.n += dn;
      }
    };
    if (before) flip(before, -1);
    if (after) flip(after, 1);
    const key = `${tplId}/${nodeId}`;
    if (after) this.#byRange[r]!.set(key, { tplId, nodeId, seq: after.seq, del: after.del });
    else this.#byRange[r]!.delete(key);
    if (t.n === 0) this.#byTpl.delete(tplId);
  }

  /** The range digests and key count of `scope`. */
  digest(scope: Scope): { ranges: Buffer; n: number } {
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
    const out: StoreKey[] = [];
    for (const k of this.#byRange[r]?.values() ?? []) if (inScope(scope, k.tplId)) out.push(k);
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
 * verified): loops and echoes end here, before any signature work. Malformed input is "not
 * stale", so admission refuses it with its own code.
 */
export function notNewer(store: Store, scoreStore: Store | undefined, topic: string, payload: Uint8Array): boolean {
  try {
    const isScore = topic.startsWith('qis/1/s/');
    if (!isScore && !topic.startsWith('qis/1/o/')) return false;
    const { tplId, nodeId } = isScore ? parseScoreTopic(topic) : parseOutcomeTopic(topic);
    const held = (isScore ? scoreStore : store)?.seqOf(tplId, nodeId);
    return held !== undefined && decodePacket(payload).seq <= held;
  } catch {
    return false;
  }
}
