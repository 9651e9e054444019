/**
 * The store's public types (the {@link Store} contract both stores implement: broker/store/log-store.ts
 * on disk, broker/cluster.ts over Redis) and the defaults of {@link StoreOptions}.
 */
import type { QisError } from '../../src/index.js';

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

/** A (template, node)'s seq and whether it is deleted, before or after a change. */
export interface KeyState {
  readonly seq: number;
  readonly del: boolean;
}
/**
 * Told of every change to the keys ({@link Store.keys}) as it happens: `before` undefined for a
 * new key, `after` undefined for a key the store forgets.
 */
export type KeyWatcher = (tplId: string, nodeId: string, before: KeyState | undefined, after: KeyState | undefined) => void;

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
  /**
   * Cold floors kept at most: tombstones of (template, node) keys that never held a packet in
   * this store (a stranger can mint those for free). Beyond, such a tombstone is refused
   * (`remove` answers `{full: true}`); past the tombstone TTL the next compaction forgets them.
   * Default 100,000. docs/store.md, "Floors for keys never held".
   */
  readonly maxColdFloors?: number;
}

export type PutResult = { stored: true; replaced?: StoredPacket } | { stored: false; reason: 'stale' };
/** `full`: a tombstone for a key never held here, refused because `maxColdFloors` are kept already. */
export type RemoveResult = { removed?: StoredPacket } | { stale: true } | { full: true };

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
  /** Of those, cold floors: deletions of keys that never held a packet here (at most maxColdFloors). */
  readonly coldFloors: number;
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
   * Calls `fn` on every later change to the keys (federation digests kept up to date instead of
   * recomputed); returns the function that stops it. Nothing is paid while no one watches.
   */
  watchKeys?(fn: KeyWatcher): () => void;
  /**
   * Stores p if p.seq > seqOf(…); returns what it replaced (its topic may differ: a bucket move)
   * or 'stale'. The index changes at once; the promise resolves when the record is durable per
   * the fsync policy. `indexed`, if given, is called with the same result as soon as it is known
   * and the index holds it: for the log store synchronously, inside the call, before the record
   * is durable (a federation hop relays a peer's packet then: docs/protocol-choices.md,
   * "Federation"); for a store that learns the result only with its durable write (Redis), just
   * before the promise resolves, which gains a hop nothing.
   * @throws QisError ERR_INVALID_ARGUMENT (malformed p) | ERR_FILE_IO (closed, or the log failed)
   */
  put(p: StoredPacket, indexed?: (r: PutResult) => void): Promise<PutResult>;
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
  maxColdFloors: 100_000,
});

/** Options with every default filled in (resolveOptions in broker/store/log-store.ts). */
export type Resolved = Omit<Required<StoreOptions>, 'dir'> & { readonly dir: string };
