/**
 * The regional broker: Aedes 1.x with PROTOCOL §6 admission, one packet per node per template in
 * a durable store, sync markers held until a client's retained delivery is written (§7), and
 * ordinary MQTT traffic under an ACL.
 *
 * How a qis packet flows: Aedes calls `authorizePublish`; admission verifies it (worker threads),
 * checks seq against the store and writes it durably; only then does the callback return, and
 * Aedes writes the PUBACK after it. So a PUBACK always follows a durable write.
 */
import { readdir, readFile, mkdir } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { Aedes, type Client } from 'aedes';
import type { IPublishPacket } from 'mqtt-packet';

/** The PUBLISH Aedes hands to authorizePublish (mutable: admission rewrites topic and retain). */
type AedesPublishPacket = IPublishPacket;
import { pino, type Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { QisError, topicMatches, verifyScorePacket, writeFileDurable, type ErrorCode } from '../src/index.js';
import {
  BROKER_INFO_TOPIC,
  RateLimiter,
  aclAllows,
  aclAllowsSubscribe,
  checkConnect,
  checkRate,
  checkSync,
  checkTemplateDoc,
  classify,
  decide,
  filtersOverlap,
  isDecision,
  precheckOutcome,
  precheckScore,
  scoreStoreFilter,
  scoreStoreTopic,
  scoreTopicOfStored,
  type Decision,
} from './admission.js';
import { createMetrics, type Metrics } from './metrics.js';
import { serveConsole } from './console.js';
import { resolveBrokerOptions } from './config.js';
import type { BrokerConfig, BrokerOptions, ListenerOptions } from './options.js';
import { createClusterParts } from './cluster.js';
import { openStore, type Store, type StoredPacket } from './store.js';
import { createVerifier, defaultWorkers, type Verifier } from './verifier.js';
import { FEDERATION_PREFIX, FED_REQ, FED_RES, LINK_CLIENT_PREFIX, answerPayload, notNewer, parsePut, startFederation, type Federation, type PeerAdmission } from './federation.js';

/** Where a dropped (stale) publish is sent instead of its topic: nobody may subscribe here. */
const DROP_TOPIC = '$qis/dropped';
/** Longest a sync marker is held waiting for retained delivery (a safety net; normally ms). */
const SYNC_HOLD_LIMIT_MS = 30_000;
/** Largest template document (a template is a few hundred bytes of JSON). */
const MAX_TEMPLATE_BYTES = 64 * 1024;
/** Most template documents one broker keeps. */
const MAX_TEMPLATES = 10_000;

export interface BrokerAddress {
  readonly type: ListenerOptions['type'] | 'http';
  readonly host: string;
  readonly port: number;
  readonly path?: string;
}

export interface QisBroker extends AsyncDisposable {
  readonly options: BrokerOptions;
  readonly aedes: Aedes;
  readonly store: Store;
  /** Score packets (PROTOCOL §9), one per (template, node), in `<dataDir>/scores`. */
  readonly scoreStore: Store;
  readonly logger: Logger;
  /** The links to other regions (undefined without `federation` in the options). */
  readonly federation: Federation | undefined;
  /** Where each listener (and the HTTP endpoint) is bound; ports are real when 0 was asked. */
  addresses(): BrokerAddress[];
  /** Prometheus text exposition of the broker's metrics. */
  metricsText(): Promise<string>;
  close(): Promise<void>;
}

export interface BrokerDeps {
  /** A pino logger to use instead of one built from `options.log`. */
  readonly logger?: Logger;
  /** Clock, Unix ms. */
  readonly now?: () => number;
}

interface SyncState {
  /** Subscriptions whose retained messages are not yet all written to the client. */
  pending: number;
  waiters: (() => void)[];
}

/**
 * Starts a broker: opens the store, starts the verifier threads, Aedes and the listeners.
 * @throws QisError ERR_CONFIG_INVALID (options, checked as a config file is) | ERR_FILE_IO (data directory, certificates)
 * @example
 * await using broker = await createBroker({ dataDir: '/var/lib/qis-broker', listeners: [{ type: 'tcp', host: '0.0.0.0', port: 1883 }] })
 */
export async function createBroker(config: BrokerConfig | BrokerOptions = {}, deps: BrokerDeps = {}): Promise<QisBroker> {
  const o = resolveBrokerOptions(config as BrokerConfig);
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? pino({ level: o.log.level, base: { broker: o.id ?? 'qis' } });
  await mkdir(o.dataDir, { recursive: true, mode: 0o700 }).catch((e: unknown) => {
    throw new QisError('ERR_FILE_IO', `${o.dataDir}: ${(e as Error).message}`, { cause: e });
  });
  // cluster: Redis carries the store, the message bus and the Aedes persistence of the region.
  const parts =
    o.cluster !== undefined
      ? await createClusterParts(o.cluster, o.id ?? `pid-${process.pid}`, { now, onError: (err, where) => logger.warn({ err: err.message, where }, 'redis connection error') })
      : undefined;
  // compactRatio 1.5: the log never holds much more than 1.5× the live packets, so a restart
  // with 1M packets replays at most ~1.5M records (docs/store.md measures it).
  const store = parts?.store ?? (await openStore({ dir: join(o.dataDir, 'store'), fsync: o.fsync, fsyncIntervalMs: o.fsyncIntervalMs, compactRatio: 1.5, now }));
  // Score packets (PROTOCOL §9): a store of their own, local to this broker (also in a cluster).
  const scoreStore = await openStore({ dir: join(o.dataDir, 'scores'), fsync: o.fsync, fsyncIntervalMs: o.fsyncIntervalMs, now }).catch(async (e: unknown) => {
    await (parts ? parts.close() : store.close());
    throw e;
  });
  const closeStore = async (): Promise<void> => {
    await scoreStore.close();
    await (parts ? parts.close() : store.close());
  };
  const rec = store.recovery;
  logger.info({ packets: store.size, records: rec.records, tornBytes: rec.tornBytes, openMs: Math.round(rec.openMs), cluster: parts !== undefined }, 'store opened');
  const verifier = createVerifier(o.verifyWorkers ?? defaultWorkers());
  const metrics = createMetrics(store, () => aedes.connectedClients);
  const templates = new Map<string, { depth: number; packet: Uint8Array }>();
  const rate = new RateLimiter(o.admission.ratePerSecond, o.admission.burst);
  const syncs = new WeakMap<Client, SyncState>();
  const emptyIdDirty = new WeakSet<Client>();
  /** The SUBSCRIBE Aedes is completing: its client, how many grants, and the QoS granted per filter. */
  let lastSubscribe: { client: Client; n: number; qos: Map<string, number> } | undefined;
  const holdTimers = new Set<NodeJS.Timeout>();

  // ---------------------------------------------------------------- persistence: qis packets from the store
  const { default: memory } = (await import('aedes-persistence')) as unknown as { default: () => AedesPersistence };
  const persistence = (parts?.persistence as AedesPersistence | undefined) ?? memory();
  const baseStore = persistence.storeRetained.bind(persistence);
  const baseStream = persistence.createRetainedStreamCombi.bind(persistence);
  persistence.storeRetained = (packet: AedesPublishPacket) => {
    // qis outcome packets were stored durably by admission before the PUBACK; nothing else may write there.
    if (packet.topic.startsWith('qis/1/o/') || packet.topic.startsWith('qis/1/s/')) return Promise.resolve();
    return baseStore(packet);
  };
  persistence.createRetainedStreamCombi = (patterns: string[]) => {
    const sub = lastSubscribe;
    lastSubscribe = undefined;
    // A federation link gets no stored packets at SUBSCRIBE: its catch-up exchanges only what differs.
    const link = sub !== undefined && sub.client.id.startsWith(LINK_CLIENT_PREFIX);
    const from = Readable.from(retainedFor(patterns, baseStream(patterns), sub?.qos, link), { objectMode: true });
    if (!sub) return from;
    // Aedes pipes this stream into the writer that delivers each message to the client; when
    // that writer finishes, every retained message of this SUBSCRIBE has been written.
    const pipe = from.pipe.bind(from);
    from.pipe = <T extends NodeJS.WritableStream>(dest: T, opts?: { end?: boolean }): T => {
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        syncRelease(sub.client, sub.n);
      };
      (dest as unknown as Writable).once('finish', release);
      (dest as unknown as Writable).once('close', release);
      from.once('error', release);
      return pipe(dest, opts);
    };
    return from;
  };
  persistence.createRetainedStream = (pattern: string) => persistence.createRetainedStreamCombi([pattern]);

  async function* retainedFor(patterns: string[], base: Readable, granted: Map<string, number> | undefined, link = false): AsyncGenerator<unknown> {
    const t = now() / 1000;
    for (const p of patterns) {
      if (link || !filtersOverlap(p, 'qis/1/o/#')) continue;
      // MQTT-3.8.4-6: delivered at min(the packet's QoS 1, the QoS granted to this filter).
      const qos = Math.min(1, granted?.get(p) ?? 1);
      for (const sp of store.match(p)) {
        if (sp.exp !== undefined && t > sp.exp) continue;
        yield retainedPacket(sp, qos);
      }
    }
    for (const p of patterns) {
      const sf = scoreStoreFilter(p);
      if (sf === undefined) continue;
      const qos = Math.min(1, granted?.get(p) ?? 1);
      let matches: Iterable<StoredPacket>;
      try {
        matches = scoreStore.match(sf);
      } catch {
        continue; // a filter level the store cannot hold matches no score
      }
      for (const sp of matches) {
        const topic = scoreTopicOfStored(sp.topic);
        if (topicMatches(p, topic)) yield retainedPacket({ ...sp, topic }, qos);
      }
    }
    for await (const p of base) yield p;
  }

  // ---------------------------------------------------------------- sync markers (PROTOCOL §7)
  function syncState(client: Client): SyncState {
    let s = syncs.get(client);
    if (!s) syncs.set(client, (s = { pending: 0, waiters: [] }));
    return s;
  }
  function syncRelease(client: Client, n: number): void {
    const s = syncState(client);
    s.pending = Math.max(0, s.pending - n);
    if (s.pending === 0) for (const w of s.waiters.splice(0)) w();
  }
  function whenRetainedWritten(client: Client, done: () => void): void {
    const s = syncState(client);
    if (s.pending === 0) return done();
    let fired = false;
    const once = (): void => {
      if (fired) return;
      fired = true;
      clearTimeout(timer);
      done();
    };
    // Releasing the marker early would make the client believe an incomplete cohort is complete;
    // past the limit the client is disconnected instead, and its query starts again.
    const timer = setTimeout(() => {
      fired = true;
      holdTimers.delete(timer);
      logger.warn({ clientId: client.id }, 'retained delivery took longer than the sync hold limit; client disconnected');
      client.close();
    }, SYNC_HOLD_LIMIT_MS);
    timer.unref();
    holdTimers.add(timer);
    s.waiters.push(() => {
      holdTimers.delete(timer);
      once();
    });
  }

  // ---------------------------------------------------------------- refusals
  function refuse(client: Client | null, packetTopic: string, code: ErrorCode, message: string, cb: (e?: Error | null) => void): void {
    metrics.refused.inc({ code });
    logger.warn({ code, clientId: client?.id, topic: packetTopic }, message);
    cb(new QisError(code, message));
  }
  function drop(client: Client | null, packet: AedesPublishPacket, code: ErrorCode, message: string, cb: (e?: Error | null) => void): void {
    const topic = packet.topic;
    // The record that made this publish stale may still be on its way to the disk: acknowledge
    // only once it is durable, or a resend could be acknowledged for a packet a crash then loses.
    store.durable().then(
      () => {
        metrics.dropped.inc({ code });
        logger.debug({ code, clientId: client?.id, topic }, message);
        // Acknowledged (Aedes writes the PUBACK after this callback) but delivered to nobody.
        packet.topic = DROP_TOPIC;
        packet.retain = false;
        cb(null);
      },
      (e: unknown) => refuse(client, topic, 'ERR_FILE_IO', (e as Error).message, cb),
    );
  }
  function carryOut(d: Decision, client: Client | null, packet: AedesPublishPacket, cb: (e?: Error | null) => void): boolean {
    if (d.action === 'refuse') refuse(client, packet.topic, d.code, d.message, cb);
    else if (d.action === 'drop') drop(client, packet, d.code, d.message, cb);
    else return false;
    return true;
  }

  // ---------------------------------------------------------------- admission of outcome packets
  async function admitOutcome(client: Client | null, packet: AedesPublishPacket, cb: (e?: Error | null) => void, origin?: string): Promise<void> {
    const topic = packet.topic;
    const payload = packet.payload as Buffer;
    if (store.failure) return refuse(client, topic, 'ERR_FILE_IO', store.failure.message, cb);
    const pre = precheckOutcome(topic, payload.length, o.admission, (id) => templates.get(id)?.depth);
    if (isDecision(pre)) {
      carryOut(pre, client, packet, cb);
      return;
    }
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    const v = await verifier.verify(topic, bytes, { now: now(), maxSkewMs: o.admission.maxSkewMs, ...(pre.depth !== undefined ? { depth: pre.depth } : {}) });
    const d = decide(v, store.seqOf(pre.tplId, pre.nodeId));
    if (carryOut(d, client, packet, cb) || !v.ok) return;
    if (v.packet.del) {
      // The signed tombstone is kept (for the tombstone TTL) as the proof a federation peer needs.
      const r = await store.remove({ tplId: pre.tplId, nodeId: pre.nodeId, seq: v.packet.seq, topic, packet: bytes });
      if ('stale' in r) return drop(client, packet, 'ERR_SEQ_STALE', 'tombstone not newer than the stored seq', cb);
      metrics.admitted.inc({ kind: 'tombstone' });
      // Live watchers see the withdrawal; nothing is retained (storeRetained skips qis/1/o/). The
      // flag stays set so that Aedes takes the same path as for a packet: its per-subscriber
      // dedupe drops any message whose counter is below one already delivered, and a non-retained
      // publish skips the storeRetained step, overtook the packet published just before it and
      // made Aedes drop that packet for every live subscriber (moscajs/aedes#994;
      // docs/protocol-choices.md, "Federation": the lost-forward race). Aedes clears the flag on
      // live delivery to MQTT 3.1.1 subscribers.
      packet.retain = true;
      forwardIfGone(client, packet);
      federation?.admitted(topic, bytes, origin);
      return cb(null);
    }
    // The store copies the bytes out of Aedes' read buffer.
    const stored: StoredPacket = { tplId: pre.tplId, nodeId: pre.nodeId, topic, seq: v.packet.seq, packet: bytes, ...(v.packet.exp !== undefined ? { exp: v.packet.exp } : {}) };
    const r = await store.put(stored);
    if (!r.stored) return drop(client, packet, 'ERR_SEQ_STALE', 'a newer packet was stored meanwhile', cb);
    metrics.admitted.inc({ kind: r.replaced && r.replaced.topic !== topic ? 'move' : 'packet' });
    packet.retain = true;
    forwardIfGone(client, packet);
    federation?.admitted(topic, bytes, origin);
    cb(null);
  }

  /** A template document (qis/1/t/<tplId>): checked, written durably, kept; forwarded to peers when new. */
  function admitTemplate(client: Client | null, packet: AedesPublishPacket, cb: (e?: Error | null) => void, origin?: string): void {
    const topic = packet.topic;
    // Template documents are small and few; they are kept forever, so both are bounded.
    const size = (packet.payload as Buffer).length;
    if (size > MAX_TEMPLATE_BYTES) return refuse(client, topic, 'ERR_PACKET_TOO_LARGE', `template document of ${size} bytes; at most ${MAX_TEMPLATE_BYTES}`, cb);
    if (!templates.has(topic.slice('qis/1/t/'.length)) && templates.size >= MAX_TEMPLATES) {
      return refuse(client, topic, 'ERR_TEMPLATE_UNKNOWN', `this broker already holds ${MAX_TEMPLATES} template documents`, cb);
    }
    const c = checkTemplate(topic, packet.payload as Buffer);
    if (!c.ok) return refuse(client, topic, c.code, c.message, cb);
    const bytes = Uint8Array.from(packet.payload as Buffer);
    const old = templates.get(c.tplId);
    const isNew = old === undefined || Buffer.compare(old.packet, bytes) !== 0;
    writeFileDurable(join(templateDir, `${c.tplId}.cose`), bytes).then(
      () => {
        templates.set(c.tplId, { depth: c.depth, packet: bytes });
        packet.retain = true;
        metrics.admitted.inc({ kind: 'template' });
        // Only a new document travels on: the same bytes again would circle a ring for ever.
        if (isNew) federation?.admitted(topic, bytes, origin);
        cb(null);
      },
      (e: unknown) => refuse(client, topic, 'ERR_FILE_IO', (e as Error).message, cb),
    );
  }

  /** A packet received over a federation link: the same admission as a client's publish, then local delivery. */
  function admitFromPeer(topic: string, payload: Buffer, origin: string): Promise<PeerAdmission> {
    return new Promise((resolve) => {
      const packet = { cmd: 'publish', topic, payload, qos: 1, retain: true, dup: false, messageId: 0 } as unknown as AedesPublishPacket;
      const cb = (e?: Error | null): void => {
        if (e) {
          const code: ErrorCode = e instanceof QisError ? e.code : 'ERR_INTERNAL';
          return resolve({ result: 'refused', code, message: e.message });
        }
        if (packet.topic === DROP_TOPIC) return resolve({ result: 'stale' });
        aedes.publish({ cmd: 'publish', topic: packet.topic, payload, qos: 1, retain: packet.retain, dup: false } as Parameters<Aedes['publish']>[0], () => resolve({ result: 'stored' }));
      };
      if (topic.startsWith('qis/1/t/')) return admitTemplate(null, packet, cb, origin);
      if (topic.startsWith('qis/1/s/')) {
        // A peer's score packet: the same admission as a client's (PROTOCOL §9: §6 applies).
        admitScore(null, packet, cb, origin).catch((e: unknown) => {
          logger.error({ err: e, origin }, 'admission of a peer score packet failed');
          cb(e instanceof Error ? e : new Error(String(e)));
        });
        return;
      }
      if (!topic.startsWith('qis/1/o/')) return resolve({ result: 'refused', code: 'ERR_TOPIC_INVALID', message: `${topic} is not forwarded between regions` });
      admitOutcome(null, packet, cb, origin).catch((e: unknown) => {
        logger.error({ err: e, origin }, 'admission of a peer packet failed');
        cb(e instanceof Error ? e : new Error(String(e)));
      });
    });
  }
  let federation: Federation | undefined;

  /**
   * Aedes forwards a publish to live subscribers only after writing its PUBACK; when the publisher
   * left during admission that write fails and the stored packet would reach no live watcher.
   */
  function forwardIfGone(client: Client | null, packet: AedesPublishPacket): void {
    if (!client || !(client as Client & { closed?: boolean }).closed) return;
    // retain: the same Aedes path as every qis publish (see admitOutcome's tombstones); never stored.
    aedes.publish({ cmd: 'publish', topic: packet.topic, payload: packet.payload, qos: packet.qos, retain: true, dup: false } as Parameters<Aedes['publish']>[0], () => undefined);
  }

  // ---------------------------------------------------------------- federation catch-up requests (qis/1/f/req/<clientId>)
  /** A peer's link asks for digests or packets: answered on qis/1/f/res/<its clientId>, to it alone. */
  function federationRequest(client: Client | null, packet: AedesPublishPacket, cb: (e?: Error | null) => void): void {
    const id = client?.id ?? '';
    if (!id.startsWith(LINK_CLIENT_PREFIX) || packet.topic !== `${FED_REQ}${id}` || packet.retain) {
      return refuse(client, packet.topic, 'ERR_NOT_AUTHORIZED', `only a federation link (client id ${LINK_CLIENT_PREFIX}…) may publish on ${FED_REQ}<its client id>, not retained`, cb);
    }
    const put = parsePut(packet.payload as Buffer);
    packet.topic = DROP_TOPIC; // acknowledged, delivered to nobody
    packet.retain = false;
    if (put) {
      // Forwarded packets in a batch: each through admission (concurrently, so they share disk
      // syncs), under the same per-client rate limit as single publishes.
      cb(null);
      const counts = { stored: 0, stale: 0, refused: 0 };
      void Promise.all(
        put.items.map(async ([topic, payload]) => {
          if (!rate.take(id, now())) {
            metrics.refused.inc({ code: 'ERR_RATE_LIMITED' });
            counts.refused++;
            return;
          }
          // An echo or a loop (not newer than what is held) ends here, before any signature work.
          if (notNewer(store, scoreStore, topic, payload)) {
            metrics.dropped.inc({ code: 'ERR_SEQ_STALE' });
            counts.stale++;
            return;
          }
          const r = await admitFromPeer(topic, payload, id);
          counts[r.result]++;
        }),
      ).then(() => aedes.publish({ cmd: 'publish', topic: `${FED_RES}${id}`, payload: Buffer.from(JSON.stringify({ id: put.id, ...counts })), qos: 1, retain: false, dup: false } as Parameters<Aedes['publish']>[0], () => undefined));
      return;
    }
    let answer: Buffer | undefined;
    try {
      // Without links of its own a broker still answers the peers that link to it.
      answer = answerPayload(store, packet.payload as Buffer, scoreStore);
      if (!answer) logger.warn({ clientId: id }, 'malformed federation catch-up request ignored');
    } catch (e) {
      logger.warn({ clientId: id, err: (e as Error).message }, 'federation catch-up request failed');
    }
    cb(null);
    if (answer) aedes.publish({ cmd: 'publish', topic: `${FED_RES}${id}`, payload: answer, qos: 1, retain: false, dup: false } as Parameters<Aedes['publish']>[0], () => undefined);
  }

  // ---------------------------------------------------------------- score packets (qis/1/s/<tplId>/<nodeId>, PROTOCOL §9)
  /** §6's rules for a score packet: topic, registry, size, owner, signature (topic aad), skew, seq. */
  async function admitScore(client: Client | null, packet: AedesPublishPacket, cb: (e?: Error | null) => void, origin?: string): Promise<void> {
    const topic = packet.topic;
    const payload = packet.payload as Buffer;
    if (scoreStore.failure) return refuse(client, topic, 'ERR_FILE_IO', scoreStore.failure.message, cb);
    const pre = precheckScore(topic, payload.length, o.admission, (id) => templates.has(id));
    if (isDecision(pre)) {
      carryOut(pre, client, packet, cb);
      return;
    }
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    let v: { ok: true; packet: { seq: number; del: boolean } } | { ok: false; code: ErrorCode; message: string };
    try {
      // Score packets are few (one per node per template, sent after an observation): verified
      // on the main thread, not by the outcome verifier threads.
      v = { ok: true, packet: { seq: verifyScorePacket(topic, bytes, { now: now(), maxSkewMs: o.admission.maxSkewMs }).seq, del: false } };
    } catch (e) {
      if (!(e instanceof QisError)) throw e;
      v = { ok: false, code: e.code, message: e.message };
    }
    const d = decide(v, scoreStore.seqOf(pre.tplId, pre.nodeId));
    if (d.action === 'refuse') return refuse(client, topic, d.code, d.message, cb);
    if (d.action === 'drop') return dropScore(client, packet, d.code, d.message, cb);
    if (!v.ok) return;
    const r = await scoreStore.put({ tplId: pre.tplId, nodeId: pre.nodeId, topic: scoreStoreTopic(pre.tplId, pre.nodeId), seq: v.packet.seq, packet: bytes });
    if (!r.stored) return dropScore(client, packet, 'ERR_SEQ_STALE', 'a newer score packet was stored meanwhile', cb);
    metrics.admitted.inc({ kind: 'score' });
    packet.retain = true;
    forwardIfGone(client, packet);
    federation?.admitted(topic, bytes, origin);
    cb(null);
  }
  function dropScore(client: Client | null, packet: AedesPublishPacket, code: ErrorCode, message: string, cb: (e?: Error | null) => void): void {
    scoreStore.durable().then(
      () => {
        metrics.dropped.inc({ code });
        logger.debug({ code, clientId: client?.id, topic: packet.topic }, message);
        packet.topic = DROP_TOPIC;
        packet.retain = false;
        cb(null);
      },
      (e: unknown) => refuse(client, packet.topic, 'ERR_FILE_IO', (e as Error).message, cb),
    );
  }

  // ---------------------------------------------------------------- template documents (qis/1/t/<tplId>)
  const checkTemplate = (topic: string, payload: Uint8Array) => checkTemplateDoc(topic, payload, o.admission);
  const templateDir = join(o.dataDir, 'templates');
  await mkdir(templateDir, { recursive: true, mode: 0o700 });
  for (const name of await readdir(templateDir)) {
    const m = /^([a-z2-7]{26})\.cose$/.exec(name);
    if (!m?.[1]) continue;
    const bytes = new Uint8Array(await readFile(join(templateDir, name)));
    const c = checkTemplate(`qis/1/t/${m[1]}`, bytes);
    if (c.ok) templates.set(c.tplId, { depth: c.depth, packet: bytes });
    else logger.warn({ file: name, code: c.code }, 'stored template document refused');
  }

  // ---------------------------------------------------------------- Aedes hooks
  const aedes = await Aedes.createBroker({
    persistence,
    ...(parts !== undefined ? { mq: parts.mq } : {}),
    ...(o.id !== undefined ? { id: o.id } : {}),
    preConnect(client, packet, cb) {
      // MQTT 3.1.1 [MQTT-3.1.3-8]: a zero-length client id requires clean session.
      if (checkConnect(packet.clientId, packet.clean !== false).action === 'refuse') emptyIdDirty.add(client);
      cb(null, true);
    },
    authenticate(client, _user, _pass, cb) {
      if (emptyIdDirty.has(client)) {
        metrics.refused.inc({ code: 'ERR_CLIENT_ID' });
        logger.warn({ code: 'ERR_CLIENT_ID' }, 'zero-length client id with clean session false refused (CONNACK 2)');
        return cb(Object.assign(new Error('identifier rejected'), { returnCode: 2 }) as Parameters<typeof cb>[0], false);
      }
      cb(null, true);
    },
    authorizePublish(client, packet, cb) {
      const topic = packet.topic;
      const clientId = client?.id ?? '';
      switch (classify(topic)) {
        case 'ordinary':
          if (topic.startsWith('$')) return refuse(client, topic, 'ERR_NOT_AUTHORIZED', '$ topics are reserved', cb);
          if (!aclAllows(o.acl.publish, topic, clientId)) return refuse(client, topic, 'ERR_NOT_AUTHORIZED', 'the ACL denies publishing here', cb);
          return cb(null);
        case 'sync': {
          const d = checkSync(topic, clientId, packet.retain);
          if (carryOut(d, client, packet, cb)) return;
          if (!client) return cb(null);
          return whenRetainedWritten(client, () => cb(null));
        }
        case 'broker-info':
          return refuse(client, topic, 'ERR_NOT_AUTHORIZED', `${BROKER_INFO_TOPIC} is written by the broker only`, cb);
        case 'qis-reserved':
          if (topic.startsWith(FEDERATION_PREFIX)) return federationRequest(client, packet, cb);
          return refuse(client, topic, 'ERR_TOPIC_INVALID', 'not a qis/1 topic this broker knows (o, t, s, sync)', cb);
        case 'template': {
          if (carryOut(checkRate(rate, clientId, now()), client, packet, cb)) return;
          return admitTemplate(client, packet, cb, undefined);
        }
        case 'score':
          if (carryOut(checkRate(rate, clientId, now()), client, packet, cb)) return;
          admitScore(client, packet, cb).catch((e: unknown) => {
            const code: ErrorCode = e instanceof QisError ? e.code : 'ERR_INTERNAL';
            logger.error({ err: e, clientId }, 'score admission failed');
            refuse(client, topic, code, (e as Error).message, cb);
          });
          return;
        case 'outcome':
          if (carryOut(checkRate(rate, clientId, now()), client, packet, cb)) return;
          admitOutcome(client, packet, cb).catch((e: unknown) => {
            const code: ErrorCode = e instanceof QisError ? e.code : 'ERR_INTERNAL';
            logger.error({ err: e, clientId }, 'admission failed');
            refuse(client, topic, code, (e as Error).message, cb);
          });
          return;
      }
    },
    authorizeSubscribe(client, sub, cb) {
      const topic = sub.topic;
      // The ACL applies to every filter (cohorts included: an operator may keep them to some
      // clients); `$qis` is internal and never granted.
      const denied = topic.startsWith('$qis') || !aclAllowsSubscribe(o.acl.subscribe, topic, client.id);
      if (denied) {
        metrics.refused.inc({ code: 'ERR_NOT_AUTHORIZED' });
        logger.info({ code: 'ERR_NOT_AUTHORIZED', clientId: client.id, topic }, 'subscription denied (SUBACK 0x80)');
        return cb(null, null);
      }
      // Counted until its retained messages are written; restored subscriptions get none.
      if ((client as Client & { connackSent?: boolean }).connackSent) syncState(client).pending++;
      cb(null, sub);
    },
  });
  aedes.on('subscribe', (subs, client) => {
    const n = subs.filter((s) => (s.qos as number) !== 128).length;
    if (n > 0) lastSubscribe = { client, n, qos: new Map(subs.map((x) => [x.topic, x.qos as number])) };
  });
  aedes.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'client error'));
  aedes.on('connectionError', (_client, err) => logger.debug({ err: err.message }, 'connection error'));

  // What this broker is (PROTOCOL §7 note: nodes look here to know the sync order holds).
  const version = packageVersion();
  const brokerPublish = (topic: string, payload: Buffer): Promise<void> =>
    new Promise((resolve, reject) =>
      aedes.publish({ cmd: 'publish', topic, payload, qos: 0, retain: true, dup: false } as Parameters<Aedes['publish']>[0], (e) => (e ? reject(e) : resolve())),
    );
  await brokerPublish(BROKER_INFO_TOPIC, Buffer.from(JSON.stringify({ kind: 'qis', version, sync: 'ordered' })));
  for (const [id, t] of templates) await brokerPublish(`qis/1/t/${id}`, Buffer.from(t.packet));

  // ---------------------------------------------------------------- listeners
  const servers: { type: BrokerAddress['type']; server: NetServer | HttpServer; path?: string }[] = [];
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  try {
    for (const l of o.listeners) {
      let server: NetServer | HttpServer;
      if (l.type === 'tcp') {
        server = createNetServer((s) => {
          track(s);
          aedes.handle(s);
        });
      } else if (l.type === 'tls') {
        const read = (f: string): Buffer => {
          try {
            return readFileSync(f);
          } catch (e) {
            throw new QisError('ERR_FILE_IO', `TLS listener: ${f}: ${(e as Error).message}`, { cause: e });
          }
        };
        server = createTlsServer(
          { cert: read(l.cert), key: read(l.key), ...(l.ca ? { ca: read(l.ca) } : {}), requestCert: l.requestCert === true, rejectUnauthorized: l.requestCert === true },
          (s) => {
            track(s);
            aedes.handle(s);
          },
        );
      } else {
        const http = createHttpServer();
        http.on('connection', track);
        const wss = new WebSocketServer({ server: http, path: l.path });
        // ws re-emits the HTTP server's errors (EADDRINUSE…); listen() below reports those.
        wss.on('error', (e) => logger.debug({ err: e.message }, 'WebSocket server error'));
        wss.on('connection', (ws) => {
          const stream = createWebSocketStream(ws);
          stream.on('error', () => stream.destroy());
          aedes.handle(stream as unknown as Socket);
        });
        server = http;
      }
      await listen(server, l.port, l.host);
      servers.push({ type: l.type, server, ...(l.type === 'ws' ? { path: l.path } : {}) });
    }
  } catch (e) {
    for (const s of servers) s.server.close();
    await new Promise<void>((r) => aedes.close(() => r()));
    await verifier.close();
    await closeStore();
    throw e instanceof QisError ? e : new QisError('ERR_FILE_IO', `cannot listen: ${(e as Error).message}`, { cause: e });
  }

  let http: HttpServer | undefined;
  if (o.http) {
    http = createHttpServer((req, res) => {
      if (req.url === '/metrics') {
        metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.registry.contentType });
            res.end(text);
          },
          (e: unknown) => {
            res.writeHead(500);
            res.end(String(e));
          },
        );
      } else if (req.url === '/healthz') {
        const body = { ok: !aedes.closed && store.failure === null, ...(store.failure ? { error: store.failure.message } : {}), packets: store.size, clients: aedes.connectedClients, uptimeS: Math.round(process.uptime()) };
        res.writeHead(body.ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      } else if (!serveConsole(req, res)) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('try /, /healthz or /metrics\n');
      }
    });
    try {
      await listen(http, o.http.port, o.http.host);
    } catch (e) {
      http.close();
      for (const x of servers) x.server.close();
      for (const x of sockets) x.destroy();
      await new Promise<void>((r) => aedes.close(() => r()));
      await verifier.close();
      await closeStore();
      throw new QisError('ERR_FILE_IO', `cannot listen for HTTP on ${o.http.host}:${o.http.port}: ${(e as Error).message}`, { cause: e });
    }
    http.on('error', (e) => logger.error({ err: e.message }, 'HTTP server error'));
  }
  for (const x of servers) x.server.on('error', (e) => logger.error({ err: e.message, listener: x.type }, 'listener error'));

  const sweep = setInterval(() => {
    rate.prune(now());
    store.sweepExpired(now()).then(
      (gone) => {
        if (gone.length > 0) {
          metrics.expired.inc(gone.length);
          logger.info({ count: gone.length }, 'expired packets swept');
        }
      },
      (e: unknown) => logger.error({ err: e }, 'sweep failed'),
    );
  }, o.sweepIntervalMs);
  sweep.unref();

  const addresses = (): BrokerAddress[] => {
    const out: BrokerAddress[] = servers.map((s) => {
      const a = s.server.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      const host = typeof a === 'object' && a ? a.address : '';
      return { type: s.type, host, port, ...(s.path ? { path: s.path } : {}) };
    });
    const ha = http?.address();
    if (ha && typeof ha === 'object') out.push({ type: 'http', host: ha.address, port: ha.port });
    return out;
  };
  logger.info({ listeners: addresses(), verifyWorkers: verifier.workers, fsync: o.fsync }, 'broker listening');
  if (o.federation !== undefined && o.federation.peers.length > 0) {
    federation = startFederation(o.federation, {
      store,
      scoreStore,
      logger: logger.child({ region: o.federation.region }),
      registry: metrics.registry,
      admit: admitFromPeer,
      templates: () => [...templates].map(([id, t]): [string, Uint8Array] => [`qis/1/t/${id}`, t.packet]),
      now,
    });
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearInterval(sweep);
      await federation?.close();
      for (const t of holdTimers) clearTimeout(t);
      for (const s of servers) s.server.close();
      http?.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => aedes.close(() => r()));
      await verifier.close();
      await closeStore();
      logger.info('broker closed');
    })());

  return {
    options: o,
    aedes,
    store,
    scoreStore,
    logger,
    get federation() {
      return federation;
    },
    addresses,
    metricsText: () => metrics.registry.metrics(),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The package version, from broker/ (tests) or dist/broker/ (built). */
function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'qis-mqtt' && pkg.version) return pkg.version;
    } catch {
      // try the next level up
    }
  }
  return 'unknown';
}

function listen(server: NetServer | HttpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** What Aedes' retained stream yields for a stored packet. */
function retainedPacket(sp: StoredPacket, qos: number): Record<string, unknown> {
  const payload = Buffer.isBuffer(sp.packet) ? sp.packet : Buffer.from(sp.packet.buffer, sp.packet.byteOffset, sp.packet.byteLength);
  return { cmd: 'publish', topic: sp.topic, payload, qos, retain: true, dup: false };
}

/** The parts of aedes-persistence this module replaces. */
interface AedesPersistence {
  storeRetained(packet: AedesPublishPacket): Promise<void>;
  createRetainedStreamCombi(patterns: string[]): Readable;
  createRetainedStream(pattern: string): Readable;
}

export type { Metrics };
