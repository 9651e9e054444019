/**
 * The topic-level trie both stores answer `match` from (MQTT 3.1.1 §4.7). A trie node is a
 * bucket: one topic level; its leaves are the entries whose topic is its path + '/' + nodeId.
 */
import { expired, parseFilter } from './common.js';
import type { StoredPacket } from './types.js';

/** What the trie needs of an entry; it sets `bucket` and `slot`. */
export interface Leaf<E> {
  readonly tpl: string;
  readonly node: string;
  /** Exp in Unix s, -1 when none (expired leaves are not yielded). */
  exp: number;
  /** The bucket it is a leaf of; null: none (a tombstone). */
  bucket: Bucket<E> | null;
  /** Its index in bucket.leaves. */
  slot: number;
}

/**
 * A trie node: one topic level. `leaves` holds the entries whose topic is this path + '/' + nodeId,
 * in an array with swap-remove (each entry knows its slot): a Map per bucket cost a quarter of the
 * replay time and ~20 bytes per packet, and the nodeId level is found through the index anyway.
 */
export class Bucket<E> {
  children: Map<string, Bucket<E>> | null = null;
  leaves: E[] | null = null;
  /** Pruned from the trie (empty): never used again. */
  dead = false;
  constructor(
    readonly path: string,
    readonly level: string,
    readonly parent: Bucket<E> | null,
  ) {}
}

/** A fresh flat copy: a substring of a topic would keep the whole topic alive (V8 sliced strings). */
export const flat = (s: string): string => Buffer.from(s, 'latin1').toString('latin1');

export class Trie<E extends Leaf<E>> {
  readonly root = new Bucket<E>('', '', null);
  private readonly buckets = new Map<string, Bucket<E>>();

  /**
   * @param view the packet an entry stands for (called for the entries `match` yields)
   * @param find the entry of (tpl, node) in the index: a filter's literal last level is looked up there
   */
  constructor(
    private readonly view: (e: E) => StoredPacket,
    private readonly find: (tpl: string, node: string) => E | undefined,
  ) {}

  bucketAt(path: string): Bucket<E> {
    return this.buckets.get(path) ?? this.makeBucket(path);
  }

  /** Makes e (in no bucket) a leaf of `bucket`. */
  attach(e: E, bucket: Bucket<E>): void {
    // Leaving its old bucket may have pruned this one (an ancestor that held nothing else).
    const b = bucket.dead ? this.bucketAt(bucket.path) : bucket;
    const leaves = (b.leaves ??= []);
    e.slot = leaves.length;
    leaves.push(e);
    e.bucket = b;
  }

  /** Takes e out of its bucket and prunes trie nodes left empty. */
  detach(e: E): void {
    let b = e.bucket as Bucket<E>;
    e.bucket = null;
    const leaves = b.leaves as E[];
    const last = leaves.pop() as E;
    if (last !== e) {
      leaves[e.slot] = last;
      last.slot = e.slot;
    }
    // Empty trie nodes are pruned, so memory follows the live buckets, not history.
    while (b.parent !== null && (b.leaves === null || b.leaves.length === 0)) {
      b.leaves = null;
      if (b.children !== null && b.children.size > 0) break;
      b.parent.children?.delete(b.level);
      this.buckets.delete(b.path);
      b.dead = true;
      b = b.parent;
    }
  }

  private makeBucket(path: string): Bucket<E> {
    let b = this.root;
    let at = 0;
    while (at <= path.length) {
      let end = path.indexOf('/', at);
      if (end < 0) end = path.length;
      const level = path.slice(at, end);
      let c = b.children?.get(level);
      if (c === undefined) {
        const p = flat(path.slice(0, end));
        c = new Bucket<E>(p, flat(level), b);
        (b.children ??= new Map()).set(c.level, c);
        this.buckets.set(p, c);
      }
      b = c;
      at = end + 1;
    }
    return b;
  }

  /** Unexpired leaves whose topic matches an MQTT filter, lazily. */
  match(filter: string, nowMs: number): Iterable<StoredPacket> {
    return this.walk(this.root, parseFilter(filter), 0, nowMs);
  }

  // The walk of MQTT 3.1.1 §4.7 over the trie. `node` stands for the first i topic levels; its
  // leaves are topics of i+1 levels (the last level is always the nodeId). No stored topic starts
  // with '$', so the rule that wildcards skip '$' topics never applies.
  private *walk(node: Bucket<E>, f: readonly string[], i: number, nowMs: number): Generator<StoredPacket> {
    const lvl = f[i] as string;
    if (lvl === '#') {
      yield* this.all(node, nowMs);
      return;
    }
    const last = i === f.length - 1;
    // 'a/b/#' also matches 'a/b' itself: a leaf of 'a'.
    if (node.leaves !== null && (last || (i === f.length - 2 && f[i + 1] === '#'))) {
      if (lvl === '+') {
        yield* this.leavesOf(node, nowMs);
      } else {
        // The last level is a nodeId: look it up in the index (every leaf here has the same template).
        const tpl = node.leaves[0]?.tpl;
        const e = tpl === undefined ? undefined : this.find(tpl, lvl);
        if (e !== undefined && e.bucket === node && !expired(e, nowMs)) yield this.view(e);
      }
    }
    if (last || node.children === null) return;
    if (lvl === '+') {
      for (const c of node.children.values()) yield* this.walk(c, f, i + 1, nowMs);
    } else {
      const c = node.children.get(lvl);
      if (c !== undefined) yield* this.walk(c, f, i + 1, nowMs);
    }
  }

  private *all(node: Bucket<E>, nowMs: number): Generator<StoredPacket> {
    yield* this.leavesOf(node, nowMs);
    if (node.children !== null) for (const c of node.children.values()) yield* this.all(c, nowMs);
  }

  // A consumer may pause between packets (Aedes streams them to a slow client) while puts move
  // entries: swap-remove would then skip or repeat one. So a bucket is walked from a copy of its
  // array, and an entry that has left the bucket meanwhile is skipped (one that arrives is sent
  // live by the broker anyway).
  private *leavesOf(node: Bucket<E>, nowMs: number): Generator<StoredPacket> {
    if (node.leaves === null) return;
    for (const e of node.leaves.slice()) if (e.bucket === node && !expired(e, nowMs)) yield this.view(e);
  }
}
