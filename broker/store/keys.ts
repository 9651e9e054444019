/**
 * The key index: (template, node) → entry, one hash table of node ids per template. Both stores
 * keep their entries in one (the log store's replay probes it with the id's bytes in the log).
 */
import { ID_CHARS } from './common.js';

/** What the index needs of an entry. */
export interface Keyed {
  readonly tpl: string;
  readonly node: string;
}

/** The node table of one template. */
export interface TplIndex<E extends Keyed> {
  readonly tpl: string;
  readonly nodes: NodeTable<E>;
}

// FNV-1a over the 26 characters of a node id, from a string or straight from log bytes.
function hashId(s: string): number {
  let h = 0x811c9dc5;
  for (let k = 0; k < ID_CHARS; k++) h = Math.imul(h ^ s.charCodeAt(k), 16777619);
  return h;
}
export function hashIdAt(buf: Buffer, at: number): number {
  let h = 0x811c9dc5;
  for (let k = at; k < at + ID_CHARS; k++) h = Math.imul(h ^ (buf[k] as number), 16777619);
  return h;
}
function isIdAt(id: string, buf: Buffer, at: number): boolean {
  for (let k = 0; k < ID_CHARS; k++) if (id.charCodeAt(k) !== buf[at + k]) return false;
  return true;
}

/**
 * Node id → entry for one template: open addressing with linear probing, hashes kept beside the
 * slots. Unlike a Map it can be probed with the id's bytes in the log, so replaying a record for a
 * known node makes no string, and a probe rarely touches anything but the two arrays (with a Map
 * of a million strings the lookup was the largest single cost of the replay).
 */
export class NodeTable<E extends Keyed> {
  private slots: Array<E | undefined> = new Array<E | undefined>(16).fill(undefined);
  private hashes = new Int32Array(16);
  private mask = 15;
  size = 0;

  get(id: string): E | undefined {
    if (typeof id !== 'string' || id.length !== ID_CHARS) return undefined;
    const h = hashId(id) | 0;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const e = this.slots[i];
      if (e === undefined) return undefined;
      if (this.hashes[i] === h && e.node === id) return e;
    }
  }

  /** The entry whose id is buf[at, at+26), given h = hashIdAt(buf, at). */
  getAt(buf: Buffer, at: number, h: number): E | undefined {
    h |= 0;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const e = this.slots[i];
      if (e === undefined) return undefined;
      if (this.hashes[i] === h && isIdAt(e.node, buf, at)) return e;
    }
  }

  /** Adds an entry whose id is not in the table. */
  add(e: E, h: number = hashId(e.node)): void {
    if ((this.size + 1) * 10 > this.slots.length * 7) this.grow();
    let i = h & this.mask;
    while (this.slots[i] !== undefined) i = (i + 1) & this.mask;
    this.slots[i] = e;
    this.hashes[i] = h;
    this.size++;
  }

  delete(e: E): void {
    let hole = hashId(e.node) & this.mask;
    while (this.slots[hole] !== e) {
      if (this.slots[hole] === undefined) return;
      hole = (hole + 1) & this.mask;
    }
    // Backward-shift deletion: pull later entries of the probe run into the hole when their home
    // slot is not between the hole and where they sit.
    for (let j = (hole + 1) & this.mask; ; j = (j + 1) & this.mask) {
      const next = this.slots[j];
      if (next === undefined) break;
      const home = (this.hashes[j] as number) & this.mask;
      const stays = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (stays) continue;
      this.slots[hole] = next;
      this.hashes[hole] = this.hashes[j] as number;
      hole = j;
    }
    this.slots[hole] = undefined;
    this.size--;
  }

  /** A snapshot of the entries (callers may change the table while they go through it). */
  entries(): E[] {
    const out: E[] = [];
    for (const e of this.slots) if (e !== undefined) out.push(e);
    return out;
  }

  private grow(): void {
    const slots = this.slots;
    const hashes = this.hashes;
    const cap = slots.length * 2;
    this.slots = new Array<E | undefined>(cap).fill(undefined);
    this.hashes = new Int32Array(cap);
    this.mask = cap - 1;
    for (let i = 0; i < slots.length; i++) {
      const e = slots[i];
      if (e === undefined) continue;
      const h = hashes[i] as number;
      let j = h & this.mask;
      while (this.slots[j] !== undefined) j = (j + 1) & this.mask;
      this.slots[j] = e;
      this.hashes[j] = h;
    }
  }
}

/** Template → its node table. */
export class KeyIndex<E extends Keyed> {
  private readonly tpls = new Map<string, TplIndex<E>>();

  /** The table of `tpl`, if any entry of that template was ever added. */
  table(tpl: string): TplIndex<E> | undefined {
    return this.tpls.get(tpl);
  }

  /** A new, empty table for `tpl` (not in the index yet). Give it a flat string: it is kept. */
  addTable(tpl: string): TplIndex<E> {
    const ti: TplIndex<E> = { tpl, nodes: new NodeTable<E>() };
    this.tpls.set(tpl, ti);
    return ti;
  }

  get(tpl: string, node: string): E | undefined {
    return this.tpls.get(tpl)?.nodes.get(node);
  }

  delete(e: E): void {
    this.tpls.get(e.tpl)?.nodes.delete(e);
  }

  /** A snapshot of every entry (callers may change the index while they go through it). */
  entries(): E[] {
    const out: E[] = [];
    for (const ti of this.tpls.values()) for (const e of ti.nodes.entries()) out.push(e);
    return out;
  }
}
