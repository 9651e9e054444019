/**
 * Several broker processes as one region over Redis (`cluster: redis://…`).
 *
 * - {@link openRedisStore}: the same {@link Store} as broker/store.ts, with Redis as the source of
 *   truth. Each process keeps a mirror in memory (index (template, node) → packet or tombstone,
 *   and a topic-level trie for `match`), loaded at open and kept current through a Redis pub/sub
 *   channel on which every change is announced. Reads (`seqOf`, `get`, `match`) are served from
 *   the mirror, synchronously; writes (`put`, `remove`, the expiry sweep) run a Lua script that
 *   compares the seq held in Redis with the new one, writes, and publishes the change in one
 *   atomic step. So "one packet per node per template, the highest seq" holds across all the
 *   processes: when two race, the one that reaches Redis second gets `stale`.
 * - {@link createClusterParts}: what Aedes needs besides the store: an mqemitter-redis (a publish
 *   on one process reaches the subscribers of every process) and aedes-persistence-redis
 *   (sessions, offline queues and ordinary retained messages shared).
 *
 * Durability is Redis's: `put` resolves (and the broker PUBACKs) once Redis has replied. For the
 * PUBACK-after-durable guarantee of the single-process store, run Redis with
 * `appendonly yes` and `appendfsync always`; with `everysec` up to a second of acknowledged
 * packets can be lost with the Redis host (not with a broker process: they are in Redis).
 *
 * Consistency between processes: a write is in Redis (and its announcement on its way to every
 * mirror) when its promise resolves; another process's mirror shows it as soon as the
 * announcement arrives (typically well under a millisecond on a LAN). Every record carries a
 * region-wide version (a Redis counter) and a mirror only ever applies a newer version, so
 * announcements and replies may arrive in any order. When the subscription connection drops,
 * the mirror reloads everything from Redis on reconnect.
 *
 * Redis data (prefix default `qis:store:`): hash `<prefix>e` field `<tplId>/<nodeId>` →
 * `K|ver|seq|exp|at|topic|packet` (K = L live, T tombstone; exp Unix s or -1; at Unix ms of a
 * deletion or -1; the packet bytes raw), counter `<prefix>ver`, channel `<prefix>events`
 * (messages `<tplId>/<nodeId>|<value>`, or `…|F|ver|…` when a tombstone past its TTL is dropped).
 */
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { Redis, type RedisOptions } from 'ioredis';
import { QisError, isNodeId, isTplId } from '../src/index.js';
import { STORE_DEFAULTS, argError, checkStoredPacket, parseFilter, show, type PutResult, type RecoveryReport, type RemoveResult, type Store, type StoreStats, type StoredPacket, type Tombstone } from './store.js';

// ------------------------------------------------------------------------------ public API

export interface RedisStoreOptions {
  /** Prefix of the store's keys and channel, so several regions (or tests) can share one Redis. Default `qis:store:`. */
  readonly keyPrefix?: string;
  /** The clock, Unix ms. Default `Date.now`. */
  readonly now?: () => number;
  /** How long a deletion blocks older packets. Default 30 days (as broker/store.ts). */
  readonly tombstoneTtlMs?: number;
  /** Shown in `CLIENT LIST` (e.g. the broker id). */
  readonly name?: string;
  /** Connection errors (ioredis reconnects by itself; writes meanwhile fail with ERR_FILE_IO). Default: ignored. */
  readonly onError?: (error: Error, where: string) => void;
}

export const REDIS_STORE_DEFAULTS = Object.freeze({ keyPrefix: 'qis:store:', tombstoneTtlMs: STORE_DEFAULTS.tombstoneTtlMs });

/**
 * Opens the Redis-backed store on `url` (`redis://` or `rediss://`) and loads its mirror.
 * @throws QisError ERR_INVALID_ARGUMENT (options) | ERR_FILE_IO (Redis unreachable or failing)
 * @example
 * await using store = await openRedisStore('redis://10.0.0.5:6379');
 * const r = await store.put(p); // resolves once Redis has it; r.stored === false: a newer seq won
 */
export async function openRedisStore(url: string, options: RedisStoreOptions = {}): Promise<Store> {
  if (typeof url !== 'string' || !/^rediss?:\/\/./.test(url)) throw argError(`openRedisStore(): expected a redis:// or rediss:// URL, not ${show(url)}`);
  const prefix = options.keyPrefix ?? REDIS_STORE_DEFAULTS.keyPrefix;
  const ttl = options.tombstoneTtlMs ?? REDIS_STORE_DEFAULTS.tombstoneTtlMs;
  const now = options.now ?? Date.now;
  if (typeof prefix !== 'string') throw argError('keyPrefix must be a string');
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) throw argError(`tombstoneTtlMs must be a number ≥ 0, not ${show(ttl)}`);
  if (typeof now !== 'function') throw argError('now must be a function returning Unix ms');
  const t0 = performance.now();
  const name = connectionName('store', options.name);
  // A write whose connection dropped before the reply fails (ERR_FILE_IO: no PUBACK, the node
  // resends) instead of being sent again behind the caller's back.
  const base: RedisOptions = { lazyConnect: true, maxRetriesPerRequest: 3, autoResendUnfulfilledCommands: false, connectionName: name };
  const cmd = new Redis(url, base);
  const sub = new Redis(url, { ...base, connectionName: `${name}-sub`, autoResubscribe: false, maxRetriesPerRequest: null });
  // Errors surface through the commands that fail; the connections reconnect by themselves.
  cmd.on('error', (e: Error) => options.onError?.(e, 'store'));
  sub.on('error', (e: Error) => options.onError?.(e, 'store-sub'));
  const store = new RedisStore(cmd, sub, prefix, ttl, now, url);
  try {
    await Promise.all([cmd.connect(), sub.connect()]);
    await store.start(t0);
    return store;
  } catch (e) {
    cmd.disconnect();
    sub.disconnect();
    throw e instanceof QisError ? e : ioError(`cannot open the Redis store at ${redact(url)}`, e);
  }
}

/** Whether `store` is one {@link openRedisStore} opened (a broker running with `cluster`). */
export function isRedisStore(store: Store): boolean {
  return store instanceof RedisStore;
}

/** An Aedes persistence, as far as the broker and {@link ClusterParts} use one (aedes-persistence's API). */
export interface ClusterPersistence {
  setup(broker: unknown): Promise<void>;
  storeRetained(packet: { readonly topic: string }): Promise<void>;
  createRetainedStreamCombi(patterns: string[]): Readable;
  createRetainedStream(pattern: string): Readable;
  destroy(): Promise<void>;
}

export interface ClusterParts {
  /** For `Aedes.createBroker({ mq })`: an mqemitter-redis; `aedes.close()` closes it. */
  readonly mq: unknown;
  /** For `Aedes.createBroker({ persistence })`: aedes-persistence-redis (sessions, offline queues, ordinary retained messages). */
  readonly persistence: ClusterPersistence;
  /** The region's outcome-packet store. */
  readonly store: Store;
  /** Destroys the persistence, closes mq (if Aedes has not) and the store. Call after `aedes.close()`. Idempotent. */
  close(): Promise<void>;
}

export interface ClusterPartsOptions extends Omit<RedisStoreOptions, 'name'> {
  /** Prefix of the Redis channels MQTT traffic travels on; must end with '/'. Default `qis:mq/`. */
  readonly mqPrefix?: string;
  /** MQTT messages delivered at once by the bus (Aedes' `concurrency`). Default 100. */
  readonly concurrency?: number;
}

/**
 * What a broker process needs to be one of several serving a region from one Redis: the message
 * bus, the Aedes persistence and the store.
 *
 * MQTT traffic travels on Redis channels under `mqPrefix` (mqemitter-redis' prefixed emitter),
 * so no MQTT topic maps onto another Redis channel (the store's, or anyone else's): a client
 * cannot publish into the store's channel, and a subscription to `#` does not pattern-subscribe
 * to every channel of the Redis.
 * @throws QisError ERR_INVALID_ARGUMENT | ERR_FILE_IO (Redis unreachable)
 * @example
 * const parts = await createClusterParts('redis://10.0.0.5:6379', 'broker-1');
 * const aedes = await Aedes.createBroker({ mq: parts.mq, persistence: parts.persistence });
 * // … on shutdown:
 * await new Promise((r) => aedes.close(r)); await parts.close();
 */
export async function createClusterParts(url: string, brokerId: string, options: ClusterPartsOptions = {}): Promise<ClusterParts> {
  const mqPrefix = options.mqPrefix ?? 'qis:mq/';
  if (typeof mqPrefix !== 'string' || !mqPrefix.endsWith('/')) throw argError(`mqPrefix must end with '/' (a topic level of its own), not ${show(mqPrefix)}`);
  const { mqPrefix: _, concurrency = 100, ...storeOptions } = options;
  const require = createRequire(import.meta.url);
  const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: new (prefix: string, o: object) => MqEmitter };
  const persistenceRedis = require('aedes-persistence-redis') as (o: { conn: Redis }) => ClusterPersistence;
  const store = await openRedisStore(url, { ...storeOptions, name: brokerId });
  const connect = (role: string): Redis => {
    const r = new Redis(url, { maxRetriesPerRequest: 3, connectionName: connectionName(role, brokerId) });
    r.on('error', (e: Error) => options.onError?.(e, role));
    return r;
  };
  const mq = new MQEmitterRedisPrefix(mqPrefix, {
    subConn: connect('mq-sub'),
    pubConn: connect('mq-pub'),
    concurrency,
    matchEmptyLevels: true, // [MQTT-4.7.1-3], as Aedes' default emitter
  });
  mq.state.on('error', (e) => options.onError?.(e, 'mq'));
  const conn = connect('persistence');
  const persistence = persistenceRedis({ conn });
  let closing: Promise<void> | undefined;
  return {
    mq,
    persistence,
    store,
    close: () =>
      (closing ??= (async () => {
        // destroy() unsubscribes from the broker's mq (closed by then: that fails quietly) and
        // disconnects its Redis connection; it rejects if setup() never ran. Bounded either way.
        await Promise.race([persistence.destroy().catch(noop), new Promise((r) => setTimeout(r, 2000).unref())]);
        conn.disconnect();
        await closeMq(mq);
        await store.close();
      })()),
  };
}

// ------------------------------------------------------------------------------ Lua

// Each script: KEYS[1] = the entries hash, KEYS[2] = the version counter. Returns
// {1, new value, previous value or ''} when it wrote, {0, '', current value or ''} when not.
// A header is `K|ver|seq|exp|at|`; seqs are compared as numbers (exact to 2^53 in Lua's doubles).
const HEAD = "'^(%u)|%d+|(%d+)|(%-?%d+)|(%-?%d+)|'";

/** ARGV: field, seq, exp, topic, packet, now ms, tombstone TTL ms, channel. */
const PUT_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local k, s, e, at = string.match(cur, ${HEAD})
  if tonumber(ARGV[2]) <= tonumber(s) and not (k == 'T' and tonumber(at) + tonumber(ARGV[7]) <= tonumber(ARGV[6])) then
    return {0, '', cur}
  end
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'L|' .. ver .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|-1|' .. ARGV[4] .. '|' .. ARGV[5]
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[8], ARGV[1] .. '|' .. val)
return {1, val, cur or ''}
`;

/** ARGV: field, seq, now ms, tombstone TTL ms, channel. */
const REMOVE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local k, s, e, at = string.match(cur, ${HEAD})
  if tonumber(ARGV[2]) <= tonumber(s) and not (k == 'T' and tonumber(at) + tonumber(ARGV[4]) <= tonumber(ARGV[3])) then
    return {0, '', cur}
  end
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'T|' .. ver .. '|' .. ARGV[2] .. '|-1|' .. ARGV[3] .. '||'
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[5], ARGV[1] .. '|' .. val)
return {1, val, cur or ''}
`;

/** The expiry sweep of one packet. ARGV: field, seq, now ms, channel. Only a live packet with that seq whose exp has passed. */
const EXPIRE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, '', ''} end
local k, s, e, at = string.match(cur, ${HEAD})
if k ~= 'L' or s ~= ARGV[2] or tonumber(e) < 0 or tonumber(ARGV[3]) <= tonumber(e) * 1000 then
  return {0, '', cur}
end
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'T|' .. ver .. '|' .. s .. '|-1|' .. ARGV[3] .. '||'
redis.call('HSET', KEYS[1], ARGV[1], val)
redis.call('PUBLISH', ARGV[4], ARGV[1] .. '|' .. val)
return {1, val, cur}
`;

/** Drops a tombstone past its TTL. ARGV: field, now ms, tombstone TTL ms, channel. */
const PRUNE_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, '', ''} end
local k, s, e, at = string.match(cur, ${HEAD})
if k ~= 'T' or tonumber(at) + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {0, '', cur} end
redis.call('HDEL', KEYS[1], ARGV[1])
local ver = string.format('%d', redis.call('INCR', KEYS[2]))
local val = 'F|' .. ver .. '|' .. s .. '|-1|' .. at .. '||'
redis.call('PUBLISH', ARGV[4], ARGV[1] .. '|' .. val)
return {1, val, cur}
`;

type ScriptReply = [number, Buffer, Buffer];
interface ScriptedRedis extends Redis {
  qisPutBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisRemoveBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisExpireBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
  qisPruneBuffer(...args: (string | Buffer)[]): Promise<ScriptReply>;
}

// ------------------------------------------------------------------------------ records

const ID_CHARS = 26;
/** `<tplId>/<nodeId>` */
const FIELD_CHARS = 2 * ID_CHARS + 1;
const PIPE = 0x7c;
const MAX_TOPIC = 1024;

interface Rec {
  readonly kind: 'L' | 'T' | 'F';
  readonly ver: number;
  readonly seq: number;
  readonly exp: number;
  readonly at: number;
  readonly topic: string;
  /** A view into the buffer the record was decoded from. */
  readonly packet: Buffer;
}

/** Decodes `K|ver|seq|exp|at|topic|packet` starting at buf[from]; undefined when malformed. */
function decodeRec(buf: Buffer, from = 0): Rec | undefined {
  const cuts: number[] = [];
  let i = from;
  while (cuts.length < 6) {
    const j = buf.indexOf(PIPE, i);
    if (j < 0) return undefined;
    cuts.push(j);
    i = j + 1;
  }
  const [c0, c1, c2, c3, c4, c5] = cuts as [number, number, number, number, number, number];
  const kind = buf.toString('latin1', from, c0);
  if ((kind !== 'L' && kind !== 'T' && kind !== 'F') || c0 !== from + 1) return undefined;
  const ver = Number(buf.toString('latin1', c0 + 1, c1));
  const seq = Number(buf.toString('latin1', c1 + 1, c2));
  const exp = Number(buf.toString('latin1', c2 + 1, c3));
  const at = Number(buf.toString('latin1', c3 + 1, c4));
  if (![ver, seq, exp, at].every(Number.isSafeInteger)) return undefined;
  const topic = buf.toString('latin1', c4 + 1, c5);
  const packet = buf.subarray(c5 + 1);
  if (kind === 'L' && (topic.length === 0 || packet.length === 0)) return undefined;
  return { kind, ver, seq, exp, at, topic, packet };
}

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
  bucket: TrieNode | null = null;
  topic = '';
  packet: Buffer = EMPTY;
  /** Bytes of its value in Redis. */
  bytes = 0;
  constructor(
    readonly tpl: string,
    readonly node: string,
  ) {}
}

/** One topic level; `leaves` are the packets whose topic is this path + '/' + nodeId, by nodeId. */
class TrieNode {
  children: Map<string, TrieNode> | null = null;
  leaves: Map<string, Entry> | null = null;
  constructor(
    readonly path: string,
    readonly level: string,
    readonly parent: TrieNode | null,
  ) {}
}

const EMPTY = Buffer.alloc(0);
const STALE = Object.freeze({ stored: false, reason: 'stale' }) as PutResult;
const noop = (): void => {};

class RedisStore implements Store {
  private readonly index = new Map<string, Entry>();
  private readonly root = new TrieNode('', '', null);
  private readonly buckets = new Map<string, TrieNode>();
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
    const cur = this.index.get(field);
    if (cur !== undefined && cur.ver >= r.ver) return false;
    if (r.kind === 'F') {
      if (cur !== undefined) this.forget(field, cur);
      return true;
    }
    const tpl = field.slice(0, ID_CHARS);
    const node = field.slice(ID_CHARS + 1);
    // A live record's topic is the field's template and node (the trie and getByTopic rely on it).
    if (r.kind === 'L' && !(r.topic.startsWith(`qis/1/o/${tpl}/`) && r.topic.endsWith(`/${node}`) && r.topic.length <= MAX_TOPIC)) return false;
    const e = cur ?? new Entry(tpl, node);
    if (cur === undefined) this.index.set(field, e);
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
    if (e.bucket !== null && e.bucket.path !== path) this.detach(e);
    if (e.bucket === null) {
      const b = this.bucketAt(path);
      (b.leaves ??= new Map()).set(e.node, e);
      e.bucket = b;
    }
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
    if (e.bucket !== null) this.detach(e);
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

  private forget(field: string, e: Entry): void {
    this.unaccount(e);
    if (e.bucket !== null) this.detach(e);
    this.index.delete(field);
  }

  private bucketAt(path: string): TrieNode {
    const known = this.buckets.get(path);
    if (known !== undefined) return known;
    let b = this.root;
    let at = 0;
    while (at <= path.length) {
      let end = path.indexOf('/', at);
      if (end < 0) end = path.length;
      const level = path.slice(at, end);
      let c = b.children?.get(level);
      if (c === undefined) {
        c = new TrieNode(path.slice(0, end), level, b);
        (b.children ??= new Map()).set(level, c);
        this.buckets.set(c.path, c);
      }
      b = c;
      at = end + 1;
    }
    return b;
  }

  /** Takes e out of its bucket and prunes trie nodes left empty. */
  private detach(e: Entry): void {
    let b = e.bucket as TrieNode;
    e.bucket = null;
    b.leaves?.delete(e.node);
    while (b.parent !== null && (b.leaves === null || b.leaves.size === 0) && (b.children === null || b.children.size === 0)) {
      b.parent.children?.delete(b.level);
      this.buckets.delete(b.path);
      b = b.parent;
    }
  }

  // ---------------------------------------------------------------- reads (the mirror)

  get size(): number {
    return this.liveCount;
  }

  private forgotten(e: Entry, nowMs: number): boolean {
    return e.at + this.ttl <= nowMs;
  }

  private expired(e: Entry, nowMs: number): boolean {
    return e.exp >= 0 && nowMs > e.exp * 1000; // same rule as broker/store.ts and verifyPacket
  }

  private blocks(e: Entry, seq: number): boolean {
    if (seq > e.seq) return false;
    return !(e.bucket === null && e.at >= 0 && this.forgotten(e, this.now()));
  }

  private view(e: Entry): StoredPacket {
    return e.exp >= 0
      ? { tplId: e.tpl, nodeId: e.node, topic: e.topic, seq: e.seq, packet: e.packet, exp: e.exp }
      : { tplId: e.tpl, nodeId: e.node, topic: e.topic, seq: e.seq, packet: e.packet };
  }

  seqOf(tplId: string, nodeId: string): number | undefined {
    const e = this.index.get(`${tplId}/${nodeId}`);
    if (e === undefined || (e.bucket === null && this.forgotten(e, this.now()))) return undefined;
    return e.seq;
  }

  get(tplId: string, nodeId: string): StoredPacket | undefined {
    const e = this.index.get(`${tplId}/${nodeId}`);
    return e === undefined || e.bucket === null || this.expired(e, this.now()) ? undefined : this.view(e);
  }

  getByTopic(topic: string): StoredPacket | undefined {
    if (typeof topic !== 'string' || topic.length < 8 + FIELD_CHARS + 2) return undefined;
    const e = this.index.get(`${topic.slice(8, 8 + ID_CHARS)}/${topic.slice(topic.length - ID_CHARS)}`);
    if (e === undefined || e.bucket === null || e.topic !== topic) return undefined;
    return this.expired(e, this.now()) ? undefined : this.view(e);
  }

  tombstone(tplId: string, nodeId: string): Tombstone | undefined {
    const e = this.index.get(`${tplId}/${nodeId}`);
    if (e === undefined || e.bucket !== null || this.forgotten(e, this.now())) return undefined;
    return { tplId: e.tpl, nodeId: e.node, seq: e.seq, at: e.at };
  }

  match(filter: string): Iterable<StoredPacket> {
    const levels = parseFilter(filter);
    return this.walk(this.root, levels, 0, this.now());
  }

  // MQTT 3.1.1 §4.7 over the trie, as in broker/store.ts: `node` stands for the first i topic
  // levels and its leaves are topics of i+1 levels (the last level is the nodeId).
  private *walk(node: TrieNode, f: readonly string[], i: number, nowMs: number): Generator<StoredPacket> {
    const lvl = f[i] as string;
    if (lvl === '#') {
      yield* this.all(node, nowMs);
      return;
    }
    const last = i === f.length - 1;
    if (node.leaves !== null && (last || (i === f.length - 2 && f[i + 1] === '#'))) {
      if (lvl === '+') {
        for (const e of [...node.leaves.values()]) if (!this.expired(e, nowMs)) yield this.view(e);
      } else {
        const e = node.leaves.get(lvl);
        if (e !== undefined && !this.expired(e, nowMs)) yield this.view(e);
      }
    }
    if (last || node.children === null) return;
    if (lvl === '+') {
      for (const c of [...node.children.values()]) yield* this.walk(c, f, i + 1, nowMs);
    } else {
      const c = node.children.get(lvl);
      if (c !== undefined) yield* this.walk(c, f, i + 1, nowMs);
    }
  }

  private *all(node: TrieNode, nowMs: number): Generator<StoredPacket> {
    // Copies: the mirror may change between two yields (an event arrives while the caller awaits).
    if (node.leaves !== null) for (const e of [...node.leaves.values()]) if (!this.expired(e, nowMs)) yield this.view(e);
    if (node.children !== null) for (const c of [...node.children.values()]) yield* this.all(c, nowMs);
  }

  stats(): StoreStats {
    return {
      live: this.liveCount,
      tombstones: this.tombs.size,
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
    const packet = Buffer.from(r.packet);
    return r.exp >= 0 ? { tplId, nodeId, topic: r.topic, seq: r.seq, packet, exp: r.exp } : { tplId, nodeId, topic: r.topic, seq: r.seq, packet };
  }

  async put(p: StoredPacket): Promise<PutResult> {
    this.assertOpen();
    const v = checkStoredPacket(p);
    const field = `${v.tpl}/${v.node}`;
    const e = this.index.get(field);
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
    if (typeof t !== 'object' || t === null) throw argError('remove() takes { tplId, nodeId, seq }');
    if (typeof t.tplId !== 'string' || !isTplId(t.tplId)) throw argError(`remove(): ${show(t.tplId)} is not a template id`);
    if (typeof t.nodeId !== 'string' || !isNodeId(t.nodeId)) throw argError(`remove(): ${show(t.nodeId)} is not a node id`);
    if (!Number.isSafeInteger(t.seq) || t.seq < 0) throw argError(`remove(): seq must be an integer from 0 to 2^53-1, not ${show(t.seq)}`);
    const field = `${t.tplId}/${t.nodeId}`;
    const e = this.index.get(field);
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
    if (nowMs !== undefined && (!Number.isFinite(nowMs) || nowMs < 0)) throw argError(`sweepExpired(): nowMs must be a Unix time in ms, not ${show(nowMs)}`);
    const now = nowMs ?? this.now();
    const at = String(Math.max(0, Math.floor(now)));
    const victims = [...this.expiring].filter((e) => this.expired(e, now));
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

// ------------------------------------------------------------------------------ helpers

interface MqEmitter {
  readonly state: { on(event: 'error', f: (e: Error) => void): void };
  readonly closed?: boolean;
  close(cb: () => void): void;
}

function closeMq(mq: MqEmitter): Promise<void> {
  if (mq.closed) return Promise.resolve();
  return new Promise((resolve) => mq.close(() => resolve()));
}

/** A CLIENT SETNAME name (no spaces or quotes allowed there). */
function connectionName(role: string, id: string | undefined): string {
  return `qis-${role}${id !== undefined ? `-${id}` : ''}`.replace(/[^\w.:-]/g, '_').slice(0, 128);
}

/** The URL without a password, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

function ioError(what: string, cause: unknown): QisError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new QisError('ERR_FILE_IO', `${what}: ${why}`, { cause });
}

