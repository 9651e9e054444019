/**
 * Opening the log: the replay of its records into the memory (state.ts) and the recovery from
 * torn tails and damaged regions (docs/store.md, "Open: replay and recovery").
 */
import type { FileHandle } from 'node:fs/promises';
import { ID_CHARS } from './common.js';
import { FIXED, FLAG_COLD, FLAG_EXP, FRAME, HEADER_BYTES, MAX_FRAME, REMOVE_BYTES, TYPE_PUT, TYPE_TOMB, frameAt, isPath, readU53, view } from './format.js';
import { hashIdAt, type TplIndex } from './keys.js';
import type { Entry, LogState } from './state.js';
import type { Bucket } from './trie.js';

const READ_CHUNK = 8 * 1024 * 1024;
const REPLAY_CACHE = 1 << 16; // a power of two; 0.5 MiB of pointers, only during open

export interface Replayed {
  /** Where the valid log ends: anything after it is a torn tail. */
  readonly end: number;
  readonly records: number;
  readonly damaged: Array<{ offset: number; bytes: number }>;
}

/** Replays the log (`size` bytes) into `s`, then loads the bytes of the packets that won. */
export async function replayLog(s: LogState, fh: FileHandle, path: string, size: number, nowMs: number): Promise<Replayed> {
  const r = new Replay(s, fh, path, nowMs);
  const res = await r.scan(size);
  await r.loadPackets(res.end);
  return res;
}

class Replay {
  // Replay finds a record's bucket (and template) through a small direct-mapped cache keyed by a
  // hash of the topic bytes before the nodeId: a hit, checked byte for byte, spares two strings
  // and two Map lookups per record.
  private readonly buckets = new Array<Bucket<Entry> | undefined>(REPLAY_CACHE).fill(undefined);
  private readonly tis = new Array<TplIndex<Entry> | undefined>(REPLAY_CACHE).fill(undefined);
  // Every put the replay applied, with the file offset of its packet. An entry keeps the offset
  // of its latest packet, so the winners are the pairs that still agree; only their bytes are
  // read (in file order) into memory, not those of packets superseded later in the log.
  private readonly applied: Entry[] = [];
  private readonly appliedAt: number[] = [];

  constructor(
    private readonly s: LogState,
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly nowMs: number,
  ) {}

  // Reads the log in 8 MiB windows. A position that does not hold a valid record starts a damaged
  // region; the next valid record (found byte by byte) ends it. A damaged region that reaches the
  // end of the file is a torn tail and is cut off.
  async scan(size: number): Promise<Replayed> {
    const buf = Buffer.allocUnsafeSlow(Math.max(2 * MAX_FRAME, Math.min(READ_CHUNK, size)));
    let bufStart = HEADER_BYTES;
    let bufEnd = HEADER_BYTES;
    let pos = HEADER_BYTES;
    let damageAt = -1;
    let records = 0;
    const damaged: Array<{ offset: number; bytes: number }> = [];
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
        this.record(buf, bufStart, pos - bufStart, n);
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

  async loadPackets(end: number): Promise<void> {
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
          if (bytesRead === 0) throw new Error(`${this.path} shrank while it was being opened`);
          have += bytesRead;
        }
        winEnd = at + have;
      }
      this.s.keepBytes(e, view(buf, at - winStart, e.len));
    }
  }

  /** The node table of the template whose id is buf[at, at+26). */
  private tableAt(buf: Buffer, at: number): TplIndex<Entry> {
    const tpl = buf.toString('latin1', at, at + ID_CHARS);
    return this.s.index.table(tpl) ?? this.s.index.addTable(tpl);
  }

  /** Applies the record of n bytes at buf[i]; `base` is the file offset of buf[0]. */
  private record(buf: Buffer, base: number, i: number, n: number): void {
    const s = this.s;
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
      let bucket = this.buckets[slot];
      let ti = this.tis[slot];
      if (bucket === undefined || ti === undefined || bucket.dead || !isPath(bucket.path, buf, t, pathLen)) {
        ti = this.tableAt(buf, t + 8); // 'qis/1/o/' + tplId + …
        bucket = s.trie.bucketAt(buf.toString('latin1', t, t + pathLen));
        this.buckets[slot] = bucket;
        this.tis[slot] = ti;
      }
      const at = t + text - ID_CHARS;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      // Log order is acceptance order, so this only skips the duplicates a compaction may write.
      if (e !== undefined && s.blocks(e, seq)) return;
      const len = n - FRAME - FIXED - text;
      const exp = (buf.readUInt8(b + 1) & FLAG_EXP) !== 0 ? x : -1;
      const node = e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS);
      const stored = s.installPut(ti, e, node, bucket, seq, exp, len, n);
      // Bytes are loaded after the replay, for the winners only (see loadPackets).
      stored.off = base + t + text;
      this.applied.push(stored);
      this.appliedAt.push(stored.off);
    } else if (type === TYPE_TOMB) {
      // A removal with its proof: text is the tombstone's topic, then its signed bytes.
      const ti = this.tableAt(buf, t + 8);
      const at = t + text - ID_CHARS;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      if (e !== undefined && (e.bucket !== null ? seq < e.seq : s.blocks(e, seq))) return;
      const te = s.installTomb(ti, e, e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS), seq, x, n, (buf.readUInt8(b + 1) & FLAG_COLD) !== 0);
      // Past its TTL the proof is not loaded (the next compaction drops it from the log).
      if (!s.forgotten(te, this.nowMs)) {
        te.ttopic = buf.toString('latin1', t, t + text);
        te.len = n - FRAME - FIXED - text;
        te.off = base + t + text;
        this.applied.push(te);
        this.appliedAt.push(te.off);
      }
    } else {
      // A removal's text is tplId + '/' + nodeId.
      const ti = this.tableAt(buf, t);
      const at = t + ID_CHARS + 1;
      const e = ti.nodes.getAt(buf, at, hashIdAt(buf, at));
      // sweepExpired removes a packet under its own seq, so a removal may equal a live seq.
      if (e !== undefined && (e.bucket !== null ? seq < e.seq : s.blocks(e, seq))) return;
      s.installTomb(ti, e, e !== undefined ? e.node : buf.toString('latin1', at, at + ID_CHARS), seq, x, REMOVE_BYTES, (buf.readUInt8(b + 1) & FLAG_COLD) !== 0);
    }
  }
}
