/**
 * The regional broker: Aedes 1.x with PROTOCOL §6 admission, one packet per node per template in
 * a durable store, sync markers held until a client's retained delivery is written (§7), and
 * ordinary MQTT traffic under an ACL.
 *
 * How a qis packet flows: Aedes calls `authorizePublish`; admission verifies it (worker threads),
 * checks seq against the store and writes it durably; only then does the callback return, and
 * Aedes writes the PUBACK after it. So a PUBACK always follows a durable write.
 *
 * This file wires the rooms of `broker/server/` (docs/ARCHITECTURE.md, "Layout"): each hook and service
 * there takes a `BrokerContext` (server/context.ts) instead of closing over the broker.
 */
import { join } from 'node:path';
import { Aedes } from 'aedes';
import type { Logger } from 'pino';
import { QisError, loadOrCreateKeyFile, mkdirs } from '../src/index.js';
import { RateLimiter } from './admission.js';
import { createClusterParts } from './cluster.js';
import { resolveBrokerOptions } from './config.js';
import type { Federation } from './federation.js';
import { createLogger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { applyReload, type ReloadReport } from './server/reload.js';
import type { BrokerConfig, BrokerOptions } from './options.js';
import { openStore, type Store } from './store.js';
import { createVerifier, defaultWorkers, INLINE_PER_SECOND, type Verifier } from './verifier.js';
import { Authenticator } from './server/auth.js';
import { connectHooks } from './server/connect.js';
import { logConnections } from './server/conn-log.js';
import { authorizeForward } from './server/forward.js';
import { createLimits } from './server/limits.js';
import { publishOn, type BrokerContext } from './server/context.js';
import { withPeerIdentities } from './server/link-peers.js';
import { startLinks } from './server/peers.js';
import { startHttp, type HttpEndpoint } from './server/http.js';
import { publishBrokerInfo, startBrokerInfoClock } from './server/info.js';
import { startListeners, type BrokerAddress, type Listeners } from './server/listeners.js';
import { authorizePublish } from './server/publish.js';
import { qisPersistence } from './server/retained.js';
import { SessionBook } from './server/session.js';
import { SyncHold, authorizeSubscribe } from './server/subscribe.js';
import { timedVerifier } from './server/timing.js';
import { startSweep } from './server/sweep.js';
import { RevocationBook } from './server/revocation-book.js';
import { TemplateBook } from './server/template-book.js';

export type { BrokerAddress };
export type { Metrics, ReloadReport };

export interface QisBroker extends AsyncDisposable {
  /** The options running now (a reload replaces the reloadable parts). */
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
  /**
   * Applies the reloadable parts of `next` (ACLs, auth and its password file read again, trusted
   * operators, log level) without dropping a client; says what changed and what needs a restart.
   * @throws QisError ERR_CONFIG_INVALID (a rejected `next`) | ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID (nothing changed)
   */
  reload(next: BrokerOptions | Promise<BrokerOptions>): Promise<ReloadReport>;
  close(): Promise<void>;
}

export interface BrokerDeps {
  /** A pino logger to use instead of one built from `options.log`. */
  readonly logger?: Logger;
  /** Clock, Unix ms. */
  readonly now?: () => number;
  /** The signature verifier to use instead of createVerifier(verifyWorkers) (the broker closes it): the bench's A/B. */
  readonly verifier?: Verifier;
}

/**
 * Starts a broker: opens the store, starts the verifier threads, Aedes and the listeners.
 * @throws QisError ERR_CONFIG_INVALID (options, checked as a config file is) | ERR_FILE_IO (data directory, certificates, password file) | ERR_PASSWORD_FILE_INVALID
 * @example
 * await using broker = await createBroker({ dataDir: '/var/lib/qis-broker', listeners: [{ type: 'tcp', host: '0.0.0.0', port: 1883 }] })
 */
export async function createBroker(config: BrokerConfig | BrokerOptions = {}, deps: BrokerDeps = {}): Promise<QisBroker> {
  const o = resolveBrokerOptions(config as BrokerConfig);
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? createLogger({ level: o.log.level, base: { broker: o.id ?? 'qis' } });
  // Read before anything is opened: a bad password file leaves nothing running.
  const auth = await Authenticator.open(withPeerIdentities(o.auth, o.federation?.peers));
  // A federating broker's key, made at first start: its links log in with it (PROTOCOL §11).
  const brokerKey = o.federation ? await loadOrCreateKeyFile(o.federation.keyFile ?? join(o.dataDir, 'broker-key.json')) : undefined;
  const stores = await openStores(o, now, logger);
  const { store, scoreStore } = stores;
  let aedes: Aedes | undefined;
  // Read at a scrape, once ctx (below) holds the verifier.
  const metrics = createMetrics(store, () => aedes?.connectedClients ?? 0, () => ctx.verifier.inlined ?? 0);
  const ctx: BrokerContext = {
    options: o,
    now,
    logger,
    store,
    scoreStore,
    // Read first: a template directory that cannot be read leaves no verifier threads behind.
    templates: await TemplateBook.open(join(o.dataDir, 'templates'), o.admission, logger),
    revocations: await RevocationBook.open(join(o.dataDir, 'revocations'), logger),
    metrics,
    limits: createLimits({ options: o, metrics, logger, now }),
    verifier: timedVerifier(
      deps.verifier ?? createVerifier(o.verifyWorkers ?? defaultWorkers(), { ...(o.verifyNice ? { nice: o.verifyNice } : {}), ...(o.verifyInline !== undefined ? { inlinePerSecond: o.verifyInline } : {}) }),
      metrics.verifySeconds,
    ),
    auth,
    rate: new RateLimiter(o.admission.ratePerSecond, o.admission.burst),
    ...(brokerKey ? { brokerKey } : {}),
    publish: (m) => (aedes ? publishOn(aedes, m) : Promise.reject(new QisError('ERR_CLOSED', 'the broker is not running'))),
    federation: undefined,
  };
  const hold = new SyncHold(logger);
  const hooks = connectHooks(ctx);
  // Session Present for sessions without subscriptions (server/session.ts, [MQTT-3.2.2-2]).
  const sessions = new SessionBook();
  const a = (aedes = await Aedes.createBroker({
    persistence: sessions.persistence(await qisPersistence(ctx, hold, stores.persistence)),
    ...(stores.mq !== undefined ? { mq: stores.mq } : {}),
    ...(o.id !== undefined ? { id: o.id } : {}),
    ...hooks,
    preConnect: ctx.limits.preConnect(hooks.preConnect),
    connectTimeout: o.limits.connectTimeoutMs,
    drainTimeout: o.limits.drainTimeoutMs,
    queueLimit: o.limits.queueLimit,
    authorizePublish: authorizePublish(ctx, hold),
    authorizeSubscribe: sessions.authorizeSubscribe(authorizeSubscribe(ctx, hold)),
    authorizeForward: authorizeForward(ctx),
  }));
  a.on('subscribe', (subs, client) => hold.subscribed(subs, client));
  a.on('clientError', (client, err) => logger.debug({ clientId: client.id, err: err.message }, 'client error'));
  a.on('connectionError', (_client, err) => logger.debug({ err: err.message }, 'connection error'));
  let closing: Promise<void> | undefined;
  logConnections(ctx, a, () => closing !== undefined);
  await publishBrokerInfo(ctx);

  let listeners: Listeners | undefined;
  let http: HttpEndpoint | undefined;
  /** Everything but the federation and the sweep, in the order it must stop. */
  const stop = async (): Promise<void> => {
    hold.close();
    listeners?.close();
    http?.close();
    await new Promise<void>((r) => a.close(() => r()));
    await ctx.verifier.close();
    await stores.close();
  };
  try {
    listeners = await startListeners(o.listeners, a, logger, ctx.limits);
    if (o.http) http = await startHttp({ ctx, aedes: a }, o.http.host, o.http.port);
  } catch (e) {
    await stop();
    throw e;
  }
  const stopSweep = startSweep(ctx);
  const stopInfoClock = startBrokerInfoClock(ctx);
  const addresses = (): BrokerAddress[] => [...(listeners?.addresses() ?? []), ...[http?.address()].filter((x) => x !== undefined)];
  // verifyNice lowers the verify threads' own priority: Linux only (one niceness per thread), and only with threads.
  const niced = Boolean(o.verifyNice) && process.platform === 'linux' && ctx.verifier.workers > 0;
  if (o.verifyNice && !niced) logger.warn({ verifyNice: o.verifyNice, verifyWorkers: ctx.verifier.workers, platform: process.platform }, `verifyNice ignored: ${ctx.verifier.workers === 0 ? 'no verify threads (verifyWorkers 0)' : 'it needs Linux'}`);
  logger.info({ listeners: addresses(), verifyWorkers: ctx.verifier.workers, ...(niced ? { verifyNice: o.verifyNice } : {}), ...(ctx.verifier.workers > 0 && !deps.verifier ? { verifyInline: o.verifyInline ?? INLINE_PER_SECOND } : {}), fsync: o.fsync }, 'broker listening');
  ctx.federation = startLinks(ctx);

  const close = (): Promise<void> =>
    (closing ??= (async () => {
      stopSweep();
      stopInfoClock();
      await ctx.federation?.close();
      await stop();
      logger.info('broker closed');
    })());
  return {
    get options() {
      return ctx.options;
    },
    aedes: a,
    store,
    scoreStore,
    logger,
    get federation() {
      return ctx.federation;
    },
    addresses,
    metricsText: () => ctx.metrics.registry.metrics(),
    reload: (next) => applyReload(ctx, next),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The stores of one broker, and in a cluster the Redis parts Aedes shares with the region. */
interface Stores {
  readonly store: Store;
  readonly scoreStore: Store;
  /** A cluster's Aedes persistence and message bus (undefined: Aedes' memory ones). */
  readonly persistence?: unknown;
  readonly mq?: unknown;
  close(): Promise<void>;
}

/** Creates the data directory and opens the outcome store (local, or a cluster's Redis) and the score store. */
async function openStores(o: BrokerOptions, now: () => number, logger: Logger): Promise<Stores> {
  await mkdirs(o.dataDir, 0o700).catch((e: unknown) => {
    throw new QisError('ERR_FILE_IO', `${o.dataDir}: ${(e as Error).message}`, { cause: e });
  });
  // cluster: Redis carries the store, the message bus and the Aedes persistence of the region.
  const parts =
    o.cluster !== undefined
      ? await createClusterParts(o.cluster, o.id ?? `pid-${process.pid}`, { now, onError: (err, where) => logger.warn({ err: err.message, where }, 'redis connection error') })
      : undefined;
  // compactRatio 1.5: the log never holds much more than 1.5× the live packets, so a restart
  // with 1M packets replays at most ~1.5M records (docs/store.md measures it).
  const store = parts?.store ?? (await openStore({ dir: join(o.dataDir, 'store'), fsync: o.fsync, fsyncIntervalMs: o.fsyncIntervalMs, compactRatio: 1.5, maxColdFloors: o.limits.maxColdFloors, now }));
  // Score packets (PROTOCOL §9): a store of their own, local to this broker (also in a cluster).
  const scoreStore = await openStore({ dir: join(o.dataDir, 'scores'), fsync: o.fsync, fsyncIntervalMs: o.fsyncIntervalMs, maxColdFloors: o.limits.maxColdFloors, now }).catch(async (e: unknown) => {
    await (parts ? parts.close() : store.close());
    throw e;
  });
  const rec = store.recovery;
  logger.info({ packets: store.size, records: rec.records, tornBytes: rec.tornBytes, openMs: Math.round(rec.openMs), cluster: parts !== undefined }, 'store opened');
  return {
    store,
    scoreStore,
    ...(parts ? { persistence: parts.persistence, mq: parts.mq } : {}),
    close: async () => {
      await scoreStore.close();
      await (parts ? parts.close() : store.close());
    },
  };
}
