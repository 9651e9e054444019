/**
 * The Redis-backed {@link Store} (broker/cluster.ts describes the design): Redis is the source of
 * truth, each process keeps a mirror in memory (the key index and the topic trie of broker/store/,
 * shared with the log store) kept current by the announcements of every change.
 */
import type { Redis } from 'ioredis';
import { QisError } from '../../src/index.js';
import { ID_CHARS, MAX_TOPIC, STALE, checkRemove, checkStoredPacket, checkSweepNow, expired, ioError, noop, packetOf } from '../store/common.js';
import { KeyIndex } from '../store/keys.js';
import { Trie, type Bucket } from '../store/trie.js';
import type { PutResult, RecoveryReport, RemoveResult, Store, StoreStats, StoredPacket, Tombstone } from '../store/types.js';
import { EXPIRE_LUA, FIELD_CHARS, PIPE, PRUNE_LUA, PUT_LUA, REMOVE_LUA, decodeRec, type Rec, type ScriptReply, type ScriptedRedis } from './records.js';

// ------------------------------------------------------------------------------ the mirror

/** One (template, node) in the mirror: its live packet, or its tombstone. */
class Entry {
  ver = 0;
  seq = 0;
  /** Live: exp in Unix s, -1 when none. */
  exp = -1;
  /** Tombstone: Unix ms of the deletion; -1 while live. */
  at = -1;
  /** Live: the trie node of its bucket; null: a tombstone. */
  bucket: Bucket<Entry> | null = null;
  /** Live: its index in bucket.leaves. */
  slot = 0;
  topic = '';
  packet: Buffer = EMPTY;
  /** Bytes of its value in Redis. */
  bytes = 0;
  constructor(
    readonly tpl: string,
    readonly node: string,
  ) {}
}

const EMPTY = Buffer.alloc(0);

export class RedisStore implements Store {
  private readonly index = new KeyIndex<Entry>();
  private readonly trie = new Trie<Entry>(
    (e) => this.view(e),
    (tpl, node) => this.index.get(tpl, node),
  );
  private readonly expiring = new Set<Entry>();
  private readonly tombs = new Set<Entry>();
  private readonly hash: string;
  private readonly counter: string;
  private readonly channel: string;
  private liveCount = 0;
  private liveBytes = 0;
  private packetBytes = 0;
  private started = false;
  private resyncing: Promise<void> | null = null;
  private resyncWanted = false;
  private closing: Promise<void> | null = null;
  recovery: RecoveryReport = { records: 0, tornBytes: 0, damaged: [], openMs: 0 };

  constructor(
    private readonly cmd: Redis,
    private readonly sub: Redis,
    prefix: string,
    private readonly ttl: number,
    private readonly now: () => number,
    private readonly url: string,
  ) {
    this.hash = `${prefix}e`;
    this.counter = `${prefix}ver`;
    this.channel = `${prefix}events`;
    const keys = { numberOfKeys: 2 };
    cmd.defineCommand('qisPut', { ...keys, lua: PUT_LUA });
    cmd.defineCommand('qisRemove', { ...keys, lua: REMOVE_LUA });
    cmd.defineCommand('qisExpire', { ...keys, lua: EXPIRE_LUA });
    cmd.defineCommand('qisPrune', { ...keys, lua: PRUNE_LUA });
  }

  /** Subscribes first, then loads: a change made during the load arrives as an event (versions sort out the overlap). */
  async start(t0: number): Promise<void> {
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString('latin1') === this.channel) this.onEvent(message);
    });
    await this.sub.subscribe(this.channel);
    const records = await this.load();
    this.started = true;
    // After a reconnect, events sent while it was down are lost: subscribe again and reload.
    this.sub.on('ready', () => {
      if (this.closing !== null || !this.started) return;
      this.resync();
    });
    this.recovery = { records, tornBytes: 0, damaged: [], openMs: performance.now() - t0 };
  }

  /** Subscribes again and reloads; runs again if another reconnect happened meanwhile, retries while it fails. */
  private resync(): void {
    this.resyncWanted = true;
    if (this.resyncing !== null) return;
    this.resyncing = (async () => {
      while (this.resyncWanted && this.closing === null) {
        this.resyncWanted = false;
        try {
          await this.sub.subscribe(this.channel);
          await this.load();
        } catch {
          this.resyncWanted = true;
          await new Promise((r) => setTimeout(r, 500).unref());
        }
      }
      this.resyncing = null;
    })();
  }

  /** Reads every record in Redis into the mirror; returns how many there were. */
  private async load(): Promise<number> {
    let cursor = '0';
    let n = 0;
    do {
      const [next, flat] = (await this.cmd.hscanBuffer(this.hash, cursor, 'COUNT', 1000)) as unknown as [Buffer, Buffer[]];
      cursor = next.toString('latin1');
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const field = (flat[i] as Buffer).toString('latin1');
        if (this.applyValue(field, flat[i + 1] as Buffer)) n++;
      }
    } while (cursor !== '0');
    return n;
  }

  private onEvent(message: Buffer): void {
    if (message.length <= FIELD_CHARS || message[FIELD_CHARS] !== PIPE) return;
    this.applyValue(message.toString('latin1', 0, FIELD_CHARS), message.subarray(FIELD_CHARS + 1));
  }

  /** Applies a record from Redis to the mirror if it is newer than what the mirror has. */
  private applyValue(field: string, value: Buffer): boolean {
    if (field.length !== FIELD_CHARS || field.charCodeAt(ID_CHARS) !== 47) return false;
    const r = decodeRec(value);
    if (r === undefined) return false;
    const tpl = field.slice(0, ID_CHARS);
    const node = field.slice(ID_CHARS + 1);
    const cur = this.index.get(tpl, node);
    if (cur !== undefined && cur.ver >= r.ver) return false;
    if (r.kind === 'F') {
      if (cur !== undefined) this.forget(cur);
      return true;
    }
    // A live record's topic is the field's template and node (the trie and getByTopic rely on it).
    if (r.kind === 'L' && !(r.topic.startsWith(`qis/1/o/${tpl}/`) && r.topic.endsWith(`/${node}`) && r.topic.length <= MAX_TOPIC)) return false;
    let e = cur;
    if (e === undefined) {
      e = new Entry(tpl, node);
      (this.index.table(tpl) ?? this.index.addTable(tpl)).nodes.add(e);
    }
    if (r.kind === 'L') this.installLive(e, r, value.length);
    else this.installTomb(e, r, value.length);
    return true;
  }

  private unaccount(e: Entry): void {
    if (e.bucket !== null) {
      this.liveCount--;
      this.packetBytes -= e.packet.length;
      if (e.exp >= 0) this.expiring.delete(e);
    } else if (e.at >= 0) {
      this.tombs.delete(e);
    }
    this.liveBytes -= e.bytes;
  }

  private installLive(e: Entry, r: Rec, bytes: number): void {
    this.unaccount(e);
    const path = r.topic.slice(0, r.topic.lastIndexOf('/'));
    if (e.bucket !== null && e.bucket.path !== path) this.trie.detach(e);
    if (e.bucket === null) this.trie.attach(e, this.trie.bucketAt(path));
    e.ver = r.ver;
    e.seq = r.seq;
    e.exp = r.exp;
    e.at = -1;
    e.topic = r.topic;
    // Its own copy: the decoded view would keep the whole reply or message buffer alive.
    e.packet = Buffer.from(r.packet);
    e.bytes = bytes;
    this.liveCount++;
    this.packetBytes += e.packet.length;
    this.liveBytes += bytes;
    if (e.exp >= 0) this.expiring.add(e);
  }

  private installTomb(e: Entry, r: Rec, bytes: number): void {
    this.unaccount(e);
    if (e.bucket !== null) this.trie.detach(e);
    e.ver = r.ver;
    e.seq = r.seq;
    e.exp = -1;
    e.at = r.at;
    e.topic = '';
    e.packet = EMPTY;
    e.bytes = bytes;
    this.liveBytes += bytes;
    this.tombs.add(e);
  }

  private forget(e: Entry): void {
    this.unaccount(e);
    if (e.bucket !== null) this.trie.detach(e);
    this.index.delete(e);
  }

  // ---------------------------------------------------------------- reads (the mirror)

  get size(): number {
    return this.liveCount;
  }

  private forgotten(e: Entry, nowMs: number): boolean {
    return e.at + this.ttl <= nowMs;
  }

  private blocks(e: Entry, seq: number): boolean {
    if (seq > e.seq) return false;
    return !(e.bucket === null && e.at >= 0 && this.forgotten(e, this.now()));
  }

  private view(e: Entry): StoredPacket {
    return packetOf(e.tpl, e.node, e.topic, e.seq, e.packet, e.exp);
  }

  seqOf(tplId: string, nodeId: string): number | undefined {
    const e = this.index.get(tplId, nodeId);
    if (e === undefined || (e.bucket === null && this.forgotten(e, this.now()))) return undefined;
    return e.seq;
  }

  get(tplId: string, nodeId: string): StoredPacket | undefined {
    const e = this.index.get(tplId, nodeId);
    return e === undefined || e.bucket === null || expired(e, this.now()) ? undefined : this.view(e);
  }

  getByTopic(topic: string): StoredPacket | undefined {
    if (typeof topic !== 'string' || topic.length < 8 + FIELD_CHARS + 2) return undefined;
    const e = this.index.get(topic.slice(8, 8 + ID_CHARS), topic.slice(topic.length - ID_CHARS));
    if (e === undefined || e.bucket === null || e.topic !== topic) return undefined;
    return expired(e, this.now()) ? undefined : this.view(e);
  }

  tombstone(tplId: string, nodeId: string): Tombstone | undefined {
    const e = this.index.get(tplId, nodeId);
    if (e === undefined || e.bucket !== null || this.forgotten(e, this.now())) return undefined;
    return { tplId: e.tpl, nodeId: e.node, seq: e.seq, at: e.at };
  }

  match(filter: string): Iterable<StoredPacket> {
    return this.trie.match(filter, this.now());
  }

  stats(): StoreStats {
    return {
      live: this.liveCount,
      tombstones: this.tombs.size,
      coldFloors: 0, // the Redis store does not tell cold floors apart (docs/security.md, what remains open)
      logBytes: 0, // no log of its own: the data is in Redis
      liveBytes: this.liveBytes,
      compactions: 0,
      compactionFailures: 0,
      memoryBytes: this.packetBytes,
      tornBytes: 0,
      damagedBytes: 0,
    };
  }

  // ---------------------------------------------------------------- writes (Redis first)

  private assertOpen(): void {
    if (this.closing !== null) throw new QisError('ERR_FILE_IO', `the Redis store at ${redact(this.url)} is closed`);
  }

  private async run(what: string, call: () => Promise<ScriptReply>): Promise<ScriptReply> {
    try {
      return await call();
    } catch (e) {
      throw ioError(`Redis store ${what} failed (${redact(this.url)})`, e);
    }
  }

  /** Applies a script's reply to the mirror and returns the record it replaced (or the current one, when it did not write). */
  private settle(field: string, reply: ScriptReply): Rec | undefined {
    const [wrote, val, other] = reply;
    if (wrote === 1) this.applyValue(field, val);
    else if (other.length > 0) this.applyValue(field, other); // the mirror was behind: catch up
    return other.length > 0 ? decodeRec(other) : undefined;
  }

  private stored(tplId: string, nodeId: string, r: Rec | undefined): StoredPacket | undefined {
    if (r === undefined || r.kind !== 'L') return undefined;
    return packetOf(tplId, nodeId, r.topic, r.seq, Buffer.from(r.packet), r.exp);
  }

  async put(p: StoredPacket, indexed?: (r: PutResult) => void): Promise<PutResult> {
    const r = await this.#put(p);
    // Redis answers once: the result is known, indexed and durable (per Redis' own policy) together.
    indexed?.(r);
    return r;
  }

  async #put(p: StoredPacket): Promise<PutResult> {
    this.assertOpen();
    const v = checkStoredPacket(p);
    const field = `${v.tpl}/${v.node}`;
    const e = this.index.get(v.tpl, v.node);
    // The mirror is never ahead of Redis: what it calls stale, Redis would too.
    if (e !== undefined && this.blocks(e, v.seq)) return STALE;
    const packet = Buffer.from(p.packet.buffer, p.packet.byteOffset, p.packet.byteLength);
    const reply = await this.run('put', () =>
      (this.cmd as ScriptedRedis).qisPutBuffer(this.hash, this.counter, field, String(v.seq), String(v.exp), p.topic, packet, String(this.clock()), String(this.ttl), this.channel),
    );
    const prev = this.settle(field, reply);
    if (reply[0] !== 1) return STALE;
    const replaced = this.stored(v.tpl, v.node, prev);
    return replaced !== undefined ? { stored: true, replaced } : { stored: true };
  }

  async remove(t: { readonly tplId: string; readonly nodeId: string; readonly seq: number }): Promise<RemoveResult> {
    this.assertOpen();
    checkRemove(t);
    const field = `${t.tplId}/${t.nodeId}`;
    const e = this.index.get(t.tplId, t.nodeId);
    if (e !== undefined && this.blocks(e, t.seq)) return { stale: true };
    const reply = await this.run('remove', () =>
      (this.cmd as ScriptedRedis).qisRemoveBuffer(this.hash, this.counter, field, String(t.seq), String(this.clock()), String(this.ttl), this.channel),
    );
    const prev = this.settle(field, reply);
    if (reply[0] !== 1) return { stale: true };
    const removed = this.stored(t.tplId, t.nodeId, prev);
    return removed !== undefined ? { removed } : {};
  }

  /**
   * Turns the packets whose exp has passed into tombstones (in Redis, so every process's mirror
   * follows) and drops tombstones past their TTL. Several processes may sweep at once: each
   * packet is swept by one of them, and only that one returns it.
   */
  async sweepExpired(nowMs?: number): Promise<StoredPacket[]> {
    this.assertOpen();
    checkSweepNow(nowMs);
    const now = nowMs ?? this.now();
    const at = String(Math.max(0, Math.floor(now)));
    const victims = [...this.expiring].filter((e) => expired(e, now));
    const cmd = this.cmd as ScriptedRedis;
    const swept = await Promise.all(
      victims.map(async (e) => {
        const field = `${e.tpl}/${e.node}`;
        const reply = await this.run('sweep', () => cmd.qisExpireBuffer(this.hash, this.counter, field, String(e.seq), at, this.channel));
        const prev = this.settle(field, reply);
        return reply[0] === 1 ? this.stored(e.tpl, e.node, prev) : undefined;
      }),
    );
    const old = [...this.tombs].filter((e) => this.forgotten(e, now));
    await Promise.all(
      old.map(async (e) => {
        const field = `${e.tpl}/${e.node}`;
        this.settle(field, await this.run('prune', () => cmd.qisPruneBuffer(this.hash, this.counter, field, at, String(this.ttl), this.channel)));
      }),
    );
    return swept.filter((p): p is StoredPacket => p !== undefined);
  }

  /** Nothing to rewrite: Redis holds the data (its own AOF rewrite compacts its log). */
  /** Every write resolved only after Redis replied: durable as Redis's persistence makes it. */
  durable(): Promise<void> {
    return Promise.resolve();
  }

  readonly failure: QisError | null = null;

  async compact(): Promise<void> {
    this.assertOpen();
  }

  private clock(): number {
    return Math.max(0, Math.floor(this.now()));
  }

  close(): Promise<void> {
    return (this.closing ??= (async () => {
      // Writes already sent are answered before QUIT's reply; a Redis that is down gets a second.
      const quit = Promise.all([this.cmd.quit().catch(noop), this.sub.quit().catch(noop)]);
      await Promise.race([quit, new Promise((r) => setTimeout(r, 1000).unref())]);
      this.cmd.disconnect();
      this.sub.disconnect();
    })());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}


/** The URL without a password, for messages. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
