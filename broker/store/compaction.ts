/**
 * Compaction: when to rewrite the log (the rule of docs/store.md, "Compaction") and the rewrite
 * itself, without stopping puts: the live state goes to a temporary file, the appends made
 * meanwhile are captured by the log and copied after it, and the files are switched.
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { QisError } from '../../src/index.js';
import { ioError, noop } from './common.js';
import { fsyncDir, writeAll, type Fs } from './files.js';
import { HEADER_BYTES, MAGIC, MAX_FRAME, REMOVE_BYTES, TMP_FILE, view, writePut, writeRemove, writeTomb } from './format.js';
import type { Log } from './log.js';
import { Arena, type Entry, type LogState } from './state.js';
import type { Bucket } from './trie.js';
import type { Resolved } from './types.js';

const COMPACT_CHUNK = 1024 * 1024;
// Records written to the old log during a compaction are copied to the new one in rounds until
// fewer than this remain; the last round runs with appends held, so it must be short.
const CATCH_UP_BYTES = 256 * 1024;
const ABANDONED = Symbol('compaction abandoned');

export class Compaction {
  /** The compaction in progress. */
  running: Promise<void> | null = null;
  count = 0;
  failures = 0;
  lastError: string | undefined;
  private nextAuto = 0;

  /** @param closing whether the store is closing (a compaction then stops at its next step) */
  constructor(
    private readonly s: LogState,
    private readonly log: Log,
    private readonly o: Resolved,
    private readonly closing: () => boolean,
    private readonly fs: Fs,
  ) {}

  /** Starts a compaction in the background when the rule says so. */
  maybe(): void {
    const o = this.o;
    if (!o.autoCompact || this.running !== null || this.closing() || this.log.failure !== null) return;
    const pos = this.log.pos;
    if (pos < this.nextAuto || pos < o.compactMinBytes || pos <= o.compactRatio * this.s.liveBytes) return;
    void this.start();
  }

  /** The running compaction, or a new one. */
  now(): Promise<void> {
    return this.running ?? this.start();
  }

  private start(): Promise<void> {
    const run = this.run();
    this.running = run;
    run.then(
      () => {
        this.running = null;
        this.nextAuto = 0;
      },
      (e: unknown) => {
        this.running = null;
        if (this.closing()) return;
        this.failures++;
        this.lastError = e instanceof Error ? e.message : String(e);
        // Do not retry on every write: wait until the log has grown by another minimum.
        this.nextAuto = this.log.pos + this.o.compactMinBytes;
      },
    );
    return run;
  }

  // Writes the live state to a temporary file in 1 MiB chunks (appends go on to the old log and
  // are captured), syncs it and copies the captured appends in rounds, then, with appends held
  // only for the last small round, its sync and the rename, switches files. Live packets move to
  // a fresh arena on the way, which frees the memory of superseded ones.
  private async run(): Promise<void> {
    const tmpPath = join(this.o.dir, TMP_FILE);
    const log = this.log;
    let tmp: FileHandle | undefined;
    log.capture = [];
    this.s.arena = new Arena();
    try {
      tmp = await this.fs.open(tmpPath, 'w');
      const t = tmp;
      let filePos = await this.writeSnapshot(t);
      filePos = await this.catchUp(t, filePos);
      await log.exclusive(async () => {
        const rest = log.capture ?? [];
        log.capture = null;
        if (rest.length > 0) {
          const data = Buffer.concat(rest);
          await writeAll(t, data, filePos);
          filePos += data.length;
        }
        await t.datasync();
        await this.fs.rename(tmpPath, log.path);
        const old = log.switchTo(t, filePos);
        tmp = undefined;
        await old.close().catch(noop);
        try {
          await fsyncDir(this.fs, this.o.dir);
        } catch (e) {
          // The new log is complete but its name may not survive a power loss: stop accepting writes.
          throw log.fail(e);
        }
      });
      this.count++;
    } catch (e) {
      log.capture = null;
      if (tmp !== undefined) {
        await tmp.close().catch(noop);
        await this.fs.unlink(tmpPath).catch(noop);
      }
      if (e === ABANDONED) throw new QisError('ERR_FILE_IO', 'compaction abandoned: the store is closing');
      throw e instanceof QisError ? e : ioError(`compaction of ${log.path} failed (the log is unchanged)`, e);
    }
  }

  /** Writes the header, every live packet and every tombstone to `t`; returns the bytes written. */
  private async writeSnapshot(t: FileHandle): Promise<number> {
    const s = this.s;
    const arena = s.arena;
    const out = Buffer.allocUnsafeSlow(COMPACT_CHUNK);
    MAGIC.copy(out, 0);
    let o = HEADER_BYTES;
    let filePos = 0;
    const nowMs = this.o.now();
    // Room for one more record, or write the chunk (the only place this loop yields to puts).
    const room = async (): Promise<void> => {
      if (o + MAX_FRAME <= out.length) return;
      await writeAll(t, out.subarray(0, o), filePos);
      filePos += o;
      o = 0;
      if (this.closing()) throw ABANDONED;
    };
    // Live packets bucket by bucket (replay then reuses each bucket for its run of records).
    const stack: Array<Bucket<Entry>> = [s.trie.root];
    for (let b = stack.pop(); b !== undefined; b = stack.pop()) {
      if (b.leaves !== null) {
        // A copy: swap-remove reorders the array while we wait for writes.
        for (const e of b.leaves.slice()) {
          await room();
          // Moved or removed while we waited: its new record is in the capture.
          if (e.bucket !== b) continue;
          arena.adopt(e);
          o = writePut(out, o, `${b.path}/${e.node}`, e.seq, e.exp, view(e.slab as Buffer, e.off, e.len));
        }
      }
      if (b.children !== null) for (const c of b.children.values()) stack.push(c);
    }
    // Then every tombstone: its seq floor for ever, its proof (signed bytes) within the TTL;
    // past it the proof is dropped here, from memory too.
    const tombs: Entry[] = [];
    for (const e of s.index.entries()) {
      if (e.bucket !== null) continue;
      // A cold floor (the key never held a packet here) past the TTL is forgotten with its proof.
      if (e.cold && s.forgotten(e, nowMs)) {
        s.forgetCold(e);
        continue;
      }
      if (e.ttopic !== null && s.forgotten(e, nowMs)) {
        e.ttopic = null;
        e.slab = null;
        s.liveBytes += REMOVE_BYTES - e.rec;
        e.rec = REMOVE_BYTES;
      }
      tombs.push(e);
    }
    for (const e of tombs) {
      await room();
      if (e.bucket !== null) continue; // live again meanwhile: captured
      if (e.ttopic !== null && e.slab !== null) {
        arena.adopt(e);
        o = writeTomb(out, o, e.ttopic, e.seq, e.at, view(e.slab, e.off, e.len), e.cold);
      } else {
        o = writeRemove(out, o, e.tpl, e.node, e.seq, e.at, e.cold);
      }
    }
    await writeAll(t, out.subarray(0, o), filePos);
    return filePos + o;
  }

  /** Copies what was appended meanwhile in rounds, each synced, until little is left; returns the file's size. */
  private async catchUp(t: FileHandle, filePos: number): Promise<number> {
    for (;;) {
      // The bulk is synced while appends flow; only the last small catch-up is synced with them held.
      await t.datasync();
      if (this.closing()) throw ABANDONED;
      const c = this.log.capture ?? [];
      if (c.reduce((n, x) => n + x.length, 0) < CATCH_UP_BYTES) return filePos;
      this.log.capture = [];
      const data = Buffer.concat(c);
      await writeAll(t, data, filePos);
      filePos += data.length;
    }
  }
}
