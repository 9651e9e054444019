/**
 * The edge node runtime (PROTOCOL §5–§7): publish a situation's outcome as a signed, retained
 * packet through a durable outbox, and read a cohort in one round trip.
 *
 * One MQTT connection (mqtt.js 5, MQTT 3.1.1, clean session): the outbox, not the broker's
 * session, is what makes delivery survive power cuts. mqtt.js's own fixed-period reconnect is
 * off; the node reconnects with exponential backoff and full jitter.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { backoffDelay, backoffOptions, type BackoffOptions } from './backoff.js';
import { toHex, fromHex } from '../protocol/bytes.js';
import { Channel } from './channel.js';
import { foldCohort, topicMatches, type CohortMessage } from '../protocol/cohort.js';
import { ensureDir, lockDir, writeFileDurable } from './durable.js';
import { QisError, isQisError, type ErrorCode } from '../protocol/errors.js';
import { address, cohortFilter, outcomeTopic, type Situation } from '../protocol/fingerprint.js';
import { generateKey, loadKeyFile, saveKeyFile, type Ed25519Backend, type NodeKey } from '../protocol/identity.js';
import { createOutcomePacket } from '../protocol/outcome.js';
import { Outbox, type OutboxEntry } from './outbox.js';
import { checkPacket, signPacket, type Outcome, type VerifiedPacket } from '../protocol/packet.js';
import { synthesize, type Synthesis, type SynthesisOptions } from '../synthesis/index.js';
import { isTplId, type Template } from '../protocol/template.js';
import { tlsClientOptions, type TlsOptions } from './tls.js';
import { sameRouting, supersedesOf, templateTopic, verifyTemplateDoc } from '../protocol/template-doc.js';
import { BROKER_INFO_TOPIC, DETECT_TIMEOUT_MS, MOSQUITTO_VERSION_TOPIC, type BrokerKind } from './broker-kind.js';
import { checkOutcomeFits } from '../protocol/outcome.js';
import { addScore, predictionOf, scoreFieldsOf, scorePrediction, thompsonChoose, type Prediction, type PredictionScore, type ThompsonDraw } from '../elections/darwin.js';
import { PredictionStore } from './predictions.js';
import { checkScorePacket, scoreFilter, signScorePacket, type ScoreFields, type VerifiedScore } from '../protocol/score.js';
import { jcs } from '../protocol/jcs.js';

/** Timer functions, replaceable in tests (a fake clock). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type { TlsOptions } from './tls.js';

export interface NodeOptions {
  /** `mqtt://host[:1883]`, `mqtts://host[:8883]`, `ws://host/path` or `wss://host/path`. */
  readonly url: string;
  /** Holds the key (`key.json`), the outbox and the per-template seq state. Created if missing. */
  readonly dataDir: string;
  /** Use this key instead of `<dataDir>/key.json` (which is created on first start otherwise). */
  readonly key?: NodeKey;
  /** MQTT client id. Default `qis-<nodeId>-<8 hex>`. */
  readonly clientId?: string;
  readonly username?: string;
  readonly password?: string;
  readonly tls?: TlsOptions;
  /** MQTT keepalive, s. Default 30. */
  readonly keepaliveS?: number;
  /** Time allowed for TCP + TLS + CONNACK, ms. Default 10,000. */
  readonly connectTimeoutMs?: number;
  /** Reconnect backoff. Default base 500 ms, cap 30 s, full jitter. */
  readonly reconnect?: BackoffOptions;
  /** How long `publish` waits for the PUBACK before it reports the packet as queued. Default 10,000. */
  readonly ackTimeoutMs?: number;
  /** The broker's query ordering; default 'auto' (asked once per connection, PROTOCOL §7). */
  readonly brokerKind?: BrokerKind | 'auto';
  /** Quiet period that ends a query on a broker of unknown ordering, ms. Default 500. */
  readonly quietMs?: number;
  readonly backend?: Ed25519Backend;
  /** Clock (Unix ms), jitter source and timers; replaceable in tests. */
  readonly now?: () => number;
  readonly random?: () => number;
  readonly timers?: Timers;
  readonly signal?: AbortSignal;
  /**
   * How {@link QisNode.consult} picks among rival templates: `thompson` samples each one's Beta
   * posterior on its hit rate (read from the broker's score packets, PROTOCOL §9) and consults the
   * best draw; `first` (default) consults the first template given.
   */
  readonly choose?: 'thompson' | 'first';
  /** Uniform [0, 1) source of the Thompson draws (seed it in tests). Default Math.random. */
  readonly chooseRandom?: () => number;
}

/** Packet options of {@link QisNode.publish} (PROTOCOL §5). */
export interface PublishOptions {
  readonly conf?: number;
  readonly n?: number;
  readonly ctx?: { readonly [key: string]: number };
  /** Unix s after which the packet is stale. */
  readonly exp?: number;
  /** Unix ms when the outcome was observed. Default now. */
  readonly ts?: number;
  /** Wait at most this long for the PUBACK (default the node's ackTimeoutMs; 0: do not wait). */
  readonly ackTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface PublishResult {
  readonly topic: string;
  readonly seq: number;
  /** The packet exactly as signed and queued. */
  readonly packet: Uint8Array;
  /** The tombstone queued for the node's previous bucket, when the bucket changed. */
  readonly tombstone?: { readonly topic: string; readonly seq: number; readonly packet: Uint8Array };
  /** true: the broker acknowledged it. false: it is safe in the outbox and goes out on reconnect. */
  readonly acked: boolean;
}

export interface QueryOptions extends SynthesisOptions {
  /** Drop this many least significant levels: 0 is the exact cohort. */
  readonly widen?: number;
  /**
   * Also read the cohorts of the templates this one supersedes (`supersedes: <tplId>`, followed
   * as a chain) as long as their routed fields and outcome are unchanged (docs/registry.md).
   */
  readonly includeSuperseded?: boolean;
  /** Overall time limit including waiting for a connection, ms. Default 10,000. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Remember the prediction in the data directory for a later `report` (default true). */
  readonly remember?: boolean;
}

export interface QueryResult {
  readonly tplId: string;
  readonly filter: string;
  readonly widen: number;
  /** How the end of the retained messages was known: the sync marker, or a quiet period. */
  readonly completeness: 'sync' | 'quiet-period';
  readonly broker: BrokerKind;
  /** The cohort: verified live packets, one per node (highest seq). */
  readonly packets: readonly VerifiedPacket[];
  readonly received: number;
  readonly dropped: Partial<Record<ErrorCode, number>>;
  readonly superseded: number;
  readonly withdrawn: number;
  readonly duplicates: number;
  readonly synthesis: Synthesis;
  readonly elapsedMs: number;
  /**
   * With `includeSuperseded`: the template versions whose cohorts answered, newest first, with
   * the packets each contributed (one per node overall: a node's packet under the newest
   * template wins), and the older templates left out, with why.
   */
  readonly versions?: readonly { readonly tplId: string; readonly name: string; readonly version: number; readonly packets: number }[];
  readonly notIncluded?: readonly { readonly tplId: string; readonly reason: string }[];
}

/** Options of {@link QisNode.report}. */
export interface ReportOptions {
  /** Unix ms when the outcome was observed (default now): only predictions received before it are scored. */
  readonly ts?: number;
  /** Wait at most this long for the score packet's PUBACK (default the node's ackTimeoutMs; 0: do not wait). */
  readonly ackTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** What {@link QisNode.report} scored and published. */
export interface ReportResult {
  readonly tplId: string;
  /** The prediction scored, and when the node received it (Unix ms). */
  readonly prediction: Prediction;
  readonly predictedAt: number;
  readonly score: PredictionScore;
  /** The node's updated track record for the template, as signed in the score packet. */
  readonly totals: ScoreFields;
  readonly topic: string;
  readonly seq: number;
  readonly packet: Uint8Array;
  /** true: the broker acknowledged the score packet; false: it waits in the outbox. */
  readonly acked: boolean;
}

/** Track records read from the broker (PROTOCOL §9), one query round trip for all templates. */
export interface ScoresResult {
  readonly completeness: 'sync' | 'quiet-period';
  readonly broker: BrokerKind;
  /** Per template asked, one verified score packet per node (highest seq). */
  readonly records: readonly { readonly tplId: string; readonly scores: readonly VerifiedScore[] }[];
  readonly dropped: Partial<Record<ErrorCode, number>>;
}

/** A query answered by one of several rival templates. */
export interface ConsultResult extends QueryResult {
  /** The template consulted. */
  readonly chosen: string;
  readonly choose: 'thompson' | 'first';
  /** The Thompson draws, best first (choose: 'thompson'). */
  readonly draws?: readonly ThompsonDraw[];
}

export interface WatchOptions {
  readonly widen?: number;
  /** Also yield the retained packets present when the watch starts. Default true. */
  readonly retained?: boolean;
  readonly signal?: AbortSignal;
}

/** One verified packet seen by {@link QisNode.watch}. Tombstones come too (`packet.del`). */
export interface WatchEvent {
  readonly packet: VerifiedPacket;
  readonly retained: boolean;
}

export interface WatchIterator extends AsyncIterableIterator<WatchEvent> {
  /** Messages on the filter that failed verification, by code. */
  readonly dropped: Partial<Record<ErrorCode, number>>;
}

/** What `status()` reports. */
export type NodeStatus =
  | { readonly type: 'connecting'; readonly attempt: number; readonly url: string }
  | { readonly type: 'connected'; readonly url: string }
  | { readonly type: 'disconnected'; readonly reason: string }
  | { readonly type: 'reconnecting'; readonly attempt: number; readonly delayMs: number }
  | { readonly type: 'refused'; readonly code: ErrorCode; readonly message: string; readonly topic?: string }
  | { readonly type: 'outbox-flushed'; readonly delivered: number };

export interface QisNode extends AsyncDisposable {
  readonly key: NodeKey;
  readonly nodeId: string;
  readonly clientId: string;
  readonly connected: boolean;
  /** Packets in the outbox, waiting for a PUBACK. */
  readonly pending: number;
  /** `template` may be a template id: it is fetched from the registry (see {@link QisNode.template}). */
  publish(template: Template | string, situation: Situation, outcome: Outcome, options?: PublishOptions): Promise<PublishResult>;
  /** Withdraws the node's packet for a template (signed tombstone on its current bucket). */
  withdraw(template: Template | string, options?: { readonly ackTimeoutMs?: number; readonly signal?: AbortSignal }): Promise<PublishResult | undefined>;
  /** Resolves once the outbox is empty. @throws QisError ERR_TIMEOUT | ERR_ABORTED | ERR_CLOSED */
  flush(options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<void>;
  query(template: Template | string, situation: Situation, options?: QueryOptions): Promise<QueryResult>;
  /**
   * A template by id from the registry (`qis/1/t/<tplId>`), verified (curator signature, hash,
   * valid template) and cached in `<dataDir>/templates/`: later calls need no broker.
   * @throws QisError ERR_TEMPLATE_NOT_FOUND | ERR_TEMPLATE_HASH | ERR_BAD_SIGNATURE | ERR_TIMEOUT | ERR_INVALID_ARGUMENT
   */
  template(tplId: string, options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<Template>;
  query(template: Template, situation: Situation, options?: QueryOptions): Promise<QueryResult>;
  /**
   * Several templates answer the same question (same outcome): picks one (NodeOptions.choose) and
   * queries it. @throws QisError ERR_INVALID_ARGUMENT when the outcomes differ, or any query error
   */
  consult(templates: readonly (Template | string)[], situation: Situation, options?: QueryOptions): Promise<ConsultResult>;
  /**
   * Scores the latest prediction this node received for (template, situation) before the
   * observation, adds it to its running totals and publishes its score packet (retained, QoS 1,
   * through the outbox). @throws QisError ERR_NO_PREDICTION | ERR_OUTCOME_INVALID | ERR_FIELD_* | ERR_FILE_IO
   */
  report(template: Template | string, situation: Situation, outcome: Outcome, options?: ReportOptions): Promise<ReportResult>;
  /** Reads the track records of templates (qis/1/s/<tplId>/+) in one round trip. */
  scores(tplIds: readonly string[], options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<ScoresResult>;
  watch(template: Template, situation: Situation, options?: WatchOptions): WatchIterator;
  status(options?: { readonly signal?: AbortSignal }): AsyncIterableIterator<NodeStatus>;
  /** The broker's query ordering, as configured or detected on this connection. */
  brokerKind(options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<BrokerKind>;
  close(): Promise<void>;
}

interface Defaults {
  readonly keepaliveS: number;
  readonly connectTimeoutMs: number;
  readonly ackTimeoutMs: number;
  readonly brokerKind: BrokerKind | 'auto';
  readonly quietMs: number;
  readonly queryTimeoutMs: number;
}
const DEFAULTS: Defaults = Object.freeze({
  keepaliveS: 30,
  connectTimeoutMs: 10_000,
  ackTimeoutMs: 10_000,
  brokerKind: 'auto',
  quietMs: 500,
  queryTimeoutMs: 10_000,
});
type Merged = Defaults & NodeOptions;

/** A connection that stays up this long resets the reconnect backoff. */
const STABLE_CONNECTION_MS = 10_000;
/** A connection lost within this time of sending an entry counts as a refusal of that entry. */
const REFUSAL_WINDOW_MS = 3_000;
/** Refusals in a row after which a queued entry is set aside. */
const REFUSALS_BEFORE_SET_ASIDE = 5;


const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

function checkUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QisError('ERR_URL_INVALID', `${JSON.stringify(url)} is not a URL; use mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt`);
  }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol) || !u.hostname) {
    throw new QisError('ERR_URL_INVALID', `${url}: the scheme must be mqtt, mqtts, ws or wss with a host`);
  }
  return u;
}

function positive(name: string, v: number | undefined, allowZero = false): void {
  if (v === undefined) return;
  if (!(Number.isFinite(v) && (allowZero ? v >= 0 : v > 0))) throw new QisError('ERR_INVALID_ARGUMENT', `${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(v)}`);
}

function abortError(signal: AbortSignal): QisError {
  const why = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? 'aborted');
  return new QisError('ERR_ABORTED', `aborted: ${why}`, { cause: signal.reason });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * Opens a node: takes the data directory's lock, loads or creates its key, reads the outbox and
 * starts connecting (it does not wait for the broker: publishing works offline).
 *
 * @throws QisError ERR_URL_INVALID | ERR_DATA_DIR_LOCKED | ERR_FILE_IO | ERR_KEY_* | ERR_INVALID_ARGUMENT
 * @example
 * await using node = await createNode({ url: 'mqtt://localhost', dataDir: '/var/lib/qis' })
 * await node.publish(template, { machine_model: 'X1', … }, 'failure', { ctx: { rpm: 1500 } })
 * const r = await node.query(template, situation)
 * console.log(r.synthesis)
 */
export async function createNode(options: NodeOptions): Promise<QisNode> {
  const o: Merged = { ...DEFAULTS, ...stripUndefined(options) };
  checkUrl(o.url);
  const backoff = backoffOptions(o.reconnect);
  positive('keepaliveS', o.keepaliveS, true);
  positive('connectTimeoutMs', o.connectTimeoutMs);
  positive('ackTimeoutMs', o.ackTimeoutMs, true);
  positive('quietMs', o.quietMs);
  if (!['auto', 'qis', 'mosquitto', 'unknown'].includes(o.brokerKind)) {
    throw new QisError('ERR_INVALID_ARGUMENT', `brokerKind must be auto, qis, mosquitto or unknown, got ${String(o.brokerKind)}`);
  }
  if (typeof o.dataDir !== 'string' || o.dataDir === '') throw new QisError('ERR_INVALID_ARGUMENT', 'dataDir is required');
  if (o.clientId !== undefined && (o.clientId === '' || /[/+#]/.test(o.clientId))) {
    // It is a topic level of the node's sync markers (qis/1/sync/<clientId>/<nonce>).
    throw new QisError('ERR_INVALID_ARGUMENT', `clientId must be non-empty and free of '/', '+' and '#', got ${JSON.stringify(o.clientId)}`);
  }
  throwIfAborted(o.signal);
  await ensureDir(o.dataDir);
  const unlock = await lockDir(o.dataDir);
  try {
    const key = o.key ?? (await loadOrCreateKey(join(o.dataDir, 'key.json')));
    throwIfAborted(o.signal);
    const { outbox, bad } = await Outbox.open(o.dataDir, key.nodeId);
    if (o.choose !== undefined && o.choose !== 'thompson' && o.choose !== 'first') {
      throw new QisError('ERR_INVALID_ARGUMENT', `choose must be thompson or first, got ${String(o.choose)}`);
    }
    const node = new Node(o, backoff, key, outbox, unlock);
    for (const b of bad) node.openRefusal({ type: 'refused', code: b.error.code, message: b.error.message });
    node.start();
    return node;
  } catch (e) {
    await unlock();
    throw e;
  }
}

async function loadOrCreateKey(path: string): Promise<NodeKey> {
  try {
    return await loadKeyFile(path);
  } catch (e) {
    const missing = isQisError(e) && e.code === 'ERR_FILE_IO' && (e.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    if (!missing) throw e;
  }
  const key = generateKey();
  await saveKeyFile(path, key);
  return key;
}

type Listener = (topic: string, payload: Uint8Array, retained: boolean) => void;
/** One connection's answer to "what broker is this?"; `lost` when the connection dropped first. */
interface KindEntry {
  readonly gen: number;
  result: BrokerKind | 'lost' | undefined;
}
type State = 'connecting' | 'connected' | 'waiting' | 'closed';

class Node implements QisNode {
  readonly key: NodeKey;
  readonly nodeId: string;
  readonly clientId: string;
  readonly #o: Merged;
  readonly #backoff: Required<BackoffOptions>;
  readonly #outbox: Outbox;
  readonly #unlock: () => Promise<void>;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #timers: Timers;
  #state: State = 'waiting';
  #client: MqttClient | undefined;
  /** Bumped on every connection: callbacks of an older connection are ignored. */
  #gen = 0;
  #attempt = 0;
  #everSettled = false;
  #reconnectTimer: unknown;
  /** Entries sent on this connection and not yet acknowledged, with when they were sent. */
  readonly #inflight = new Map<string, number>();
  /** Connections lost right after sending an entry, per entry: the way a broker refuses a publish. */
  readonly #refusals = new Map<string, number>();
  #stableTimer: unknown;
  #delivered = 0;
  readonly #listeners = new Set<Listener>();
  /** Subscriptions kept across reconnects (watches), with reference counts. */
  readonly #subs = new Map<string, number>();
  readonly #statusChannels = new Set<Channel<NodeStatus>>();
  readonly #watches = new Set<Channel<WatchEvent>>();
  /** Waiters for changes: connection state, acks, outbox size. */
  readonly #wakers = new Set<() => void>();
  /** The broker-kind detection of the current connection. */
  #kind: KindEntry | undefined;
  /** Serialises seq allocation and outbox writes. */
  #writes: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;
  readonly #predictions: PredictionStore;

  constructor(o: Merged, backoff: Required<BackoffOptions>, key: NodeKey, outbox: Outbox, unlock: () => Promise<void>) {
    this.#o = o;
    this.#backoff = backoff;
    this.key = key;
    this.nodeId = key.nodeId;
    this.clientId = o.clientId ?? `qis-${key.nodeId}-${randomBytes(4).toString('hex')}`;
    this.#outbox = outbox;
    this.#predictions = new PredictionStore(o.dataDir);
    this.#unlock = unlock;
    this.#now = o.now ?? Date.now;
    this.#random = o.random ?? Math.random;
    this.#timers = o.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
  }

  get connected(): boolean {
    return this.#state === 'connected';
  }

  get pending(): number {
    return this.#outbox.size;
  }

  // ------------------------------------------------------------------ status and wake-ups

  emit(s: NodeStatus): void {
    for (const c of this.#statusChannels) c.push(s);
  }

  /** Refusals found while opening (bad outbox files): every status() iterator starts with them. */
  readonly #openEvents: NodeStatus[] = [];
  openRefusal(s: NodeStatus): void {
    this.#openEvents.push(s);
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w();
  }

  /**
   * Waits until `ready()` is true, re-checking on every state change, or rejects on timeout,
   * abort or close.
   */
  #until<T>(ready: () => T | undefined, o: { deadline?: number; signal?: AbortSignal | undefined; what: string }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: unknown;
      const done = (): void => {
        this.#wakers.delete(check);
        if (timer !== undefined) this.#timers.clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        done();
        reject(abortError(o.signal as AbortSignal));
      };
      const check = (): void => {
        if (this.#state === 'closed') {
          done();
          return reject(new QisError('ERR_CLOSED', `node closed while waiting for ${o.what}`));
        }
        let v: T | undefined;
        try {
          v = ready();
        } catch (e) {
          done();
          return reject(e as Error);
        }
        if (v !== undefined) {
          done();
          resolve(v);
        }
      };
      if (o.signal?.aborted) return reject(abortError(o.signal));
      o.signal?.addEventListener('abort', onAbort, { once: true });
      this.#wakers.add(check);
      if (o.deadline !== undefined) {
        const ms = Math.max(0, o.deadline - this.#now());
        timer = this.#timers.setTimeout(() => {
          done();
          reject(new QisError('ERR_TIMEOUT', `timed out after ${ms} ms waiting for ${o.what}`));
        }, ms);
      }
      check();
    });
  }

  status(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<NodeStatus> {
    const ch: Channel<NodeStatus> = new Channel(1000, () => this.#statusChannels.delete(ch));
    for (const s of this.#openEvents) ch.push(s);
    if (this.#state === 'closed') ch.end();
    else this.#statusChannels.add(ch);
    if (options.signal) {
      if (options.signal.aborted) ch.end();
      options.signal.addEventListener('abort', () => ch.end(), { once: true });
    }
    return ch;
  }

  // ------------------------------------------------------------------ connection

  start(): void {
    // Next tick: a status() iterator opened right after createNode() sees the first attempt.
    setImmediate(() => this.#connect());
  }

  #connect(): void {
    if (this.#state === 'closed') return;
    const gen = ++this.#gen;
    this.#state = 'connecting';
    this.emit({ type: 'connecting', attempt: this.#attempt, url: this.#o.url });
    const tls = this.#o.tls;
    const opts: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: 4,
      clean: true,
      keepalive: this.#o.keepaliveS,
      connectTimeout: this.#o.connectTimeoutMs,
      reconnectPeriod: 0, // ours: backoff with jitter
      resubscribe: false,
      queueQoSZero: false,
      ...(this.#o.username !== undefined ? { username: this.#o.username } : {}),
      ...(this.#o.password !== undefined ? { password: this.#o.password } : {}),
      ...tlsClientOptions(tls),
    };
    let client: MqttClient;
    try {
      client = mqtt.connect(this.#o.url, opts);
    } catch (e) {
      this.emit({ type: 'refused', code: 'ERR_URL_INVALID', message: (e as Error).message });
      this.#lost(gen, (e as Error).message);
      return;
    }
    this.#client = client;
    let lastError = '';
    client.on('connect', () => {
      if (gen !== this.#gen) return;
      this.#state = 'connected';
      // The backoff starts over only once a connection has proved itself (stayed up, or carried a
      // PUBACK): a broker that accepts the connection and then refuses a packet must not make
      // the node reconnect in a tight loop.
      this.#stableTimer = this.#timers.setTimeout(() => {
        if (gen === this.#gen) this.#attempt = 0;
      }, STABLE_CONNECTION_MS);
      this.#everSettled = true;
      this.emit({ type: 'connected', url: this.#o.url });
      const filters = [...this.#subs.keys()];
      if (filters.length > 0) {
        client.subscribe(Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }])), (err) => {
          if (err && gen === this.#gen) this.emit({ type: 'refused', code: 'ERR_SUBSCRIBE_DENIED', message: err.message });
        });
      }
      this.#wake();
      this.#drain();
    });
    client.on('message', (topic, payload, packet) => {
      if (gen !== this.#gen) return;
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      for (const l of this.#listeners) l(topic, bytes, packet.retain);
    });
    client.on('error', (err: Error & { code?: unknown }) => {
      if (gen !== this.#gen) return;
      if (typeof err.code === 'number') {
        const why = CONNACK_REASONS[err.code] ?? 'refused';
        lastError = `broker refused the connection: ${why} (CONNACK return code ${err.code})`;
        this.emit({ type: 'refused', code: 'ERR_CONNECT_REFUSED', message: lastError });
      } else {
        lastError = err.message;
      }
    });
    client.on('close', () => {
      if (gen !== this.#gen) return;
      this.#lost(gen, lastError || 'connection closed');
    });
  }

  #lost(gen: number, reason: string): void {
    if (gen !== this.#gen || this.#state === 'closed') return;
    const wasConnected = this.#state === 'connected';
    this.#gen++; // ignore anything more from this connection
    this.#client?.end(true);
    this.#client = undefined;
    this.#state = 'waiting';
    this.#everSettled = true;
    if (this.#stableTimer !== undefined) this.#timers.clearTimeout(this.#stableTimer);
    this.#noteRefusals();
    this.#inflight.clear(); // unacknowledged entries stay in the outbox and go again
    if (wasConnected) this.emit({ type: 'disconnected', reason });
    const delayMs = backoffDelay(this.#attempt, this.#backoff, this.#random);
    this.#attempt++;
    this.emit({ type: 'reconnecting', attempt: this.#attempt, delayMs });
    this.#reconnectTimer = this.#timers.setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, delayMs);
    this.#wake();
  }

  /**
   * MQTT 3.1.1 has no negative PUBACK: a broker refuses a publish by closing the connection. An
   * entry whose sending was followed by a lost connection, again and again, is set aside as
   * `<name>.bad` and reported, so one refused packet cannot block the node forever.
   */
  #noteRefusals(): void {
    const now = this.#now();
    for (const [name, sentAt] of this.#inflight) {
      if (now - sentAt > REFUSAL_WINDOW_MS) continue;
      const n = (this.#refusals.get(name) ?? 0) + 1;
      this.#refusals.set(name, n);
      if (n < REFUSALS_BEFORE_SET_ASIDE) continue;
      this.#refusals.delete(name);
      const e = this.#outbox.entries().find((x) => x.name === name);
      this.emit({
        type: 'refused',
        code: 'ERR_DELIVERY_REFUSED',
        message: `the broker closed the connection each of the ${n} times packet seq ${e?.seq ?? '?'} was sent; it is set aside as outbox/${name}.bad`,
        ...(e ? { topic: e.topic } : {}),
      });
      void this.#outbox.setAside(name).then(
        () => this.#wake(),
        (err: unknown) => this.#ioFailure(err),
      );
    }
  }

  #waitConnected(deadline: number, signal: AbortSignal | undefined): Promise<MqttClient> {
    return this.#until(() => (this.#state === 'connected' ? this.#client : undefined), {
      deadline,
      signal,
      what: `a connection to ${this.#o.url}`,
    });
  }

  // ------------------------------------------------------------------ publishing

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#writes.then(fn, fn);
    this.#writes = run.catch(() => undefined);
    return run;
  }

  #nextSeq(tplId: string, count: number): number {
    // Strictly increasing across restarts; Unix ms when the counter was lost (PROTOCOL §5).
    const first = Math.max(this.#outbox.lastSeq(tplId) + 1, Math.floor(this.#now()));
    return first + count - 1;
  }

  async publish(t: Template | string, situation: Situation, outcome: Outcome, options: PublishOptions = {}): Promise<PublishResult> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    positive('ackTimeoutMs', options.ackTimeoutMs, true);
    const template = await this.#resolve(t, options.signal);
    const addr = address(template, situation);
    const topic = outcomeTopic(addr, this.key.nodeId);
    const result = await this.#serial(async () => {
      this.#checkOpen();
      throwIfAborted(options.signal);
      const prev = this.#outbox.bucket(template.tplId);
      const moved = prev !== undefined && prev.topic !== topic;
      const seq = this.#nextSeq(template.tplId, moved ? 2 : 1);
      const ts = options.ts ?? Math.floor(this.#now());
      // Sign first: an outcome that does not fit the template is refused before anything is written.
      const signed = createOutcomePacket({
        key: this.key,
        template,
        situation,
        outcome,
        seq,
        ts,
        ...(options.conf !== undefined ? { conf: options.conf } : {}),
        ...(options.n !== undefined ? { n: options.n } : {}),
        ...(options.ctx !== undefined ? { ctx: options.ctx } : {}),
        ...(options.exp !== undefined ? { exp: options.exp } : {}),
        ...(this.#o.backend ? { backend: this.#o.backend } : {}),
      });
      let tomb: { topic: string; seq: number; packet: Uint8Array } | undefined;
      if (moved) {
        // The old bucket gets a signed tombstone one seq below the new packet, sent before it, so
        // any broker (Mosquitto too) ends with one live packet for this node.
        const tseq = seq - 1;
        tomb = { topic: prev.topic, seq: tseq, packet: signPacket(this.key, prev.topic, { fp: hexFp(prev.fp), seq: tseq, ts, del: true }, this.#backend()) };
      }
      // Reserve the seq before anything is queued, but record the new bucket only once both the
      // tombstone and the packet are queued: after a crash in between, the next publish still
      // knows the old bucket and owes it a tombstone.
      if (!moved) {
        // Same bucket: the state file and the queued packet are independent (either one alone
        // keeps seq increasing after a crash), so both durable writes go at once.
        const [, entry] = await Promise.all([
          this.#outbox.setState(template.tplId, { seq, topic, fp: toHex(addr.fp) }),
          this.#outbox.add('packet', template.tplId, topic, seq, signed.packet, options.exp),
        ]);
        return { entry, tomb };
      }
      await this.#outbox.setState(template.tplId, { ...prev, seq });
      if (tomb) await this.#outbox.add('tombstone', template.tplId, tomb.topic, tomb.seq, tomb.packet);
      const entry = await this.#outbox.add('packet', template.tplId, topic, seq, signed.packet, options.exp);
      await this.#outbox.setState(template.tplId, { seq, topic, fp: toHex(addr.fp) });
      return { entry, tomb };
    });
    this.#wake();
    this.#drain();
    const acked = await this.#waitAck(result.entry, options.ackTimeoutMs ?? this.#o.ackTimeoutMs, options.signal);
    return {
      topic,
      seq: result.entry.seq,
      packet: result.entry.packet,
      ...(result.tomb ? { tombstone: result.tomb } : {}),
      acked,
    };
  }

  async withdraw(t: Template | string, options: { ackTimeoutMs?: number; signal?: AbortSignal } = {}): Promise<PublishResult | undefined> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    const template = await this.#resolve(t, options.signal);
    const entry = await this.#serial(async () => {
      const prev = this.#outbox.bucket(template.tplId);
      if (!prev) return undefined;
      const seq = this.#nextSeq(template.tplId, 1);
      const packet = signPacket(this.key, prev.topic, { fp: hexFp(prev.fp), seq, ts: Math.floor(this.#now()), del: true }, this.#backend());
      await this.#outbox.setState(template.tplId, { ...prev, seq });
      return this.#outbox.add('tombstone', template.tplId, prev.topic, seq, packet);
    });
    if (!entry) return undefined;
    this.#wake();
    this.#drain();
    const acked = await this.#waitAck(entry, options.ackTimeoutMs ?? this.#o.ackTimeoutMs, options.signal);
    return { topic: entry.topic, seq: entry.seq, packet: entry.packet, acked };
  }

  #backend(): { backend?: Ed25519Backend } {
    return this.#o.backend ? { backend: this.#o.backend } : {};
  }

  /** true once acknowledged; false when it stays queued (offline, superseded, or not acked in time). */
  async #waitAck(entry: OutboxEntry, ackTimeoutMs: number, signal: AbortSignal | undefined): Promise<boolean> {
    if (ackTimeoutMs === 0) return false;
    const deadline = this.#now() + ackTimeoutMs;
    try {
      return await this.#until<boolean>(
        () => {
          if (!this.#outbox.has(entry.name)) return this.#ackedNames.has(entry.name);
          // Offline (and the first attempt already failed): it is safe in the outbox; say so now.
          if (this.#state === 'waiting' && this.#everSettled) return false;
          return undefined;
        },
        { deadline, signal, what: 'the PUBACK' },
      );
    } catch (e) {
      if (isQisError(e) && e.code === 'ERR_TIMEOUT') return false;
      throw e;
    } finally {
      this.#ackedNames.delete(entry.name);
    }
  }

  readonly #ackedNames = new Set<string>();
  /** Outbox files of acknowledged packets still being removed. */
  readonly #removals = new Set<Promise<void>>();

  #drain(): void {
    const client = this.#client;
    if (this.#state !== 'connected' || !client) return;
    const gen = this.#gen;
    for (const e of this.#outbox.entries()) {
      if (this.#inflight.has(e.name)) continue;
      if (e.exp !== undefined && this.#now() > e.exp * 1000) {
        // A stale packet would be refused by any conforming broker; drop it here and say so.
        this.emit({ type: 'refused', code: 'ERR_EXPIRED', message: `queued packet seq ${e.seq} expired before it could be sent; dropped`, topic: e.topic });
        this.#outbox.remove(e.name).then(
          () => this.#wake(), // a flush() waiting for an empty outbox
          (err: unknown) => this.#ioFailure(err),
        );
        continue;
      }
      this.#inflight.set(e.name, this.#now());
      client.publish(e.topic, Buffer.from(e.packet), { qos: 1, retain: true }, (err) => {
        if (gen !== this.#gen) return; // that connection is gone: the entry goes again on the next one
        this.#inflight.delete(e.name);
        if (err) return;
        this.#attempt = 0; // a PUBACK: this connection works
        this.#refusals.delete(e.name);
        void this.#acked(e).catch((er: unknown) => this.#ioFailure(er));
      });
    }
  }

  async #acked(e: OutboxEntry): Promise<void> {
    if (this.#outbox.has(e.name)) {
      this.#ackedNames.add(e.name);
      // Only waiters read this set; keep it from growing when nobody waits.
      if (this.#ackedNames.size > 1000) this.#ackedNames.delete(this.#ackedNames.values().next().value as string);
      // The entry leaves the outbox's index at once, so waiters learn of the PUBACK now; its file
      // goes in the background (close() waits). A crash before the unlink only resends a packet
      // the broker drops as stale.
      const removal = this.#outbox.remove(e.name);
      this.#wake();
      this.#removals.add(removal);
      try {
        await removal;
      } finally {
        this.#removals.delete(removal);
      }
    }
    this.#delivered++;
    if (this.#outbox.size === 0 && this.#inflight.size === 0) {
      this.emit({ type: 'outbox-flushed', delivered: this.#delivered });
      this.#delivered = 0;
    }
    this.#wake();
  }

  #ioFailure(e: unknown): void {
    const err = isQisError(e) ? e : new QisError('ERR_FILE_IO', (e as Error).message, { cause: e });
    this.emit({ type: 'refused', code: err.code, message: err.message });
  }

  async flush(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    this.#checkOpen();
    positive('timeoutMs', options.timeoutMs);
    const deadline = options.timeoutMs === undefined ? undefined : this.#now() + options.timeoutMs;
    await this.#until(() => (this.#outbox.size === 0 ? true : undefined), {
      ...(deadline !== undefined ? { deadline } : {}),
      signal: options.signal,
      what: `the outbox to empty (${this.#outbox.size} packet(s) left)`,
    });
  }

  // ------------------------------------------------------------------ subscriptions

  /**
   * Subscribes (one SUBSCRIBE). Queries use QoS 0: on one clean-session connection, TCP already
   * delivers the retained packets in order, and QoS 1 would cost the broker a stored in-flight
   * message and the client a PUBACK per packet of the cohort; a lost connection restarts the query.
   */
  async #subscribe(client: MqttClient, filters: readonly string[], qos: 0 | 1 = 1): Promise<void> {
    let granted: { topic: string; qos: number }[];
    try {
      granted = await client.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos }])));
    } catch (e) {
      // mqtt.js 5 turns a SUBACK failure code (0x80) into this error.
      if ((e as Error).message.startsWith('Subscribe error')) {
        throw new QisError('ERR_SUBSCRIBE_DENIED', `the broker refused a subscription to ${filters.join(', ')} (SUBACK 0x80)`, { cause: e });
      }
      throw e;
    }
    const denied = granted.filter((g) => g.qos === 128);
    if (denied.length > 0) {
      throw new QisError('ERR_SUBSCRIBE_DENIED', `the broker refused the subscription to ${denied.map((d) => d.topic).join(', ')} (SUBACK 0x80)`);
    }
  }

  #unsubscribe(client: MqttClient, filters: readonly string[]): void {
    const drop = filters.filter((f) => !this.#subs.has(f));
    if (drop.length > 0 && this.#client === client && this.#state === 'connected') client.unsubscribe(drop, () => undefined);
  }

  async brokerKind(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<BrokerKind> {
    this.#checkOpen();
    if (this.#o.brokerKind !== 'auto') return this.#o.brokerKind;
    const deadline = this.#now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    for (;;) {
      await this.#waitConnected(deadline, options.signal);
      const gen = this.#gen;
      // One detection per connection, shared by every caller; each caller waits with its own
      // deadline and signal, so aborting one query does not abort another's detection.
      let entry = this.#kind;
      if (!entry || entry.gen !== gen) {
        const fresh: KindEntry = { gen, result: undefined };
        this.#kind = entry = fresh;
        void this.#detect(fresh);
      }
      const e = entry;
      const r = await this.#until(() => e.result, { deadline, signal: options.signal, what: 'the broker kind' });
      if (r !== 'lost') return r;
      if (this.#kind === e) this.#kind = undefined; // the connection dropped: ask on the next one
    }
  }

  /**
   * Asks the broker what it is, once per connection: a qis broker keeps `qis/1/broker` retained
   * and holds sync markers (PROTOCOL §7); Mosquitto keeps `$SYS/broker/version` and delivers a
   * subscription's retained messages before it reads the next packet. Anything else (or no
   * marker within DETECT_TIMEOUT_MS) gets the quiet period. Never rejects.
   */
  async #detect(entry: KindEntry): Promise<void> {
    const client = this.#client;
    const settle = (r: BrokerKind | 'lost'): void => {
      entry.result ??= r;
      this.#wake();
    };
    if (!client || entry.gen !== this.#gen) return settle('lost');
    const sync = `qis/1/sync/${this.clientId}/${randomBytes(6).toString('hex')}`;
    let kind: BrokerKind = 'unknown';
    let synced = false;
    const listener: Listener = (topic, payload) => {
      if (topic === sync) synced = true;
      else if (synced) return;
      else if (topic === BROKER_INFO_TOPIC) kind = 'qis';
      else if (topic === MOSQUITTO_VERSION_TOPIC && kind === 'unknown' && Buffer.from(payload).toString('utf8').startsWith('mosquitto')) kind = 'mosquitto';
      this.#wake();
    };
    this.#listeners.add(listener);
    const subscribed: string[] = [];
    const lost = (): 'lost' | undefined => (entry.gen !== this.#gen ? 'lost' : undefined);
    try {
      try {
        await this.#subscribe(client, [sync, BROKER_INFO_TOPIC], 0);
        subscribed.push(sync, BROKER_INFO_TOPIC);
        // An ACL may deny $SYS; that only rules out recognising Mosquitto.
        await this.#subscribe(client, [MOSQUITTO_VERSION_TOPIC], 0).then(
          () => subscribed.push(MOSQUITTO_VERSION_TOPIC),
          (e: unknown) => {
            if (!(isQisError(e) && e.code === 'ERR_SUBSCRIBE_DENIED')) throw e;
          },
        );
        await client.publishAsync(sync, Buffer.from('?'), { qos: 1 });
      } catch (e) {
        return settle(lost() ?? 'unknown'); // denied, or the connection went away
      }
      let timedOut = false;
      const t = this.#timers.setTimeout(() => {
        timedOut = true;
        this.#wake();
      }, DETECT_TIMEOUT_MS);
      try {
        const r = await this.#until<'lost' | 'synced' | 'timeout'>(() => lost() ?? (synced ? 'synced' : timedOut ? 'timeout' : undefined), { what: 'the sync marker' });
        settle(r === 'lost' ? 'lost' : r === 'timeout' ? 'unknown' : kind);
      } finally {
        this.#timers.clearTimeout(t);
      }
    } catch {
      settle('lost'); // closed
    } finally {
      this.#listeners.delete(listener);
      this.#unsubscribe(client, subscribed);
    }
  }

  // ------------------------------------------------------------------ query and watch

  #checkWiden(template: Template, widen: number): void {
    const k = template.fields.length;
    if (!Number.isInteger(widen) || widen < 0 || widen > k) throw new QisError('ERR_INVALID_ARGUMENT', `widen must be an integer from 0 to ${k}, got ${String(widen)}`);
  }

  async query(t: Template | string, situation: Situation, options: QueryOptions = {}): Promise<QueryResult> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    const started = this.#now();
    const template = await this.#resolve(t, options.signal, options.timeoutMs);
    if (options.includeSuperseded === true) return this.#queryVersions(template, situation, options, started);
    return this.#queryOne(template, situation, options, started);
  }

  /** Keeps the prediction a query gave, to be scored by a later report() (PROTOCOL §9). */
  #remember(template: Template, fp: Uint8Array, synthesis: Synthesis): void {
    const prediction = predictionOf(template, synthesis);
    if (!prediction) return;
    // Written durably in the background: the query's latency stays the network's. A report()
    // waits for it (the store serialises its files); close() waits too.
    this.#predictions.record(template.tplId, toHex(fp), { at: Math.floor(this.#now()), prediction }).catch((e: unknown) => this.#ioFailure(e));
  }

  async #queryOne(template: Template, situation: Situation, options: QueryOptions, started: number): Promise<QueryResult> {
    const widen = options.widen ?? 0;
    this.#checkWiden(template, widen);
    positive('timeoutMs', options.timeoutMs);
    const addr = address(template, situation);
    const filter = cohortFilter(addr, widen);
    const deadline = started + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    for (;;) {
      const kind = await this.brokerKind({ timeoutMs: Math.max(1, deadline - this.#now()), ...(options.signal ? { signal: options.signal } : {}) });
      const client = await this.#waitConnected(deadline, options.signal);
      const got = await this.#collect(client, filter, kind, deadline, options.signal);
      if (got === 'lost') continue; // the connection dropped mid-query: ask again on the next one
      const fold = foldCohort(got, { address: addr, widen, now: this.#now(), ...this.#backend() });
      const synthesis = synthesize(
        template,
        fold.packets.flatMap((p) => (p.out === undefined ? [] : [{ nodeId: p.nodeId, out: p.out, conf: p.conf, n: p.n, ts: p.ts, ...(p.ctx ? { ctx: p.ctx } : {}) }])),
        synthesisOptions(options),
      );
      if (options.remember !== false) this.#remember(template, addr.fp, synthesis);
      return {
        tplId: template.tplId,
        filter,
        widen,
        completeness: kind === 'unknown' ? 'quiet-period' : 'sync',
        broker: kind,
        ...fold,
        synthesis,
        elapsedMs: this.#now() - started,
      };
    }
  }

  // ------------------------------------------------------------------ templates by id (issue 7)

  /** Templates fetched or read from the cache, by id. */
  readonly #templates = new Map<string, Template>();

  #resolve(t: Template | string, signal: AbortSignal | undefined, timeoutMs?: number): Promise<Template> {
    if (typeof t !== 'string') return Promise.resolve(t);
    return this.template(t, { ...(signal ? { signal } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }

  async template(tplId: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Template> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    if (typeof tplId !== 'string' || !isTplId(tplId)) throw new QisError('ERR_INVALID_ARGUMENT', `a template id is 26 lowercase base32 characters, got ${JSON.stringify(tplId)}`);
    positive('timeoutMs', options.timeoutMs);
    const known = this.#templates.get(tplId);
    if (known) return known;
    const dir = join(this.#o.dataDir, 'templates');
    const file = join(dir, `${tplId}.cose`);
    let cached: Uint8Array | undefined;
    try {
      cached = new Uint8Array(await readFile(file));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new QisError('ERR_FILE_IO', `${file}: ${(e as Error).message}`, { cause: e });
    }
    if (cached) {
      try {
        const v = verifyTemplateDoc(tplId, cached, this.#o.backend);
        this.#templates.set(tplId, v.template);
        return v.template;
      } catch {
        // A damaged cache file is fetched again (and replaced) below.
      }
    }
    const deadline = this.#now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const topic = templateTopic(tplId);
    for (;;) {
      const kind = await this.brokerKind({ timeoutMs: Math.max(1, deadline - this.#now()), ...(options.signal ? { signal: options.signal } : {}) });
      const client = await this.#waitConnected(deadline, options.signal);
      const got = await this.#collect(client, topic, kind, deadline, options.signal);
      if (got === 'lost') continue;
      const last = got[got.length - 1];
      if (!last) throw new QisError('ERR_TEMPLATE_NOT_FOUND', `the broker at ${this.#o.url} holds no template document ${tplId}`);
      const v = verifyTemplateDoc(tplId, last.payload, this.#o.backend);
      await ensureDir(dir);
      await writeFileDurable(file, v.bytes);
      this.#templates.set(tplId, v.template);
      return v.template;
    }
  }

  /**
   * A query over a template and the chain of templates it supersedes whose routing is unchanged
   * ({@link sameRouting}): one cohort read per version, merged one packet per node (the newest
   * template's packet wins), synthesised together.
   */
  async #queryVersions(template: Template, situation: Situation, options: QueryOptions, started: number): Promise<QueryResult> {
    const results: { template: Template; r: QueryResult }[] = [];
    const notIncluded: { tplId: string; reason: string }[] = [];
    const deadline = started + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    const seen = new Set<string>([template.tplId]);
    let current: Template | undefined = template;
    while (current) {
      const left = Math.max(1, deadline - this.#now());
      // Each version's own answer is not what the caller is given: only the merged one is remembered.
      results.push({ template: current, r: await this.#queryOne(current, situation, { ...options, timeoutMs: left, remember: false }, this.#now()) });
      const older = supersedesOf(current);
      current = undefined;
      if (older === undefined || seen.has(older)) break;
      seen.add(older);
      let t: Template;
      try {
        t = await this.template(older, { timeoutMs: Math.max(1, deadline - this.#now()), ...(options.signal ? { signal: options.signal } : {}) });
      } catch (e) {
        if (!isQisError(e) || e.code === 'ERR_CLOSED' || e.code === 'ERR_ABORTED' || e.code === 'ERR_TIMEOUT') throw e;
        notIncluded.push({ tplId: older, reason: `${e.code}: ${e.message}` });
        break;
      }
      const same = sameRouting(template, t);
      if (!same.ok) {
        notIncluded.push({ tplId: older, reason: same.reason });
        break;
      }
      current = t;
    }
    const first = results[0]!.r;
    const remember = (synthesis: Synthesis): void => {
      if (options.remember !== false) this.#remember(template, address(template, situation).fp, synthesis);
    };
    if (results.length === 1) remember(first.synthesis);
    if (results.length === 1) return { ...first, versions: [{ tplId: template.tplId, name: template.doc.name, version: template.doc.version, packets: first.packets.length }], notIncluded, elapsedMs: this.#now() - started };
    const byNode = new Set<string>();
    const packets: VerifiedPacket[] = [];
    const versions = results.map(({ template: t, r }) => {
      let n = 0;
      for (const p of r.packets) {
        if (byNode.has(p.nodeId)) continue;
        byNode.add(p.nodeId);
        packets.push(p);
        n++;
      }
      return { tplId: t.tplId, name: t.doc.name, version: t.doc.version, packets: n };
    });
    const dropped: Partial<Record<ErrorCode, number>> = {};
    for (const { r } of results) for (const [c, n] of Object.entries(r.dropped) as [ErrorCode, number][]) dropped[c] = (dropped[c] ?? 0) + n;
    const sum = (f: (r: QueryResult) => number): number => results.reduce((a, x) => a + f(x.r), 0);
    const synthesis = synthesize(
      template,
      packets.flatMap((p) => (p.out === undefined ? [] : [{ nodeId: p.nodeId, out: p.out, conf: p.conf, n: p.n, ts: p.ts, ...(p.ctx ? { ctx: p.ctx } : {}) }])),
      synthesisOptions(options),
    );
    remember(synthesis);
    return {
      ...first,
      packets,
      received: sum((r) => r.received),
      dropped,
      superseded: sum((r) => r.superseded),
      withdrawn: sum((r) => r.withdrawn),
      duplicates: sum((r) => r.duplicates) + sum((r) => r.packets.length) - packets.length,
      synthesis,
      elapsedMs: this.#now() - started,
      versions,
      notIncluded,
    };
  }

  /** One round trip: subscribe to the sync topic and the cohort, publish the marker, collect until it returns. */
  async #collect(client: MqttClient, filter: string | readonly string[], kind: BrokerKind, deadline: number, signal: AbortSignal | undefined): Promise<CohortMessage[] | 'lost'> {
    const wanted = typeof filter === 'string' ? [filter] : filter;
    const gen = this.#gen;
    const sync = `qis/1/sync/${this.clientId}/${randomBytes(6).toString('hex')}`;
    const messages: CohortMessage[] = [];
    let synced = false;
    let lastAt = this.#now();
    const listener: Listener = (topic, payload) => {
      if (topic === sync) {
        synced = true;
        this.#wake();
      } else if (!synced && wanted.some((f) => topicMatches(f, topic))) {
        messages.push({ topic, payload });
        lastAt = this.#now();
      }
    };
    this.#listeners.add(listener);
    const filters = kind === 'unknown' ? [...wanted] : [sync, ...wanted];
    const lost = (): 'lost' | undefined => (gen !== this.#gen ? 'lost' : undefined);
    try {
      try {
        // QoS 0, unless a watch holds the same filter at QoS 1 (a SUBSCRIBE replaces its QoS).
        await this.#subscribe(client, filters, wanted.some((f) => this.#subs.has(f)) ? 1 : 0);
        lastAt = this.#now();
        if (kind !== 'unknown') await client.publishAsync(sync, Buffer.from('sync'), { qos: 1 });
      } catch (e) {
        if (isQisError(e)) throw e;
        if (lost()) return 'lost';
        throw new QisError('ERR_TIMEOUT', `query failed: ${(e as Error).message}`, { cause: e });
      }
      if (kind !== 'unknown') {
        const r = await this.#until<true | 'lost'>(() => lost() ?? (synced ? true : undefined), { deadline, signal, what: 'the sync marker' });
        return r === 'lost' ? 'lost' : messages;
      }
      // Unknown ordering: the query ends after quietMs without a new cohort message (PROTOCOL §7).
      for (;;) {
        const wait = lastAt + this.#o.quietMs - this.#now();
        if (wait <= 0) return messages;
        if (this.#now() + wait > deadline) {
          throw new QisError('ERR_TIMEOUT', `retained messages kept arriving until the query's time limit (${messages.length} so far)`);
        }
        const r = await this.#sleep(wait, signal, lost);
        if (r === 'lost') return 'lost';
      }
    } finally {
      this.#listeners.delete(listener);
      this.#unsubscribe(client, filters);
    }
  }

  #sleep(ms: number, signal: AbortSignal | undefined, lost: () => 'lost' | undefined): Promise<'lost' | true> {
    let elapsed = false;
    const t = this.#timers.setTimeout(() => {
      elapsed = true;
      this.#wake();
    }, ms);
    return this.#until<'lost' | true>(() => lost() ?? (elapsed ? true : undefined), { signal, what: 'the quiet period' }).finally(() => this.#timers.clearTimeout(t));
  }

  // ------------------------------------------------------------------ scores (PROTOCOL §9)

  async scores(tplIds: readonly string[], options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ScoresResult> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    positive('timeoutMs', options.timeoutMs);
    const ids = [...new Set(tplIds)];
    const filters = ids.map(scoreFilter);
    const deadline = this.#now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    for (;;) {
      const kind = await this.brokerKind({ timeoutMs: Math.max(1, deadline - this.#now()), ...(options.signal ? { signal: options.signal } : {}) });
      const client = await this.#waitConnected(deadline, options.signal);
      const got = await this.#collect(client, filters, kind, deadline, options.signal);
      if (got === 'lost') continue;
      const dropped: Partial<Record<ErrorCode, number>> = {};
      const best = new Map<string, VerifiedScore>();
      for (const m of got) {
        const r = checkScorePacket(m.topic, m.payload, { now: this.#now(), ...this.#backend() });
        if (!r.ok) {
          dropped[r.code] = (dropped[r.code] ?? 0) + 1;
          continue;
        }
        const prev = best.get(m.topic);
        if (!prev || r.score.seq > prev.seq) best.set(m.topic, r.score);
      }
      const records = ids.map((tplId) => ({ tplId, scores: [...best.values()].filter((x) => x.tplId === tplId) }));
      return { completeness: kind === 'unknown' ? 'quiet-period' : 'sync', broker: kind, records, dropped };
    }
  }

  async consult(given: readonly (Template | string)[], situation: Situation, options: QueryOptions = {}): Promise<ConsultResult> {
    this.#checkOpen();
    if (!Array.isArray(given) || given.length === 0) throw new QisError('ERR_INVALID_ARGUMENT', 'consult() needs at least one template');
    const templates: Template[] = [];
    for (const t of given) templates.push(await this.#resolve(t, options.signal, options.timeoutMs));
    const outcome = jcs((templates[0] as Template).doc.outcome);
    const other = templates.find((t) => jcs(t.doc.outcome) !== outcome);
    if (other) throw new QisError('ERR_INVALID_ARGUMENT', `template ${other.doc.name} v${other.doc.version} has another outcome than ${(templates[0] as Template).doc.name}: rival templates must answer the same question`);
    const choose = this.#o.choose ?? 'first';
    if (choose === 'first' || templates.length === 1) {
      const r = await this.query(templates[0] as Template, situation, options);
      return { ...r, chosen: r.tplId, choose };
    }
    const started = this.#now();
    const sc = await this.scores(
      templates.map((t) => t.tplId),
      { ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) },
    );
    const draws = thompsonChoose(sc.records, this.#o.chooseRandom ?? Math.random);
    const chosen = templates.find((t) => t.tplId === draws[0]?.tplId) as Template;
    const left = options.timeoutMs === undefined ? undefined : Math.max(1, options.timeoutMs - (this.#now() - started));
    const r = await this.query(chosen, situation, { ...options, ...(left !== undefined ? { timeoutMs: left } : {}) });
    return { ...r, chosen: chosen.tplId, choose, draws };
  }

  async report(t: Template | string, situation: Situation, outcome: Outcome, options: ReportOptions = {}): Promise<ReportResult> {
    this.#checkOpen();
    throwIfAborted(options.signal);
    positive('ackTimeoutMs', options.ackTimeoutMs, true);
    const template = await this.#resolve(t, options.signal);
    if (options.ts !== undefined && !(Number.isSafeInteger(options.ts) && options.ts >= 0)) throw new QisError('ERR_INVALID_ARGUMENT', `ts must be Unix ms, got ${String(options.ts)}`);
    if (template.doc.outcome.kind === 'map') throw new QisError('ERR_OUTCOME_INVALID', `template ${template.doc.name}: map outcomes are not scored (PROTOCOL §9 scores labels and numbers)`);
    const actual = checkOutcomeFits(template, outcome);
    const fpHex = toHex(address(template, situation).fp);
    const observedAt = options.ts ?? Math.floor(this.#now());
    const labels = template.doc.outcome.kind === 'category' ? template.doc.outcome.labels : [];
    const done = await this.#serial(async () => {
      this.#checkOpen();
      // Crash-safe order: count the score and queue its packet, then forget the prediction. A
      // report cut short after its totals were saved finds the prediction counted (totals.last)
      // and only queues the packet again (same seq: the broker drops a duplicate as stale).
      const taken = await this.#predictions.peek(template.tplId, fpHex, observedAt);
      if (!taken) {
        throw new QisError('ERR_NO_PREDICTION', `no unscored prediction for this situation of ${template.doc.name} v${template.doc.version} received before ${new Date(observedAt).toISOString()}: query first, then report`);
      }
      const before = await this.#predictions.totals(template.tplId);
      const counted = before.last !== undefined && before.last.fp === fpHex && before.last.at === taken.at;
      let totals = before;
      let score: PredictionScore;
      if (counted) {
        score = before.last!.score;
      } else {
        score = scorePrediction(taken.prediction, actual, labels);
        const seq = Math.max(before.seq + 1, Math.floor(this.#now()));
        totals = { ...addScore(before, taken.prediction, score, actual, observedAt), seq, last: { fp: fpHex, at: taken.at, score } };
        await this.#predictions.saveTotals(template.tplId, totals);
      }
      const fields = scoreFieldsOf(totals, totals.seq, Math.floor(this.#now()));
      const { topic, bytes } = signScorePacket(this.key, template.tplId, fields, this.#backend());
      const entry = await this.#outbox.add('score', template.tplId, topic, totals.seq, bytes);
      await this.#predictions.forget(template.tplId, fpHex, taken.at);
      return { taken, score, fields, entry };
    });
    this.#wake();
    this.#drain();
    const acked = await this.#waitAck(done.entry, options.ackTimeoutMs ?? this.#o.ackTimeoutMs, options.signal);
    return {
      tplId: template.tplId,
      prediction: done.taken.prediction,
      predictedAt: done.taken.at,
      score: done.score,
      totals: done.fields,
      topic: done.entry.topic,
      seq: done.entry.seq,
      packet: done.entry.packet,
      acked,
    };
  }

  watch(template: Template, situation: Situation, options: WatchOptions = {}): WatchIterator {
    this.#checkOpen();
    const widen = options.widen ?? 0;
    this.#checkWiden(template, widen);
    const addr = address(template, situation);
    const filter = cohortFilter(addr, widen);
    const wantRetained = options.retained ?? true;
    const dropped: Partial<Record<ErrorCode, number>> = {};
    const listener: Listener = (topic, payload, retained) => {
      if (!topicMatches(filter, topic) || (retained && !wantRetained)) return;
      const fold = foldCohort([{ topic, payload }], { address: addr, widen, now: this.#now(), ...this.#backend() });
      const codes = Object.entries(fold.dropped) as [ErrorCode, number][];
      for (const [code, n] of codes) dropped[code] = (dropped[code] ?? 0) + n;
      if (codes.length > 0) return;
      // foldCohort keeps tombstones out of `packets`; re-check to hand the tombstone itself out.
      const r = checkPacket(topic, payload, { now: this.#now(), depth: addr.levels.length, ...this.#backend() });
      if (r.ok) ch.push({ packet: r.packet, retained });
    };
    const ch = new Channel<WatchEvent>(10_000, () => {
      this.#listeners.delete(listener);
      this.#watches.delete(ch);
      const n = (this.#subs.get(filter) ?? 1) - 1;
      if (n > 0) this.#subs.set(filter, n);
      else {
        this.#subs.delete(filter);
        if (this.#client) this.#unsubscribe(this.#client, [filter]);
      }
    });
    this.#watches.add(ch);
    this.#listeners.add(listener);
    this.#subs.set(filter, (this.#subs.get(filter) ?? 0) + 1);
    if (this.#state === 'connected' && this.#client) {
      // A denied subscription ends the watch with its error; a connection lost meanwhile does
      // not (the filter is subscribed again on the next connection).
      this.#subscribe(this.#client, [filter]).catch((e: unknown) => {
        if (isQisError(e) && e.code === 'ERR_SUBSCRIBE_DENIED') ch.end(e);
      });
    }
    if (options.signal) {
      if (options.signal.aborted) ch.end();
      options.signal.addEventListener('abort', () => ch.end(), { once: true });
    }
    return Object.assign(ch, { dropped });
  }

  // ------------------------------------------------------------------ lifecycle

  #checkOpen(): void {
    if (this.#state === 'closed') throw new QisError('ERR_CLOSED', 'the node is closed');
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#state = 'closed';
      this.#gen++;
      if (this.#reconnectTimer !== undefined) this.#timers.clearTimeout(this.#reconnectTimer);
      if (this.#stableTimer !== undefined) this.#timers.clearTimeout(this.#stableTimer);
      this.#wake(); // pending waits reject with ERR_CLOSED
      for (const c of [...this.#watches]) c.end();
      for (const c of [...this.#statusChannels]) c.end();
      await this.#writes.catch(() => undefined);
      await this.#predictions.settled();
      await Promise.allSettled([...this.#removals]);
      const client = this.#client;
      this.#client = undefined;
      if (client) await client.endAsync(true).catch(() => undefined);
      await this.#unlock();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function synthesisOptions(o: QueryOptions): SynthesisOptions {
  const { widen: _w, timeoutMs: _t, signal: _s, includeSuperseded: _i, remember: _r, ...rest } = o;
  return rest;
}

function hexFp(hex: string): Uint8Array {
  const fp = fromHex(hex);
  if (!fp || fp.length !== 16) throw new QisError('ERR_INTERNAL', `state file holds a bad fp ${JSON.stringify(hex)}`);
  return fp;
}

/** `{ a: undefined }` must not override a default. */
function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
