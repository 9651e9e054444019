/**
 * Digests of a store for catch-up (docs/protocol-choices.md, "Federation catch-up"): per-range
 * XOR of entry hashes, so two brokers compare 256 × 8 bytes and list only the ranges that differ.
 */
import { createHash } from 'node:crypto';
import { decodePacket, parseOutcomeTopic, parseScoreTopic } from '../../src/index.js';
import type { Store, StoreKey } from '../store.js';

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

export const rootOf = (ranges: Buffer, n: number): string => createHash('sha256').update(ranges).update(String(n)).digest('hex').slice(0, 32);

/** Ranges whose 8-byte digests differ. */
export function differingRanges(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let r = 0; r < RANGES; r++) if (a.compare(b, r * 8, r * 8 + 8, r * 8, r * 8 + 8) !== 0) out.push(r);
  return out;
}

/** A digest of a whole store (every key and seq, live or deleted): equal digests, equal stores. */
export function storeDigest(store: Store): string {
  const keys = store.keys?.() ?? [];
  const d = digest(keys, '*');
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
