/**
 * The log store: {@link openStore} and the {@link Store} it returns, which ties the parts
 * together: the memory (state.ts) answers reads and takes every change at once; each change is a
 * record appended to the log (log.ts); the open replays the log (replay.ts); the compaction
 * (compaction.ts) rewrites it.
 */
import type { FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { QisError } from '../../src/index.js';
import { ID_CHARS, STALE, argError, checkRemove, checkStoredPacket, checkSweepNow, expired, ioError, noop, show } from './common.js';
import { Compaction } from './compaction.js';
import { lock, openLog, unlock, type Fs } from './files.js';
import { LOG_FILE, REMOVE_BYTES, TMP_FILE, putBytes, writePut, writeRemove, writeTomb } from './format.js';
import type { TplIndex } from './keys.js';
import { Log } from './log.js';
import { replayLog } from './replay.js';
import { LogState, type Entry } from './state.js';
import { flat } from './trie.js';
import { STORE_DEFAULTS, type PutResult, type RecoveryReport, type RemoveResult, type Resolved, type Store, type StoreOptions, type StoreStats, type StoredPacket } from './types.js';

/** openStore of broker/store.ts, over the file system `fs`. */
export async function openLogStore(options: StoreOptions, fs: Fs): Promise<Store> {
  const o = resolveOptions(options);
  const t0 = performance.now();
  try {
    await fs.mkdir(o.dir, { recursive: true });
  } catch (e) {
    throw ioError(`cannot create store directory ${o.dir}`, e);
  }
  await lock(fs, o.dir);
  let fh: FileHandle | undefined;
  try {
    // A compaction that did not reach its rename: the log it was to replace is complete.
    await fs.rm(join(o.dir, TMP_FILE), { force: true });
    fh = await openLog(fs, o.dir);
    const store = new LogStore(o, fh, fs);
    await store.load(fh, t0);
    return store;
  } catch (e) {
    await fh?.close().catch(noop);
    await unlock(fs, o.dir);
    throw e instanceof QisError ? e : ioError(`cannot open store in ${o.dir}`, e);
  }
}

class LogStore extends LogState implements Store {
  private readonly o: Resolved;
  private readonly log: Log;
  private readonly compaction: Compaction;
  private closing: Promise<void> | null = null;
  recovery: RecoveryReport = { records: 0, tornBytes: 0, damaged: [], openMs: 0 };

  constructor(
    o: Resolved,
    fh: FileHandle,
    private readonly fs: Fs,
  ) {
    super(o.now, o.tombstoneTtlMs);
    this.o = o;
    this.log = new Log(fh, join(o.dir, LOG_FILE), o.fsync, () => this.compaction.maybe());
    this.compaction = new Compaction(this, this.log, o, () => this.closing !== null, fs);
  }

  get failure(): QisError | null {
    return this.log.failure;
  }

  stats(): StoreStats {
    const damagedBytes = this.recovery.damaged.reduce((n, d) => n + d.bytes, 0);
    const c = this.compaction;
    return {
      live: this.liveCount,
      tombstones: this.tombCount,
      coldFloors: this.coldCount,
      logBytes: this.log.pos,
      liveBytes: this.liveBytes,
      compactions: c.count,
      compactionFailures: c.failures,
      ...(c.lastError !== undefined ? { lastCompactionError: c.lastError } : {}),
      memoryBytes: this.arena.bytes,
      tornBytes: this.recovery.tornBytes,
      damagedBytes,
    };
  }

  // ---------------------------------------------------------------- writes

  async put(p: StoredPacket, indexed?: (r: PutResult) => void): Promise<PutResult> {
    this.assertWritable();
    const v = checkStoredPacket(p);
    const ti = this.index.table(v.tpl);
    const e = ti?.nodes.get(v.node);
    if (e !== undefined && this.blocks(e, v.seq)) {
      indexed?.(STALE);
      return STALE;
    }
    const replaced = e !== undefined && e.bucket !== null ? this.view(e) : undefined;
    const rec = Buffer.allocUnsafe(putBytes(p.topic.length, p.packet.length));
    writePut(rec, 0, p.topic, v.seq, v.exp, p.packet);
    const bucket = this.trie.bucketAt(p.topic.slice(0, p.topic.length - ID_CHARS - 1));
    const stored = this.installPut(ti ?? this.index.addTable(flat(v.tpl)), e, e?.node ?? flat(v.node), bucket, v.seq, v.exp, p.packet.length, rec.length);
    this.keepBytes(stored, p.packet);
    const durable = this.log.append(rec);
    const r: PutResult = replaced !== undefined ? { stored: true, replaced } : { stored: true };
    try {
      indexed?.(r);
    } finally {
      await durable;
    }
    return r;
  }

  async remove(t: { readonly tplId: string; readonly nodeId: string; readonly seq: number; readonly topic?: string; readonly packet?: Uint8Array }): Promise<RemoveResult> {
    this.assertWritable();
    checkRemove(t);
    const ti = this.index.table(t.tplId);
    const e = ti?.nodes.get(t.nodeId);
    if (e !== undefined && this.blocks(e, t.seq)) return { stale: true };
    // A key never held here: its floor is cold, and cold floors are bounded (a stranger mints them for free).
    const cold = e === undefined || e.cold;
    if (e === undefined && this.coldCount >= this.o.maxColdFloors) return { full: true };
    const removed = e !== undefined && e.bucket !== null ? this.view(e) : undefined;
    const at = this.clock();
    let proof: { topic: string; packet: Uint8Array } | undefined;
    if (t.topic !== undefined || t.packet !== undefined) {
      checkStoredPacket({ tplId: t.tplId, nodeId: t.nodeId, topic: t.topic as string, seq: t.seq, packet: t.packet as Uint8Array });
      proof = { topic: flat(t.topic as string), packet: t.packet as Uint8Array };
    }
    const rec = Buffer.allocUnsafe(proof ? putBytes(proof.topic.length, proof.packet.length) : REMOVE_BYTES);
    if (proof) writeTomb(rec, 0, proof.topic, t.seq, at, proof.packet, cold);
    else writeRemove(rec, 0, t.tplId, t.nodeId, t.seq, at, cold);
    const te = this.installTomb(ti ?? this.index.addTable(flat(t.tplId)), e, e?.node ?? flat(t.nodeId), t.seq, at, rec.length, cold);
    if (proof) {
      te.ttopic = proof.topic;
      te.len = proof.packet.length;
      this.keepBytes(te, proof.packet);
    }
    await this.log.append(rec);
    return removed !== undefined ? { removed } : {};
  }

  async sweepExpired(nowMs?: number): Promise<StoredPacket[]> {
    this.assertWritable();
    checkSweepNow(nowMs);
    const now = nowMs ?? this.o.now();
    const at = Math.max(0, Math.floor(now));
    const victims = [...this.expiring].filter((e) => expired(e, now));
    const gone: StoredPacket[] = [];
    let durable: Promise<void> | undefined;
    for (const e of victims) {
      gone.push(this.view(e));
      // A tombstone keeps the seq: a peer still holding an older packet cannot bring it back (§8).
      const rec = Buffer.allocUnsafe(REMOVE_BYTES);
      writeRemove(rec, 0, e.tpl, e.node, e.seq, at);
      this.installTomb(this.index.table(e.tpl) as TplIndex<Entry>, e, e.node, e.seq, at, REMOVE_BYTES);
      durable = this.log.append(rec); // all land in the same or an earlier batch than the last one
    }
    if (durable !== undefined) await durable;
    return gone;
  }

  durable(): Promise<void> {
    return this.log.durable();
  }

  compact(): Promise<void> {
    try {
      this.assertWritable();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.compaction.now();
  }

  private clock(): number {
    return Math.max(0, Math.floor(this.o.now()));
  }

  private assertWritable(): void {
    if (this.closing !== null) throw new QisError('ERR_FILE_IO', `store ${this.o.dir} is closed`);
    const failed = this.log.failure;
    if (failed !== null) throw failed;
  }

  // ---------------------------------------------------------------- open and close

  async load(fh: FileHandle, t0: number): Promise<void> {
    const size = (await fh.stat()).size;
    const r = await replayLog(this, fh, this.log.path, size, this.o.now());
    this.log.pos = r.end;
    if (r.end < size) {
      await fh.truncate(r.end);
      await fh.datasync();
    }
    this.recovery = { records: r.records, tornBytes: size - r.end, damaged: r.damaged, openMs: performance.now() - t0 };
    if (this.o.fsync === 'interval') this.log.startTimer(this.o.fsyncIntervalMs);
    this.compaction.maybe();
  }

  close(): Promise<void> {
    return (this.closing ??= this.shutdown());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async shutdown(): Promise<void> {
    this.log.stopTimer();
    if (this.compaction.running !== null) await this.compaction.running.then(noop, noop);
    try {
      await this.log.close();
    } finally {
      await unlock(this.fs, this.o.dir);
    }
  }
}

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
  num('maxColdFloors', o.maxColdFloors, 0, Number.MAX_SAFE_INTEGER);
  if (typeof o.autoCompact !== 'boolean') throw argError(`autoCompact must be a boolean, not ${show(o.autoCompact)}`);
  if (typeof o.now !== 'function') throw argError('now must be a function returning Unix ms');
  return o;
}

