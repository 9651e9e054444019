/**
 * The regional broker's durable store: exactly one outcome packet per (template, node), the one
 * with the highest seq (PROTOCOL §6), independent of Aedes and MQTT.
 *
 * On disk it is one append-only log of CRC-framed records (a put or a removal), replayed at open
 * and rewritten by compaction; in memory it is an index (template, node) → entry, a topic-level
 * trie for `match`, and packet bytes packed into slabs. docs/store.md has the record format, the
 * fsync guarantees, the compaction rule and the measured figures.
 *
 * Only `../src/index.js` and node built-ins are imported (test/boundaries.test.ts).
 */
import { mkdir, open, readFile, rename, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { MAX_PACKET_BYTES, QisError, isNodeId, isTplId, lockOwner, lockOwnerText, parseOutcomeTopic } from '../src/index.js';

// ------------------------------------------------------------------------------ public types

/** A node's current packet for a template, as stored. */
export interface StoredPacket {
  readonly tplId: string;
  readonly nodeId: string;
  /** `qis/1/o/<tplId>/<L1>/…/<Lk>/<nodeId>`: its bucket (the signature is bound to it). */
  readonly topic: string;
  readonly seq: number;
  /**
   * The packet bytes exactly as received. Packets the store returns are zero-copy views of its
   * memory (Buffers, in fact): read them, send them, never write into them.
   */
  readonly packet: Uint8Array;
  /** The packet's `exp`, Unix seconds, if it has one. */
  readonly exp?: number;
}

/** What the store remembers of a deleted packet, so that an older one is never resurrected (PROTOCOL §8). */
export interface Tombstone {
  readonly tplId: string;
  readonly nodeId: string;
  readonly seq: number;
  /** Unix ms when the deletion was stored. */
  readonly at: number;
  /** The signed tombstone's topic and bytes (the proof a federation peer needs), kept for the tombstone TTL when given to `remove`. */
  readonly topic?: string;
  readonly packet?: Uint8Array;
}

/** One (template, node) the store knows: its seq and whether it is deleted (for federation digests). */
export interface StoreKey {
  readonly tplId: string;
  readonly nodeId: string;
  readonly seq: number;
  readonly del: boolean;
}

/** When `put`/`remove` resolve, relative to the disk. docs/store.md says what survives what. */
export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface StoreOptions {
  /** Directory of the store (created if missing). One store per directory (a lock file enforces it). */
  readonly dir: string;
  /**
   * `always` (default): a write resolves after fdatasync; writes in flight share one sync (group
   * commit). `interval`: resolves after write(2), synced every `fsyncIntervalMs`. `never`: resolves
   * after write(2), synced only by compaction and close. Every policy survives kill -9.
   */
  readonly fsync?: FsyncPolicy;
  /** Sync period for `fsync: 'interval'`. Default 100 ms. */
  readonly fsyncIntervalMs?: number;
  /**
   * How long the signed bytes of a tombstone are kept (to prove the deletion to a federation
   * peer). Default 30 days. The seq floor of a deleted (template, node) is kept for ever.
   */
  readonly tombstoneTtlMs?: number;
  /** Rewrite the log when it exceeds `compactRatio` × live bytes (and `compactMinBytes`). Default 2. */
  readonly compactRatio?: number;
  /** No automatic compaction below this log size. Default 1 MiB. */
  readonly compactMinBytes?: number;
  /** Compact automatically when the rule above says so. Default true; `compact()` always works. */
  readonly autoCompact?: boolean;
  /** The clock, Unix ms. Default `Date.now`. */
  readonly now?: () => number;
}

export type PutResult = { stored: true; replaced?: StoredPacket } | { stored: false; reason: 'stale' };
export type RemoveResult = { removed?: StoredPacket } | { stale: true };

/** What opening the store found in the log. */
export interface RecoveryReport {
  /** Valid records replayed. */
  readonly records: number;
  /** Bytes of an incomplete or corrupt tail that were cut off (a write torn by a crash). */
  readonly tornBytes: number;
  /** Corrupt regions in the middle of the log, skipped (the records around them were kept). */
  readonly damaged: readonly { readonly offset: number; readonly bytes: number }[];
  /** Time to open, ms. */
  readonly openMs: number;
}

export interface StoreStats {
  /** Live packets (including expired ones not swept yet). */
  readonly live: number;
  /** Remembered deletions (including ones past their TTL, until the next compaction). */
  readonly tombstones: number;
  /** Size of the log file. */
  readonly logBytes: number;
  /** Size the log would have right after a compaction. */
  readonly liveBytes: number;
  readonly compactions: number;
  readonly compactionFailures: number;
  readonly lastCompactionError?: string;
  /** Packet bytes held in memory, including superseded ones until the next compaction. */
  readonly memoryBytes: number;
  /** From the open: see RecoveryReport. */
  readonly tornBytes: number;
  readonly damagedBytes: number;
}

/** The store. Obtain one with {@link openStore}. */
export interface Store {
  /** Latest seq known for (tpl, node), live or deleted (tombstone), for admission's "seq must increase". */
  seqOf(tplId: string, nodeId: string): number | undefined;
  /** The live packet of (tpl, node); undefined when there is none or its `exp` has passed. */
  get(tplId: string, nodeId: string): StoredPacket | undefined;
  /** The live packet retained on exactly this topic (undefined for any other string). */
  getByTopic(topic: string): StoredPacket | undefined;
  /** The remembered deletion of (tpl, node) (kept for ever); `topic` and `packet` only within the tombstone TTL. */
  tombstone(tplId: string, nodeId: string): Tombstone | undefined;
  /** Every (template, node) known, live or deleted, with its seq (a snapshot; federation digests). */
  keys?(): StoreKey[];
  /**
   * Stores p if p.seq > seqOf(…); returns what it replaced (its topic may differ: a bucket move)
   * or 'stale'. The index changes at once; the promise resolves when the record is durable per
   * the fsync policy.
   * @throws QisError ERR_INVALID_ARGUMENT (malformed p) | ERR_FILE_IO (closed, or the log failed)
   */
  put(p: StoredPacket): Promise<PutResult>;
  /**
   * A signed tombstone (del: true) accepted by admission: removes the live packet, remembers seq
   * (for ever). With `topic` and `packet` (the signed tombstone) the proof is kept for the TTL.
   */
  remove(t: { readonly tplId: string; readonly nodeId: string; readonly seq: number; readonly topic?: string; readonly packet?: Uint8Array }): Promise<RemoveResult>;
  /** Live, unexpired packets whose topic matches an MQTT filter (`+`, `#`, MQTT 3.1.1 §4.7), walked lazily from a topic-level trie. */
  match(filter: string): Iterable<StoredPacket>;
  /** Removes packets whose exp (Unix s) has passed (each leaves a tombstone with its seq); resolves when durable. */
  sweepExpired(nowMs?: number): Promise<StoredPacket[]>;
  /** Live packets. */
  readonly size: number;
  /** What the open found in the log. */
  readonly recovery: RecoveryReport;
  stats(): StoreStats;
  /** Rewrites the log with live packets and unexpired tombstones only; puts go on meanwhile. */
  compact(): Promise<void>;
  /**
   * Resolves when every put and remove issued so far is durable per the fsync policy; rejects
   * with the store's failure. A broker awaits it before acknowledging a publish it drops as
   * stale: the record that made it stale may still be on its way to the disk.
   */
  durable(): Promise<void>;
  /** The error that stopped the store (a failed write or sync), or null while it is healthy. */
  readonly failure: QisError | null;
  /** Waits for queued writes and any compaction, syncs, closes the log and releases the lock. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Defaults of {@link StoreOptions}.
 * @example const store = await openStore({ dir, fsync: STORE_DEFAULTS.fsync })
 */
export const STORE_DEFAULTS = Object.freeze({
  fsync: 'always' as FsyncPolicy,
  fsyncIntervalMs: 100,
  tombstoneTtlMs: 30 * 24 * 3600 * 1000,
  compactRatio: 2,
  compactMinBytes: 1024 * 1024,
  autoCompact: true,
  now: Date.now as () => number,
});

type Resolved = Omit<Required<StoreOptions>, 'dir'> & { readonly dir: string };

/**
 * Opens (or creates) the store in `options.dir` and replays its log. A torn or corrupt tail is
 * cut off and corrupt regions in the middle are skipped; both are reported in `store.recovery`.
 * @throws QisError ERR_INVALID_ARGUMENT (options) | ERR_FILE_IO (the directory, the lock or the log)
 * @example
 * await using store = await openStore({ dir: '/var/lib/qis/store' });
 * if ((store.seqOf(p.tplId, p.nodeId) ?? -1) < p.seq) await store.put(p); // then PUBACK
 * for (const r of store.match('qis/1/o/<tplId>/<L1>/#')) send(r.topic, r.packet);
 */
export async function openStore(options: StoreOptions): Promise<Store> {
  const o = resolveOptions(options);
  const t0 = performance.now();
  try {
    await mkdir(o.dir, { recursive: true });
  } catch (e) {
    throw ioError(`cannot create store directory ${o.dir}`, e);
  }
  await lock(o.dir);
  let fh: FileHandle | undefined;
  try {
    // A compaction that did not reach its rename: the log it was to replace is complete.
    await rm(join(o.dir, TMP_FILE), { force: true });
    fh = await openLog(o.dir);
    const store = new LogStore(o, fh);
    await store.load(t0);
    return store;
  } catch (e) {
    await fh?.close().catch(noop);
    await unlock(o.dir);
    throw e instanceof QisError ? e : ioError(`cannot open store in ${o.dir}`, e);
  }
}

// ------------------------------------------------------------------------------ log format

// File: MAGIC, then records. Record (little-endian):
//   u32 body length | u32 CRC-32 of the body | body
//   body: u8 type | u8 flags | u64 seq | u64 exp (put, Unix s) or at (remove, Unix ms) | u16 text length | text | packet
//   put: text = topic, flags bit 0 = has exp, packet = the rest; remove: text = "<tplId>/<nodeId>", no packet.
const LOG_FILE = 'store.log';
const TMP_FILE = 'store.log.tmp';
const LOCK_FILE = 'store.lock';
const MAGIC = Buffer.from('QISLOG\x00\x01', 'latin1'); // name, format version 1
const HEADER_BYTES = MAGIC.length;
const FRAME = 8;
const FIXED = 20;
const TYPE_PUT = 1;
const TYPE_REMOVE = 2;
/** A removal with its proof: text = the tombstone's topic, packet = the signed tombstone bytes. */
const TYPE_TOMB = 3;
const FLAG_EXP = 1;
const ID_CHARS = 26;
// 'qis/1/o/' + tplId + '/' + one 10-character level + '/' + nodeId
const MIN_TOPIC = 8 + ID_CHARS + 1 + 10 + 1 + ID_CHARS;
// Above the longest outcome topic (32 levels: 413 characters), so a sane frame is small.
const MAX_TOPIC = 1024;
const KEY_CHARS = 2 * ID_CHARS + 1;
const MAX_BODY = FIXED + MAX_TOPIC + MAX_PACKET_BYTES;
const MAX_FRAME = FRAME + MAX_BODY;
const TWO32 = 2 ** 32;

const SLAB_BYTES = 256 * 1024;
const READ_CHUNK = 8 * 1024 * 1024;
const REPLAY_CACHE = 1 << 16; // a power of two; 0.5 MiB of pointers, only during open
const COMPACT_CHUNK = 1024 * 1024;
// Records written to the old log during a compaction are copied to the new one in rounds until
// fewer than this remain; the last round runs with appends held, so it must be short.
const CATCH_UP_BYTES = 256 * 1024;

/** A plain view for crc32: cheaper than Buffer#subarray, which replay would call a million times. */
const view = (buf: Buffer, off: number, len: number): Uint8Array => new Uint8Array(buf.buffer, buf.byteOffset + off, len);

function writeU53(buf: Buffer, v: number, off: number): void {
  buf.writeUInt32LE(v % TWO32, off);
  buf.writeUInt32LE(Math.floor(v / TWO32), off + 4);
}
function readU53(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off + 4) * TWO32 + buf.readUInt32LE(off);
}
/** Does buf[at, at+len) spell `path`? Compared from the end, where bucket paths differ. */
function isPath(path: string, buf: Buffer, at: number, len: number): boolean {
  if (path.length !== len) return false;
  for (let k = len - 1; k >= 0; k--) if (buf[at + k] !== path.charCodeAt(k)) return false;
  return true;
}

/** Writes a put record at `off`; returns the offset after it. `exp` < 0: none. */
function writePut(out: Buffer, off: number, topic: string, seq: number, exp: number, packet: Uint8Array): number {
  const body = FIXED + topic.length + packet.length;
  const b = off + FRAME;
  out.writeUInt32LE(body, off);
  out[b] = TYPE_PUT;
  out[b + 1] = exp >= 0 ? FLAG_EXP : 0;
  writeU53(out, seq, b + 2);
  writeU53(out, exp >= 0 ? exp : 0, b + 10);
  out.writeUInt16LE(topic.length, b + 18);
  out.write(topic, b + FIXED, 'latin1'); // outcome topics are ASCII (checked by parseOutcomeTopic)
  out.set(packet, b + FIXED + topic.length);
  out.writeUInt32LE(crc32(view(out, b, body)), off + 4);
  return b + body;
}

function writeRemove(out: Buffer, off: number, tpl: string, node: string, seq: number, at: number): number {
  const body = FIXED + KEY_CHARS;
  const b = off + FRAME;
  out.writeUInt32LE(body, off);
  out[b] = TYPE_REMOVE;
  out[b + 1] = 0;
  writeU53(out, seq, b + 2);
  writeU53(out, at, b + 10);
  out.writeUInt16LE(KEY_CHARS, b + 18);
  out.write(`${tpl}/${node}`, b + FIXED, 'latin1');
  out.writeUInt32LE(crc32(view(out, b, body)), off + 4);
  return b + body;
}

/** A removal with its proof (type 3): same layout as a put, `at` in place of exp. */
function writeTomb(out: Buffer, off: number, topic: string, seq: number, at: number, packet: Uint8Array): number {
  const end = writePut(out, off, topic, seq, at, packet);
  const b = off + FRAME;
  out[b] = TYPE_TOMB;
  out[b + 1] = 0;
  out.writeUInt32LE(crc32(view(out, b, end - b)), off + 4);
  return end;
}

const putBytes = (topicLength: number, packetLength: number): number => FRAME + FIXED + topicLength + packetLength;
const REMOVE_BYTES = FRAME + FIXED + KEY_CHARS;

/** Length of the valid record starting at buf[i] (`avail` bytes readable from there), or 0. */
function frameAt(buf: Buffer, i: number, avail: number): number {
  if (avail < FRAME + FIXED) return 0;
  const body = buf.readUInt32LE(i);
  if (body < FIXED || body > MAX_BODY || FRAME + body > avail) return 0;
  const b = i + FRAME;
  const type = buf.readUInt8(b);
  const flags = buf.readUInt8(b + 1);
  const text = buf.readUInt16LE(b + 18);
  if (type === TYPE_PUT) {
    const packet = body - FIXED - text;
    if (flags > FLAG_EXP || text < MIN_TOPIC || text > MAX_TOPIC || packet < 1 || packet > MAX_PACKET_BYTES) return 0;
  } else if (type === TYPE_TOMB) {
    const packet = body - FIXED - text;
    if (flags !== 0 || text < MIN_TOPIC || text > MAX_TOPIC || packet < 1 || packet > MAX_PACKET_BYTES) return 0;
  } else if (type !== TYPE_REMOVE || flags !== 0 || text !== KEY_CHARS || body !== FIXED + KEY_CHARS) {
    return 0;
  }
  if (crc32(view(buf, b, body)) !== buf.readUInt32LE(i + 4)) return 0;
  return FRAME + body;
}

// ------------------------------------------------------------------------------ memory

/** One (template, node): its live packet, or its tombstone. */
class Entry {
  seq = 0;
  /** Live: exp in Unix s, -1 when none. */
  exp = -1;
  /** Tombstone: Unix ms of the deletion. -1 while live (and in a new entry). */
  at = -1;
  /** Live: the trie node of its bucket. null: a tombstone. */
  bucket: Bucket | null = null;
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
  constructor(
    readonly tpl: string,
    readonly node: string,
  ) {}
}

/**
 * A trie node: one topic level. `leaves` holds the packets whose topic is this path + '/' + nodeId,
 * in an array with swap-remove (each entry knows its slot): a Map per bucket cost a quarter of the
 * replay time and ~20 bytes per packet, and the nodeId level is found through the index anyway.
 */
class Bucket {
  children: Map<string, Bucket> | null = null;
  leaves: Entry[] | null = null;
  /** Pruned from the trie (empty): never used again. */
  dead = false;
  constructor(
    readonly path: string,
    readonly level: string,
    readonly parent: Bucket | null,
  ) {}
}

interface TplIndex {
  readonly tpl: string;
  readonly nodes: NodeTable;
}

// FNV-1a over the 26 characters of a node id, from a string or straight from log bytes.
function hashId(s: string): number {
  let h = 0x811c9dc5;
  for (let k = 0; k < ID_CHARS; k++) h = Math.imul(h ^ s.charCodeAt(k), 16777619);
  return h;
}
function hashIdAt(buf: Buffer, at: number): number {
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
class NodeTable {
  private slots: Array<Entry | undefined> = new Array<Entry | undefined>(16).fill(undefined);
  private hashes = new Int32Array(16);
  private mask = 15;
  size = 0;

  get(id: string): Entry | undefined {
    if (typeof id !== 'string' || id.length !== ID_CHARS) return undefined;
    const h = hashId(id) | 0;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const e = this.slots[i];
      if (e === undefined) return undefined;
      if (this.hashes[i] === h && e.node === id) return e;
    }
  }

  /** The entry whose id is buf[at, at+26), given h = hashIdAt(buf, at). */
  getAt(buf: Buffer, at: number, h: number): Entry | undefined {
    h |= 0;
    for (let i = h & this.mask; ; i = (i + 1) & this.mask) {
      const e = this.slots[i];
      if (e === undefined) return undefined;
      if (this.hashes[i] === h && isIdAt(e.node, buf, at)) return e;
    }
  }

  /** Adds an entry whose id is not in the table. */
  add(e: Entry, h: number = hashId(e.node)): void {
    if ((this.size + 1) * 10 > this.slots.length * 7) this.grow();
    let i = h & this.mask;
    while (this.slots[i] !== undefined) i = (i + 1) & this.mask;
    this.slots[i] = e;
    this.hashes[i] = h;
    this.size++;
  }

  delete(e: Entry): void {
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
  entries(): Entry[] {
    const out: Entry[] = [];
    for (const e of this.slots) if (e !== undefined) out.push(e);
    return out;
  }

  private grow(): void {
    const slots = this.slots;
    const hashes = this.hashes;
    const cap = slots.length * 2;
    this.slots = new Array<Entry | undefined>(cap).fill(undefined);
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

/**
 * Packet bytes packed into 256 KiB slabs: one ArrayBuffer per packet would cost ~300 bytes of
 * bookkeeping each and slow the GC. Slabs are append-only, so views handed out stay valid;
 * compaction copies the live packets into a fresh arena and the old slabs are collected.
 */
class Arena {
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
}

/** A fresh flat copy: a substring of a topic would keep the whole topic alive (V8 sliced strings). */
const flat = (s: string): string => Buffer.from(s, 'latin1').toString('latin1');

interface Batch {
  readonly bufs: Buffer[];
  bytes: number;
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

const noop = (): void => {};
const STALE = Object.freeze({ stored: false, reason: 'stale' }) as PutResult;
const ABANDONED = Symbol('compaction abandoned');

class LogStore implements Store {
  private readonly o: Resolved;
  private fh: FileHandle;
  private readonly logPath: string;
  private readonly index = new Map<string, TplIndex>();
  private readonly root = new Bucket('', '', null);
  private readonly buckets = new Map<string, Bucket>();
  private readonly expiring = new Set<Entry>();
  private arena = new Arena();
  private liveCount = 0;
  private tombCount = 0;
  private liveBytes = HEADER_BYTES;
  /** Size of the log: appends go here. */
  private pos = 0;
  private batch: Batch | null = null;
  /** Serialises log writes, syncs and the compaction's switch of files. */
  private chain: Promise<void> = Promise.resolve();
  /** While a compaction runs: what was appended to the old log since it started. */
  private capture: Buffer[] | null = null;
  private compaction: Promise<void> | null = null;
  private compactions = 0;
  private compactionFailures = 0;
  private lastCompactionError: string | undefined;
  private nextAutoCompact = 0;
  private failed: QisError | null = null;
  private closing: Promise<void> | null = null;
  private unsynced = false;
  private timer: NodeJS.Timeout | null = null;
  recovery: RecoveryReport = { records: 0, tornBytes: 0, damaged: [], openMs: 0 };

  constructor(o: Resolved, fh: FileHandle) {
    this.o = o;
    this.fh = fh;
    this.logPath = join(o.dir, LOG_FILE);
  }

  // ---------------------------------------------------------------- reads

  get size(): number {
    return this.liveCount;
  }

  seqOf(tplId: string, nodeId: string): number | undefined {
    // A deletion's seq is a floor kept for ever: a packet older than it never comes back.
    return this.index.get(tplId)?.nodes.get(nodeId)?.seq;
  }

  get(tplId: string, nodeId: string): StoredPacket | undefined {
    const e = this.index.get(tplId)?.nodes.get(nodeId);
    return e === undefined || e.bucket === null || this.expired(e, this.o.now()) ? undefined : this.view(e);
  }

  getByTopic(topic: string): StoredPacket | undefined {
    if (typeof topic !== 'string' || topic.length < MIN_TOPIC) return undefined;
    const cut = topic.length - ID_CHARS - 1;
    // tplId and nodeId sit at fixed places in an outcome topic; the bucket comparison below
    // rejects any other string.
    const e = this.index.get(topic.slice(8, 8 + ID_CHARS))?.nodes.get(topic.slice(cut + 1));
    if (e === undefined || e.bucket === null || topic.charCodeAt(cut) !== 47 || e.bucket.path !== topic.slice(0, cut)) return undefined;
    return this.expired(e, this.o.now()) ? undefined : this.view(e);
  }

  tombstone(tplId: string, nodeId: string): Tombstone | undefined {
    const e = this.index.get(tplId)?.nodes.get(nodeId);
    if (e === undefined || e.bucket !== null) return undefined;
    const t = { tplId: e.tpl, nodeId: e.node, seq: e.seq, at: e.at };
    if (e.ttopic === null || e.slab === null || this.forgotten(e, this.o.now())) return t;
    return { ...t, topic: e.ttopic, packet: e.slab.subarray(e.off, e.off + e.len) };
  }

  keys(): StoreKey[] {
    const out: StoreKey[] = [];
    for (const ti of this.index.values()) for (const e of ti.nodes.entries()) out.push({ tplId: e.tpl, nodeId: e.node, seq: e.seq, del: e.bucket === null });
    return out;
  }

  match(filter: string): Iterable<StoredPacket> {
    const levels = parseFilter(filter);
    return this.walk(this.root, levels, 0, this.o.now());
  }

  stats(): StoreStats {
    const damagedBytes = this.recovery.damaged.reduce((n, d) => n + d.bytes, 0);
    return {
      live: this.liveCount,
      tombstones: this.tombCount,
      logBytes: this.pos,
      liveBytes: this.liveBytes,
      compactions: this.compactions,
      compactionFailures: this.compactionFailures,
      ...(this.lastCompactionError !== undefined ? { lastCompactionError: this.lastCompactionError } : {}),
      memoryBytes: this.arena.bytes,
      tornBytes: this.recovery.tornBytes,
      damagedBytes,
    };
  }

  /** A tombstone past its TTL has no proof any more (compaction drops the bytes); its seq still blocks. */
  private forgotten(e: Entry, nowMs: number): boolean {
    return e.at + this.o.tombstoneTtlMs <= nowMs;
  }

  private expired(e: Entry, nowMs: number): boolean {
    return e.exp >= 0 && nowMs > e.exp * 1000; // same rule as verifyPacket's ERR_EXPIRED
  }

  /** Whether an operation with `seq` must be refused as stale. */
  private blocks(e: Entry, seq: number): boolean {
    return seq <= e.seq;
  }

  private view(e: Entry): StoredPacket {
    const slab = e.slab as Buffer;
    const topic = `${(e.bucket as Bucket).path}/${e.node}`;
    const packet = slab.subarray(e.off, e.off + e.len);
    return e.exp >= 0
      ? { tplId: e.tpl, nodeId: e.node, topic, seq: e.seq, packet, exp: e.exp }
      : { tplId: e.tpl, nodeId: e.node, topic, seq: e.seq, packet };
  }

  // The walk of MQTT 3.1.1 §4.7 over the trie. `node` stands for the first i topic levels; its
  // leaves are topics of i+1 levels (the last level is always the nodeId). No stored topic starts
  // with '$', so the rule that wildcards skip '$' topics never applies.
  private *walk(node: Bucket, f: readonly string[], i: number, nowMs: number): Generator<StoredPacket> {
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
        const e = tpl === undefined ? undefined : this.index.get(tpl)?.nodes.get(lvl);
        if (e !== undefined && e.bucket === node && !this.expired(e, nowMs)) yield this.view(e);
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

  private *all(node: Bucket, nowMs: number): Generator<StoredPacket> {
    yield* this.leavesOf(node, nowMs);
    if (node.children !== null) for (const c of node.children.values()) yield* this.all(c, nowMs);
  }

  // A consumer may pause between packets (Aedes streams them to a slow client) while puts move
  // entries: swap-remove would then skip or repeat one. So a bucket is walked from a copy of its
  // array, and an entry that has left the bucket meanwhile is skipped (one that arrives is sent
  // live by the broker anyway).
  private *leavesOf(node: Bucket, nowMs: number): Generator<StoredPacket> {
    if (node.leaves === null) return;
    for (const e of node.leaves.slice()) if (e.bucket === node && !this.expired(e, nowMs)) yield this.view(e);
  }

  // ---------------------------------------------------------------- writes

  async put(p: StoredPacket): Promise<PutResult> {
    this.assertWritable();
    const v = checkStoredPacket(p);
    const ti = this.index.get(v.tpl);
    const e = ti?.nodes.get(v.node);
    if (e !== undefined && this.blocks(e, v.seq)) return STALE;
    const replaced = e !== undefined && e.bucket !== null ? this.view(e) : undefined;
    const rec = Buffer.allocUnsafe(putBytes(p.topic.length, p.packet.length));
    writePut(rec, 0, p.topic, v.seq, v.exp, p.packet);
    const bucket = this.bucketAt(p.topic.slice(0, p.topic.length - ID_CHARS - 1));
    const stored = this.installPut(ti ?? this.tplIndex(flat(v.tpl)), e, e?.node ?? flat(v.node), bucket, v.seq, v.exp, p.packet.length, rec.length);
    this.keepBytes(stored, p.packet);
    await this.append(rec);
    return replaced !== undefined ? { stored: true, replaced } : { stored: true };
  }

  async remove(t: { readonly tplId: string; readonly nodeId: string; readonly seq: number; readonly topic?: string; readonly packet?: Uint8Array }): Promise<RemoveResult> {
    this.assertWritable();
    if (typeof t !== 'object' || t === null) throw argError('remove() takes { tplId, nodeId, seq }');
    if (typeof t.tplId !== 'string' || !isTplId(t.tplId)) throw argError(`remove(): ${show(t.tplId)} is not a template id`);
    if (typeof t.nodeId !== 'string' || !isNodeId(t.nodeId)) throw argError(`remove(): ${show(t.nodeId)} is not a node id`);
    if (!Number.isSafeInteger(t.seq) || t.seq < 0) throw argError(`remove(): seq must be an integer from 0 to 2^53-1, not ${show(t.seq)}`);
    const ti = this.index.get(t.tplId);
    const e = ti?.nodes.get(t.nodeId);
    if (e !== undefined && this.blocks(e, t.seq)) return { stale: true };
    const removed = e !== undefined && e.bucket !== null ? this.view(e) : undefined;
    const at = this.clock();
    let proof: { topic: string; packet: Uint8Array } | undefined;
    if (t.topic !== undefined || t.packet !== undefined) {
      checkStoredPacket({ tplId: t.tplId, nodeId: t.nodeId, topic: t.topic as string, seq: t.seq, packet: t.packet as Uint8Array });
      proof = { topic: flat(t.topic as string), packet: t.packet as Uint8Array };
    }
    const rec = Buffer.allocUnsafe(proof ? putBytes(proof.topic.length, proof.packet.length) : REMOVE_BYTES);
    if (proof) writeTomb(rec, 0, proof.topic, t.seq, at, proof.packet);
    else writeRemove(rec, 0, t.tplId, t.nodeId, t.seq, at);
    const te = this.installTomb(ti ?? this.tplIndex(flat(t.tplId)), e, e?.node ?? flat(t.nodeId), t.seq, at, rec.length);
    if (proof) {
      te.ttopic = proof.topic;
      te.len = proof.packet.length;
      this.keepBytes(te, proof.packet);
    }
    await this.append(rec);
    return removed !== undefined ? { removed } : {};
  }

  async sweepExpired(nowMs?: number): Promise<StoredPacket[]> {
    this.assertWritable();
    if (nowMs !== undefined && (!Number.isFinite(nowMs) || nowMs < 0)) throw argError(`sweepExpired(): nowMs must be a Unix time in ms, not ${show(nowMs)}`);
    const now = nowMs ?? this.o.now();
    const at = Math.max(0, Math.floor(now));
    const victims = [...this.expiring].filter((e) => this.expired(e, now));
    const gone: StoredPacket[] = [];
    let durable: Promise<void> | undefined;
    for (const e of victims) {
      gone.push(this.view(e));
      // A tombstone keeps the seq: a peer still holding an older packet cannot bring it back (§8).
      const rec = Buffer.allocUnsafe(REMOVE_BYTES);
      writeRemove(rec, 0, e.tpl, e.node, e.seq, at);
      this.installTomb(this.index.get(e.tpl) as TplIndex, e, e.node, e.seq, at, REMOVE_BYTES);
      durable = this.append(rec); // all land in the same or an earlier batch than the last one
    }
    if (durable !== undefined) await durable;
    return gone;
  }

  private clock(): number {
    return Math.max(0, Math.floor(this.o.now()));
  }

  private assertWritable(): void {
    if (this.closing !== null) throw new QisError('ERR_FILE_IO', `store ${this.o.dir} is closed`);
    if (this.failed !== null) throw this.failed;
  }

  private tplIndex(tpl: string): TplIndex {
    const ti: TplIndex = { tpl, nodes: new NodeTable() };
    this.index.set(tpl, ti);
    return ti;
  }

  /**
   * Makes (ti, node) live in `bucket` with a packet of `len` bytes, which the caller then places
   * (keepBytes, or a file offset during replay). `found` is ti.nodes.get(node), already looked up
   * by the caller, which has also checked seq; `node` is only used when it is undefined.
   */
  private installPut(ti: TplIndex, found: Entry | undefined, node: string, bucket: Bucket, seq: number, exp: number, len: number, rec: number): Entry {
    let e = found;
    if (e === undefined) {
      e = new Entry(ti.tpl, node);
      ti.nodes.add(e);
    } else if (e.bucket !== null) {
      this.liveBytes -= e.rec;
      this.liveCount--;
      if (e.exp >= 0) this.expiring.delete(e);
      if (e.bucket !== bucket) this.detach(e);
    } else if (e.at >= 0) {
      this.liveBytes -= e.rec;
      this.tombCount--;
    }
    if (e.bucket === null) {
      // Leaving its old bucket may have pruned the new one (an ancestor that held nothing else).
      const b = bucket.dead ? this.bucketAt(bucket.path) : bucket;
      const leaves = (b.leaves ??= []);
      e.slot = leaves.length;
      leaves.push(e);
      e.bucket = b;
    }
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
    return e;
  }

  /** Turns (ti, node) into a tombstone. `found` and `node` as for installPut. */
  private installTomb(ti: TplIndex, found: Entry | undefined, node: string, seq: number, at: number, rec: number): Entry {
    let e = found;
    if (e === undefined) {
      e = new Entry(ti.tpl, node);
      ti.nodes.add(e);
    } else if (e.bucket !== null) {
      this.liveBytes -= e.rec;
      this.liveCount--;
      if (e.exp >= 0) this.expiring.delete(e);
      this.detach(e);
      e.slab = null;
    } else if (e.at >= 0) {
      this.liveBytes -= e.rec;
      this.tombCount--;
    }
    e.seq = seq;
    e.at = at;
    e.exp = -1;
    e.rec = rec;
    e.slab = null;
    e.ttopic = null; // the caller adds a proof
    this.liveBytes += rec;
    this.tombCount++;
    return e;
  }

  /** Copies a live entry's packet into the arena. */
  private keepBytes(e: Entry, packet: Uint8Array): void {
    const off = this.arena.alloc(packet.length);
    this.arena.slab.set(packet, off);
    e.slab = this.arena.slab;
    e.off = off;
  }

  private bucketAt(path: string): Bucket {
    return this.buckets.get(path) ?? this.makeBucket(path);
  }

  private detach(e: Entry): void {
    let b = e.bucket as Bucket;
    e.bucket = null;
    const leaves = b.leaves as Entry[];
    const last = leaves.pop() as Entry;
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

  private makeBucket(path: string): Bucket {
    let b = this.root;
    let at = 0;
    while (at <= path.length) {
      let end = path.indexOf('/', at);
      if (end < 0) end = path.length;
      const level = path.slice(at, end);
      let c = b.children?.get(level);
      if (c === undefined) {
        const p = flat(path.slice(0, end));
        c = new Bucket(p, flat(level), b);
        (b.children ??= new Map()).set(c.level, c);
        this.buckets.set(p, c);
      }
      b = c;
      at = end + 1;
    }
    return b;
  }

  // ---------------------------------------------------------------- the log

  /** Queues a record; resolves when it is durable per the fsync policy (group commit). */
  private append(rec: Buffer): Promise<void> {
    let b = this.batch;
    if (b === null) {
      let resolve = noop;
      let reject: (e: unknown) => void = noop;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const batch: Batch = { bufs: [], bytes: 0, done, resolve, reject };
      this.batch = b = batch;
      // The batch stays open (collecting records) until the writes before it are done.
      void this.exclusive(() => this.flush(batch));
    }
    b.bufs.push(rec);
    b.bytes += rec.length;
    return b.done;
  }

  durable(): Promise<void> {
    if (this.failed !== null) return Promise.reject(this.failed);
    // An open batch is flushed after everything queued before it; otherwise wait for the chain.
    if (this.batch !== null) return this.batch.done;
    return this.exclusive(async () => {
      if (this.failed !== null) throw this.failed;
    });
  }

  get failure(): QisError | null {
    return this.failed;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.then(noop, noop);
    return p;
  }

  private async flush(b: Batch): Promise<void> {
    if (this.batch === b) this.batch = null;
    if (this.failed !== null) return b.reject(this.failed);
    const data = b.bufs.length === 1 ? (b.bufs[0] as Buffer) : Buffer.concat(b.bufs, b.bytes);
    try {
      await writeAll(this.fh, data, this.pos);
      this.pos += data.length;
      this.capture?.push(data);
      if (this.o.fsync === 'always') await this.fh.datasync();
      else this.unsynced = true;
    } catch (e) {
      this.fail(e);
      return b.reject(this.failed);
    }
    b.resolve();
    this.maybeCompact();
  }

  /** After a failed write or sync the page cache cannot be trusted: refuse everything from now on. */
  private fail(e: unknown): void {
    this.failed ??= ioError(`store log ${this.logPath} failed; the store accepts no more writes (close and reopen it)`, e);
  }

  private async syncNow(): Promise<void> {
    if (!this.unsynced || this.failed !== null) return;
    this.unsynced = false;
    try {
      await this.fh.datasync();
    } catch (e) {
      this.fail(e);
    }
  }

  // ---------------------------------------------------------------- open

  async load(t0: number): Promise<void> {
    const size = (await this.fh.stat()).size;
    const r = await this.replay(size);
    await this.loadPackets(r.end);
    this.pos = r.end;
    if (r.end < size) {
      await this.fh.truncate(r.end);
      await this.fh.datasync();
    }
    this.replayBuckets = [];
    this.replayTis = [];
    this.recovery = { records: r.records, tornBytes: size - r.end, damaged: r.damaged, openMs: performance.now() - t0 };
    if (this.o.fsync === 'interval') {
      this.timer = setInterval(() => void this.exclusive(() => this.syncNow()), this.o.fsyncIntervalMs);
      this.timer.unref();
    }
    this.maybeCompact();
  }

  // Reads the log in 8 MiB windows. A position that does not hold a valid record starts a damaged
  // region; the next valid record (found byte by byte) ends it. A damaged region that reaches the
  // end of the file is a torn tail and is cut off.
  private async replay(size: number): Promise<{ end: number; records: number; damaged: Array<{ offset: number; bytes: number }> }> {
    const buf = Buffer.allocUnsafeSlow(Math.max(2 * MAX_FRAME, Math.min(READ_CHUNK, size)));
    this.replayBuckets = new Array<Bucket | undefined>(REPLAY_CACHE).fill(undefined);
    this.replayTis = new Array<TplIndex | undefined>(REPLAY_CACHE).fill(undefined);
    let bufStart = HEADER_BYTES;
    let bufEnd = HEADER_BYTES;
    let pos = HEADER_BYTES;
    let damageAt = -1;
    let records = 0;
    const damaged: Array<{ offset: number; bytes: number }> = [];
    const nowMs = this.o.now();
    for (;;) {
      const atEof = bufEnd >= size;
      const limit = atEof ? bufEnd : bufEnd - MAX_FRAME;
      while (pos < limit) {
        const n = frameAt(buf, pos - bufStart, bufEnd - pos);
        if (n === 0) {
          if (damageAt < 0) damageAt = pos;
          pos++;
          continue;
        }
        if (damageAt >= 0) {
          damaged.push({ offset: damageAt, bytes: pos - damageAt });
          damageAt = -1;
        }
        this.replayRecord(buf, bufStart, pos - bufStart, n, nowMs);
        records++;
        pos += n;
      }
      if (atEof) break;
      // Slide the window to start at pos and fill it.
      buf.copy(buf, 0, pos - bufStart, bufEnd - bufStart);
      let have = bufEnd - pos;
      bufStart = pos;
      while (have < buf.length && bufStart + have < size) {
        const { bytesRead } = await this.fh.read(buf, have, Math.min(buf.length - have, size - bufStart - have), bufStart + have);
        if (bytesRead === 0) break;
        have += bytesRead;
      }
      bufEnd = bufStart + have;
      if (bufEnd < size && have < buf.length) size = bufEnd; // the file shrank under us: stop there
    }
    return { end: damageAt >= 0 ? damageAt : pos, records, damaged };
  }

  // Replay finds a record's bucket (and template) through a small direct-mapped cache keyed by a
  // hash of the topic bytes before the nodeId: a hit, checked byte for byte, spares two strings
  // and two Map lookups per record.
  private replayBuckets: Array<Bucket | undefined> = [];
  private replayTis: Array<TplIndex | undefined> = [];
  // Every put the replay applied, with the file offset of its packet. An entry keeps the offset
  // of its latest packet, so the winners are the pairs that still agree; only their bytes are
  // read (in file order) into memory, not those of packets superseded later in the log.
  private applied: Entry[] = [];
  private appliedAt: number[] = [];

  private async loadPackets(end: number): Promise<void> {
    const buf = Buffer.allocUnsafeSlow(Math.max(2 * MAX_FRAME, Math.min(READ_CHUNK, end)));
    let winStart = 0;
    let winEnd = 0;
    const applied = this.applied;
    const appliedAt = this.appliedAt;
    for (let i = 0; i < applied.length; i++) {
      const e = applied[i] as Entry;
      const at = appliedAt[i] as number;
      if ((e.bucket === null && e.ttopic === null) || e.slab !== null || e.off !== at) continue; // superseded or removed
      if (at + e.len > winEnd) {
        winStart = at;
        const want = Math.min(buf.length, end - at);
        let have = 0;
        while (have < want) {
          const { bytesRead } = await this.fh.read(buf, have, want - have, at + have);
          if (bytesRead === 0) throw new Error(`${this.logPath} shrank while it was being opened`);
          have += bytesRead;
        }
        winEnd = at + have;
      }
      this.keepBytes(e, view(buf, at - winStart, e.len));
    }
    this.applied = [];
    this.appliedAt = [];
  }

  /** Applies the record of n bytes at buf[i]; `base` is the file offset of buf[0]. */
  private replayRecord(buf: Buffer, base: number, i: number, n: number, nowMs: number): void {
    const b = i + FRAME;
    const type = buf.readUInt8(b);
    const seq = readU53(buf, b + 2);
    const x = readU53(buf, b + 10);
    const text = buf.readUInt16LE(b + 18);
    const t = b + FIXED;
    if (type === TYPE_PUT) {
      const pathLen = text - ID_CHARS - 1;
      let h = 0x811c9dc5; // FNV-1a
      for (let k = t; k < t + pathLen; k++) h = Math.imul(h ^ (buf[k] as number), 16777619);
      const slot = h & (REPLAY_CACHE - 1);
      let bucket = this.replayBuckets[slot];
      let ti = this.replayTis[slot];
      if (bucket === undefined || ti === undefined || bucket.dead || !isPath(bucket.path, buf, t, pathLen)) {
        const tpl = buf.toString('latin1', t + 8, t + 8 + ID_CHARS); // 'qis/1/o/' + tplId + …
        ti = this.index.get(tpl) ?? this.tplIndex(tpl);
        bucket = this.bucketAt(buf.toString('latin1', t, t + pathLen));
        this.replayBuckets[slot] = bucket;
        this.replayTis[slot] = ti;
      }
      const at = t + text - ID_CHARS;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      // Log order is acceptance order, so this only skips the duplicates a compaction may write.
      if (e !== undefined && this.blocks(e, seq)) return;
      const len = n - FRAME - FIXED - text;
      const exp = (buf.readUInt8(b + 1) & FLAG_EXP) !== 0 ? x : -1;
      const node = e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS);
      const stored = this.installPut(ti, e, node, bucket, seq, exp, len, n);
      // Bytes are loaded after the replay, for the winners only (see loadPackets).
      stored.off = base + t + text;
      this.applied.push(stored);
      this.appliedAt.push(stored.off);
    } else if (type === TYPE_TOMB) {
      // A removal with its proof: text is the tombstone's topic, then its signed bytes.
      const tpl = buf.toString('latin1', t + 8, t + 8 + ID_CHARS);
      const ti = this.index.get(tpl) ?? this.tplIndex(tpl);
      const at = t + text - ID_CHARS;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      if (e !== undefined && (e.bucket !== null ? seq < e.seq : this.blocks(e, seq))) return;
      const te = this.installTomb(ti, e, e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS), seq, x, n);
      // Past its TTL the proof is not loaded (the next compaction drops it from the log).
      if (!this.forgotten(te, nowMs)) {
        te.ttopic = buf.toString('latin1', t, t + text);
        te.len = n - FRAME - FIXED - text;
        te.off = base + t + text;
        this.applied.push(te);
        this.appliedAt.push(te.off);
      }
    } else {
      // A removal's text is tplId + '/' + nodeId.
      const tpl = buf.toString('latin1', t, t + ID_CHARS);
      const ti = this.index.get(tpl) ?? this.tplIndex(tpl);
      const at = t + ID_CHARS + 1;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      // sweepExpired removes a packet under its own seq, so a removal may equal a live seq.
      if (e !== undefined && (e.bucket !== null ? seq < e.seq : this.blocks(e, seq))) return;
      this.installTomb(ti, e, e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS), seq, x, REMOVE_BYTES);
    }
  }

  // ---------------------------------------------------------------- compaction

  private maybeCompact(): void {
    const o = this.o;
    if (!o.autoCompact || this.compaction !== null || this.closing !== null || this.failed !== null) return;
    if (this.pos < this.nextAutoCompact || this.pos < o.compactMinBytes || this.pos <= o.compactRatio * this.liveBytes) return;
    void this.startCompaction();
  }

  compact(): Promise<void> {
    try {
      this.assertWritable();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.compaction ?? this.startCompaction();
  }

  private startCompaction(): Promise<void> {
    const run = this.runCompaction();
    this.compaction = run;
    run.then(
      () => {
        this.compaction = null;
        this.nextAutoCompact = 0;
      },
      (e: unknown) => {
        this.compaction = null;
        if (this.closing !== null) return;
        this.compactionFailures++;
        this.lastCompactionError = e instanceof Error ? e.message : String(e);
        // Do not retry on every write: wait until the log has grown by another minimum.
        this.nextAutoCompact = this.pos + this.o.compactMinBytes;
      },
    );
    return run;
  }

  // Writes the live state to a temporary file in 1 MiB chunks (appends go on to the old log and
  // are captured), syncs it and copies the captured appends in rounds, then, with appends held
  // only for the last small round, its sync and the rename, switches files. Live packets move to
  // a fresh arena on the way, which frees the memory of superseded ones.
  private async runCompaction(): Promise<void> {
    const tmpPath = join(this.o.dir, TMP_FILE);
    let tmp: FileHandle | undefined;
    this.capture = [];
    this.arena = new Arena();
    const arena = this.arena;
    try {
      tmp = await open(tmpPath, 'w');
      const out = Buffer.allocUnsafeSlow(COMPACT_CHUNK);
      MAGIC.copy(out, 0);
      let o = HEADER_BYTES;
      let filePos = 0;
      const nowMs = this.o.now();
      const t = tmp;
      // Room for one more record, or write the chunk (the only place this loop yields to puts).
      const room = async (): Promise<void> => {
        if (o + MAX_FRAME <= out.length) return;
        await writeAll(t, out.subarray(0, o), filePos);
        filePos += o;
        o = 0;
        if (this.closing !== null) throw ABANDONED;
      };
      // Live packets bucket by bucket (replay then reuses each bucket for its run of records).
      const stack: Bucket[] = [this.root];
      for (let b = stack.pop(); b !== undefined; b = stack.pop()) {
        if (b.leaves !== null) {
          // A copy: swap-remove reorders the array while we wait for writes.
          for (const e of b.leaves.slice()) {
            await room();
            // Moved or removed while we waited: its new record is in the capture.
            if (e.bucket !== b) continue;
            if (!arena.slabs.has(e.slab as Buffer)) {
              const off = arena.alloc(e.len);
              (e.slab as Buffer).copy(arena.slab, off, e.off, e.off + e.len);
              e.slab = arena.slab;
              e.off = off;
            }
            o = writePut(out, o, `${b.path}/${e.node}`, e.seq, e.exp, view(e.slab as Buffer, e.off, e.len));
          }
        }
        if (b.children !== null) for (const c of b.children.values()) stack.push(c);
      }
      // Then every tombstone: its seq floor for ever, its proof (signed bytes) within the TTL;
      // past it the proof is dropped here, from memory too.
      const tombs: Entry[] = [];
      for (const ti of this.index.values()) {
        for (const e of ti.nodes.entries()) {
          if (e.bucket !== null) continue;
          if (e.ttopic !== null && this.forgotten(e, nowMs)) {
            e.ttopic = null;
            e.slab = null;
            this.liveBytes += REMOVE_BYTES - e.rec;
            e.rec = REMOVE_BYTES;
          }
          tombs.push(e);
        }
      }
      for (const e of tombs) {
        await room();
        if (e.bucket !== null) continue; // live again meanwhile: captured
        if (e.ttopic !== null && e.slab !== null) {
          if (!arena.slabs.has(e.slab)) {
            const off = arena.alloc(e.len);
            e.slab.copy(arena.slab, off, e.off, e.off + e.len);
            e.slab = arena.slab;
            e.off = off;
          }
          o = writeTomb(out, o, e.ttopic, e.seq, e.at, view(e.slab, e.off, e.len));
        } else {
          o = writeRemove(out, o, e.tpl, e.node, e.seq, e.at);
        }
      }
      await writeAll(tmp, out.subarray(0, o), filePos);
      filePos += o;
      for (;;) {
        // The bulk is synced while appends flow; only the last small catch-up is synced with them held.
        await tmp.datasync();
        if (this.closing !== null) throw ABANDONED;
        const c = this.capture;
        if (c.reduce((n, x) => n + x.length, 0) < CATCH_UP_BYTES) break;
        this.capture = [];
        const data = Buffer.concat(c);
        await writeAll(tmp, data, filePos);
        filePos += data.length;
      }
      await this.exclusive(async () => {
        const rest = this.capture ?? [];
        this.capture = null;
        if (rest.length > 0) {
          const data = Buffer.concat(rest);
          await writeAll(t, data, filePos);
          filePos += data.length;
        }
        await t.datasync();
        await rename(tmpPath, this.logPath);
        const old = this.fh;
        this.fh = t;
        this.pos = filePos;
        this.unsynced = false;
        tmp = undefined;
        await old.close().catch(noop);
        try {
          await fsyncDir(this.o.dir);
        } catch (e) {
          // The new log is complete but its name may not survive a power loss: stop accepting writes.
          this.fail(e);
          throw this.failed;
        }
      });
      this.compactions++;
    } catch (e) {
      this.capture = null;
      if (tmp !== undefined) {
        await tmp.close().catch(noop);
        await unlink(tmpPath).catch(noop);
      }
      if (e === ABANDONED) throw new QisError('ERR_FILE_IO', 'compaction abandoned: the store is closing');
      throw e instanceof QisError ? e : ioError(`compaction of ${this.logPath} failed (the log is unchanged)`, e);
    }
  }

  // ---------------------------------------------------------------- close

  close(): Promise<void> {
    return (this.closing ??= this.shutdown());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async shutdown(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.compaction !== null) await this.compaction.then(noop, noop);
    let error: QisError | undefined;
    await this.exclusive(async () => {
      try {
        // A clean close is durable whatever the policy.
        if (this.failed === null) await this.fh.datasync();
      } catch (e) {
        error = ioError(`final sync of ${this.logPath} failed`, e);
      }
      await this.fh.close().catch(noop);
    });
    await unlock(this.o.dir);
    if (error !== undefined) throw error;
  }
}

// ------------------------------------------------------------------------------ helpers

function resolveOptions(options: StoreOptions): Resolved {
  if (typeof options !== 'object' || options === null) throw argError('openStore() takes an options object with a dir');
  if (typeof options.dir !== 'string' || options.dir.length === 0) throw argError('openStore(): dir must be a non-empty path');
  const o = { ...STORE_DEFAULTS, ...options, dir: resolve(options.dir) };
  // An explicit undefined means "the default" too.
  for (const k of Object.keys(STORE_DEFAULTS) as Array<keyof typeof STORE_DEFAULTS>) {
    if (o[k] === undefined) Object.assign(o, { [k]: STORE_DEFAULTS[k] });
  }
  if (o.fsync !== 'always' && o.fsync !== 'interval' && o.fsync !== 'never') throw argError(`fsync must be 'always', 'interval' or 'never', not ${show(o.fsync)}`);
  const num = (name: string, v: unknown, min: number, max: number, above = false): void => {
    if (typeof v !== 'number' || !Number.isFinite(v) || (above ? v <= min : v < min) || v > max) {
      throw argError(`${name} must be a number ${above ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}, not ${show(v)}`);
    }
  };
  num('fsyncIntervalMs', o.fsyncIntervalMs, 1, 2 ** 31 - 1);
  num('tombstoneTtlMs', o.tombstoneTtlMs, 0, Number.MAX_SAFE_INTEGER);
  num('compactRatio', o.compactRatio, 1, 1e6, true);
  num('compactMinBytes', o.compactMinBytes, 0, Number.MAX_SAFE_INTEGER);
  if (typeof o.autoCompact !== 'boolean') throw argError(`autoCompact must be a boolean, not ${show(o.autoCompact)}`);
  if (typeof o.now !== 'function') throw argError('now must be a function returning Unix ms');
  return o;
}

/** A put's fields as checked. */
export interface Checked {
  readonly tpl: string;
  readonly node: string;
  readonly seq: number;
  readonly exp: number;
}

/** The boundary check of put(): everything the log and the index rely on (the Redis store uses it too). */
export function checkStoredPacket(p: StoredPacket): Checked {
  if (typeof p !== 'object' || p === null) throw argError('put() takes a StoredPacket');
  let parsed;
  try {
    parsed = parseOutcomeTopic(p.topic);
  } catch (e) {
    throw new QisError('ERR_INVALID_ARGUMENT', `put(): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (p.topic.length > MAX_TOPIC) throw argError(`put(): a topic of ${p.topic.length} characters is longer than ${MAX_TOPIC}`);
  if (p.tplId !== parsed.tplId || p.nodeId !== parsed.nodeId) {
    throw argError(`put(): tplId ${show(p.tplId)} and nodeId ${show(p.nodeId)} are not those of topic ${p.topic}`);
  }
  if (!Number.isSafeInteger(p.seq) || p.seq < 0) throw argError(`put(): seq must be an integer from 0 to 2^53-1, not ${show(p.seq)}`);
  if (!(p.packet instanceof Uint8Array) || p.packet.length < 1 || p.packet.length > MAX_PACKET_BYTES) {
    throw argError(`put(): packet must be 1 to ${MAX_PACKET_BYTES} bytes (a Uint8Array)`);
  }
  if (p.exp !== undefined && (!Number.isSafeInteger(p.exp) || p.exp < 0)) throw argError(`put(): exp must be Unix seconds, not ${show(p.exp)}`);
  return { tpl: parsed.tplId, node: parsed.nodeId, seq: p.seq, exp: p.exp ?? -1 };
}

/** Splits an MQTT filter into levels, checking the wildcard rules of MQTT 3.1.1 §4.7.1. */
export function parseFilter(filter: string): string[] {
  if (typeof filter !== 'string' || filter.length === 0 || filter.length > 65535) throw argError(`match(): ${show(filter)} is not a topic filter`);
  const levels = filter.split('/');
  levels.forEach((l, i) => {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) throw argError(`match(): '#' must be a whole last level, in ${show(filter)}`);
    if (l.includes('+') && l !== '+') throw argError(`match(): '+' must be a whole level, in ${show(filter)}`);
  });
  return levels;
}

async function writeAll(fh: FileHandle, data: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, pos + done);
    if (bytesWritten <= 0) throw new Error('write(2) wrote nothing');
    done += bytesWritten;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Opens the log for reading and positioned writes, creating it (atomically, synced) if absent. */
async function openLog(dir: string): Promise<FileHandle> {
  const path = join(dir, LOG_FILE);
  let fh: FileHandle;
  try {
    fh = await open(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(`cannot open ${path}`, e);
    const tmp = join(dir, TMP_FILE);
    await writeFile(tmp, MAGIC, { flush: true });
    await rename(tmp, path);
    await fsyncDir(dir);
    fh = await open(path, 'r+');
  }
  try {
    const head = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, HEADER_BYTES, 0);
    if (!head.subarray(0, bytesRead).equals(MAGIC.subarray(0, bytesRead))) {
      throw new QisError('ERR_FILE_IO', `${path} is not a qis store log (format QISLOG v1); move it away or choose another dir`);
    }
    if (bytesRead < HEADER_BYTES) {
      // Cut inside the header (it was never written whole): an empty log.
      await fh.write(MAGIC, 0, HEADER_BYTES, 0);
      await fh.truncate(HEADER_BYTES);
      await fh.datasync();
    }
    return fh;
  } catch (e) {
    await fh.close().catch(noop);
    throw e;
  }
}

// One store per directory: two writers appending at their own offsets would destroy each other's
// records. The lock file names the owner (pid, start time, boot id: lockOwnerText); a lock whose
// process is gone (kill -9, or a power cut after which its pid went to another process) is taken over.
const lockedDirs = new Set<string>();

async function lock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  if (lockedDirs.has(dir)) throw new QisError('ERR_FILE_IO', `store ${dir} is already open in this process`);
  const mine = await lockOwnerText();
  try {
    await writeFile(path, mine, { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(`cannot create lock ${path}`, e);
    const { pid, alive } = await lockOwner(await readFile(path, 'utf8').catch(() => ''));
    if (pid !== undefined && pid !== process.pid && alive) {
      throw new QisError('ERR_FILE_IO', `store ${dir} is in use by process ${pid} (${path})`);
    }
    try {
      await writeFile(path, mine);
    } catch (e2) {
      throw ioError(`cannot take over lock ${path}`, e2);
    }
  }
  lockedDirs.add(dir);
}

async function unlock(dir: string): Promise<void> {
  if (!lockedDirs.delete(dir)) return;
  await unlink(join(dir, LOCK_FILE)).catch(noop);
}

function ioError(what: string, cause: unknown): QisError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new QisError('ERR_FILE_IO', `${what}: ${why}`, { cause });
}

export function argError(message: string): QisError {
  return new QisError('ERR_INVALID_ARGUMENT', message);
}

/** A value for an error message, cut short. */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  return `(a ${typeof v})`;
}

/**
 * File names inside a store directory and the size of the log header, for tools and tests that
 * inspect the files (docs/store.md describes the format).
 * @example const log = join(dir, STORE_FILES.log)
 */
export const STORE_FILES = Object.freeze({ log: LOG_FILE, lock: LOCK_FILE, temp: TMP_FILE, headerBytes: HEADER_BYTES });
