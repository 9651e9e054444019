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
 * The store is broker/cluster/redis-store.ts (its index and trie are those of broker/store/keys.ts
 * and trie.ts), its data and Lua scripts broker/cluster/records.ts.
 *
 * Redis data (prefix default `qis:store:`): hash `<prefix>e` field `<tplId>/<nodeId>` →
 * `K|ver|seq|exp|at|topic|packet` (K = L live, T tombstone; exp Unix s or -1; at Unix ms of a
 * deletion or -1; the packet bytes raw), counter `<prefix>ver`, channel `<prefix>events`
 * (messages `<tplId>/<nodeId>|<value>`, or `…|F|ver|…` when a tombstone past its TTL is dropped).
 */
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { Redis, type RedisOptions } from 'ioredis';
import { QisError } from '../src/index.js';
import { RedisStore, redact } from './cluster/redis-store.js';
import { argError, ioError, noop, show } from './store/common.js';
import { STORE_DEFAULTS, type Store } from './store.js';

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

