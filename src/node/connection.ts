/**
 * The node's one MQTT connection (mqtt.js 5, MQTT 3.1.1, clean session) and the state its other
 * parts share: connecting with exponential backoff and full jitter (mqtt.js's own fixed-period
 * reconnect is off), the status stream, waits that re-check on every change, subscriptions kept
 * across reconnects, and which kind of broker this is (asked once per connection, PROTOCOL §7).
 *
 * What happens to queued packets when a connection comes or goes is the publisher's: it is told
 * through {@link ConnectionHooks}.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { QisError, isQisError } from '../protocol/errors.js';
import type { Ed25519Backend } from '../protocol/identity.js';
import type { Duplex } from 'node:stream';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { BROKER_INFO_TOPIC, DETECT_TIMEOUT_MS, MOSQUITTO_VERSION_TOPIC, kindObserver, subscribeChecked, type BrokerKind } from './broker-kind.js';
import { Channel } from './channel.js';
import { networkError, probeTlsPort } from './net-errors.js';
import { guardStream } from './guard.js';
import { abortError, DEFAULTS, type Merged } from './options.js';
import { tlsClientOptions } from './tls.js';
import type { NodeStatus, Timers } from './types.js';

/** A connection that stays up this long resets the reconnect backoff. */
const STABLE_CONNECTION_MS = 10_000;

const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

export type Listener = (topic: string, payload: Uint8Array, retained: boolean) => void;
/** One connection's answer to "what broker is this?"; `lost` when the connection dropped first. */
interface KindEntry {
  readonly gen: number;
  result: BrokerKind | 'lost' | undefined;
}
export type State = 'connecting' | 'connected' | 'waiting' | 'closed';

/** What the publisher does when a connection comes up (send the outbox) or goes (count refusals). */
export interface ConnectionHooks {
  connected(): void;
  lost(): void;
}

export class Connection {
  readonly o: Merged;
  readonly clientId: string;
  readonly now: () => number;
  readonly timers: Timers;
  readonly #random: () => number;
  readonly #backoff: Required<BackoffOptions>;
  #hooks: ConnectionHooks = { connected: () => undefined, lost: () => undefined };
  #state: State = 'waiting';
  #client: MqttClient | undefined;
  /** Bumped on every connection: callbacks of an older connection are ignored. */
  #gen = 0;
  #attempt = 0;
  #everSettled = false;
  #reconnectTimer: unknown;
  #stableTimer: unknown;
  /** Every message of the connection goes to each of these. */
  readonly listeners = new Set<Listener>();
  /** Subscriptions kept across reconnects (watches), with reference counts. */
  readonly subs = new Map<string, number>();
  readonly #statusChannels = new Set<Channel<NodeStatus>>();
  /** Refusals found while opening (bad outbox files): every status() iterator starts with them. */
  readonly #openEvents: NodeStatus[] = [];
  /** Waiters for changes: connection state, acks, outbox size. */
  readonly #wakers = new Set<() => void>();
  /** The broker-kind detection of the current connection. */
  #kind: KindEntry | undefined;
  /** Credentials made at each connect (a node login carries the time, so it cannot be made once). */
  #credentials: (() => { username: string; password: Uint8Array }) | undefined;
  /** Why the last attempt failed at the socket or TLS level (cleared on connect). */
  #netError: QisError | undefined;
  /** Why the broker was cut off (an oversized packet), with the connection it happened on. */
  #fault: { gen: number; error: QisError } | undefined;

  constructor(o: Merged, backoff: Required<BackoffOptions>, clientId: string) {
    this.o = o;
    this.#backoff = backoff;
    this.clientId = clientId;
    this.now = o.now ?? Date.now;
    this.#random = o.random ?? Math.random;
    this.timers = o.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
  }

  setHooks(hooks: ConnectionHooks): void {
    this.#hooks = hooks;
  }

  get state(): State {
    return this.#state;
  }

  /** The client of the current connection, if any. */
  get client(): MqttClient | undefined {
    return this.#client;
  }

  /** The current connection's number: compare to know a callback's connection is gone. */
  get gen(): number {
    return this.#gen;
  }

  /** Whether a first connection attempt has ended either way (connected or failed). */
  get everSettled(): boolean {
    return this.#everSettled;
  }

  /** A PUBACK came: this connection works, so the backoff starts over. */
  resetBackoff(): void {
    this.#attempt = 0;
  }

  backend(): { backend?: Ed25519Backend } {
    return this.o.backend ? { backend: this.o.backend } : {};
  }

  /** The last attempt's network or TLS failure, while not connected. */
  get netError(): QisError | undefined {
    return this.#state === 'connected' ? undefined : this.#netError;
  }

  checkOpen(): void {
    if (this.#state === 'closed') throw new QisError('ERR_CLOSED', 'the node is closed');
  }

  // ------------------------------------------------------------------ status and wake-ups

  emit(s: NodeStatus): void {
    for (const c of this.#statusChannels) c.push(s);
  }

  openRefusal(s: NodeStatus): void {
    this.#openEvents.push(s);
  }

  /** A failed file operation, reported on the status stream (it happened in the background). */
  ioFailure(e: unknown): void {
    const err = isQisError(e) ? e : new QisError('ERR_FILE_IO', (e as Error).message, { cause: e });
    this.emit({ type: 'refused', code: err.code, message: err.message });
  }

  wake(): void {
    for (const w of [...this.#wakers]) w();
  }

  /**
   * Waits until `ready()` is true, re-checking on every state change, or rejects on timeout,
   * abort or close.
   */
  until<T>(ready: () => T | undefined, o: { deadline?: number; signal?: AbortSignal | undefined; what: string }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: unknown;
      const done = (): void => {
        this.#wakers.delete(check);
        if (timer !== undefined) this.timers.clearTimeout(timer);
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
        } else if (this.o.failFast && this.netError) {
          done();
          reject(this.netError);
        }
      };
      if (o.signal?.aborted) return reject(abortError(o.signal));
      o.signal?.addEventListener('abort', onAbort, { once: true });
      this.#wakers.add(check);
      if (o.deadline !== undefined) {
        const ms = Math.max(0, o.deadline - this.now());
        timer = this.timers.setTimeout(() => {
          done();
          reject(new QisError('ERR_TIMEOUT', `timed out after ${ms} ms waiting for ${o.what}`));
        }, ms);
      }
      check();
    });
  }

  /** Resolves after `ms`, or with 'lost' as soon as `lost()` says the connection went. */
  sleep(ms: number, signal: AbortSignal | undefined, lost: () => 'lost' | undefined): Promise<'lost' | true> {
    let elapsed = false;
    const t = this.timers.setTimeout(() => {
      elapsed = true;
      this.wake();
    }, ms);
    return this.until<'lost' | true>(() => lost() ?? (elapsed ? true : undefined), { signal, what: 'the quiet period' }).finally(() => this.timers.clearTimeout(t));
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

  // ------------------------------------------------------------------ connecting

  /** Every later connect sends the credentials `make` returns then (node login, PROTOCOL §11). */
  useCredentials(make: () => { username: string; password: Uint8Array }): void {
    this.#credentials = make;
  }

  start(): void {
    // Next tick: a status() iterator opened right after createNode() sees the first attempt.
    setImmediate(() => this.#connect());
  }

  #connect(): void {
    if (this.#state === 'closed') return;
    const gen = ++this.#gen;
    this.#state = 'connecting';
    this.emit({ type: 'connecting', attempt: this.#attempt, url: this.o.url });
    const opts = this.#clientOptions();
    let client: MqttClient;
    try {
      client = mqtt.connect(this.o.url, { ...opts, manualConnect: true });
      this.#guard(client, gen);
      client.connect();
    } catch (e) {
      this.emit({ type: 'refused', code: 'ERR_URL_INVALID', message: (e as Error).message });
      this.#lost(gen, (e as Error).message);
      return;
    }
    this.#client = client;
    let lastError = '';
    let netError: QisError | undefined;
    let refusedByConnack = false;
    client.on('connect', () => {
      if (gen !== this.#gen) return;
      this.#connected(client, gen);
    });
    client.on('message', (topic, payload, packet) => {
      if (gen !== this.#gen) return;
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      for (const l of this.listeners) l(topic, bytes, packet.retain);
    });
    client.on('error', (err: Error & { code?: unknown }) => {
      if (gen !== this.#gen) return;
      if (typeof err.code === 'number') {
        const why = CONNACK_REASONS[err.code] ?? 'refused';
        refusedByConnack = true;
        lastError = `broker refused the connection: ${why} (CONNACK return code ${err.code})`;
        this.emit({ type: 'refused', code: 'ERR_CONNECT_REFUSED', message: lastError });
      } else {
        lastError = err.message;
        netError ??= networkError(err, this.o.url);
      }
    });
    client.on('close', () => {
      if (gen !== this.#gen) return;
      const neverConnected = this.#state === 'connecting';
      if (netError) this.#netFailure(netError);
      else if (neverConnected && !refusedByConnack && !lastError) {
        // Closed before any CONNACK without a word: a TLS port answering our plain CONNECT?
        void probeTlsPort(this.o.url).then((e) => {
          if (e && this.#state !== 'connected' && this.#state !== 'closed') this.#netFailure(e);
        });
      }
      this.#lost(gen, lastError || netError?.message || 'connection closed');
    });
  }

  /** Said once per failure on the status stream; failFast waits reject with it. */
  #netFailure(e: QisError): void {
    this.#netError = e;
    this.emit({ type: 'refused', code: e.code, message: e.message });
    this.wake();
  }

  /**
   * Puts the size cap (guard.ts) on every stream the client opens. mqtt.js has no public hook
   * between making its stream and piping it into its parser, so this wraps its (private)
   * streamBuilder, before the client's first connect().
   */
  #guard(client: MqttClient, gen: number): void {
    const c = client as unknown as { streamBuilder: (c: MqttClient) => Duplex };
    const build = c.streamBuilder;
    const max = this.o.maxPacketBytes;
    c.streamBuilder = (cl) =>
      guardStream(build(cl), max, (announced) => {
        const error = new QisError('ERR_INCOMING_TOO_LARGE', `the broker sent an MQTT packet of ${Number.isFinite(announced) ? `${announced} bytes` : 'a malformed length'}; the node accepts at most ${max} (maxPacketBytes): connection dropped`);
        if (gen === this.#gen) {
          this.#fault = { gen, error };
          this.emit({ type: 'refused', code: error.code, message: error.message });
        }
        return error;
      });
  }

  /** The error that made the node drop a connection since connection `gen` (the broker was cut off for misbehaving). */
  faultSince(gen: number): QisError | undefined {
    return this.#fault !== undefined && this.#fault.gen >= gen ? this.#fault.error : undefined;
  }

  /**
   * `p`'s outcome, or ERR_TIMEOUT at `deadline`: a broker that never sends a SUBACK or a PUBACK
   * must not hold a query past its time limit (mqtt.js waits for acks for ever).
   */
  async within<T>(p: Promise<T>, o: { deadline: number; signal?: AbortSignal | undefined; what: string }): Promise<T> {
    let r: { ok: T } | { err: unknown } | undefined;
    p.then(
      (ok) => {
        r = { ok };
        this.wake();
      },
      (err: unknown) => {
        r = { err };
        this.wake();
      },
    );
    const got = await this.until(() => r, o);
    if ('err' in got) throw got.err;
    return got.ok;
  }

  #clientOptions(): IClientOptions {
    const made = this.#credentials?.();
    const credentials = made ? { username: made.username, password: Buffer.from(made.password) } : {};
    return {
      clientId: this.clientId,
      protocolVersion: 4,
      clean: true,
      keepalive: this.o.keepaliveS,
      connectTimeout: this.o.connectTimeoutMs,
      reconnectPeriod: 0, // ours: backoff with jitter
      resubscribe: false,
      queueQoSZero: false,
      ...(this.o.username !== undefined ? { username: this.o.username } : {}),
      ...(this.o.password !== undefined ? { password: this.o.password } : {}),
      ...credentials,
      ...tlsClientOptions(this.o.tls),
    };
  }

  #connected(client: MqttClient, gen: number): void {
    this.#state = 'connected';
    this.#netError = undefined;
    // The backoff starts over only once a connection has proved itself (stayed up, or carried a
    // PUBACK): a broker that accepts the connection and then refuses a packet must not make
    // the node reconnect in a tight loop.
    this.#stableTimer = this.timers.setTimeout(() => {
      if (gen === this.#gen) this.#attempt = 0;
    }, STABLE_CONNECTION_MS);
    this.#everSettled = true;
    this.emit({ type: 'connected', url: this.o.url });
    const filters = [...this.subs.keys()];
    if (filters.length > 0) {
      client.subscribe(Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }])), (err) => {
        if (err && gen === this.#gen) this.emit({ type: 'refused', code: 'ERR_SUBSCRIBE_DENIED', message: err.message });
      });
    }
    this.wake();
    this.#hooks.connected();
  }

  #lost(gen: number, reason: string): void {
    if (gen !== this.#gen || this.#state === 'closed') return;
    const wasConnected = this.#state === 'connected';
    this.#gen++; // ignore anything more from this connection
    this.#client?.end(true);
    this.#client = undefined;
    this.#state = 'waiting';
    this.#everSettled = true;
    if (this.#stableTimer !== undefined) this.timers.clearTimeout(this.#stableTimer);
    this.#hooks.lost();
    if (wasConnected) this.emit({ type: 'disconnected', reason });
    const delayMs = backoffDelay(this.#attempt, this.#backoff, this.#random);
    this.#attempt++;
    this.emit({ type: 'reconnecting', attempt: this.#attempt, delayMs });
    this.#reconnectTimer = this.timers.setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, delayMs);
    this.wake();
  }

  waitConnected(deadline: number, signal: AbortSignal | undefined): Promise<MqttClient> {
    return this.until(() => (this.#state === 'connected' ? this.#client : undefined), {
      deadline,
      signal,
      what: `a connection to ${this.o.url}`,
    });
  }

  // ------------------------------------------------------------------ subscriptions

  /**
   * Subscribes (one SUBSCRIBE). Queries use QoS 0: on one clean-session connection, TCP already
   * delivers the retained packets in order, and QoS 1 would cost the broker a stored in-flight
   * message and the client a PUBACK per packet of the cohort; a lost connection restarts the query.
   */
  subscribe(client: MqttClient, filters: readonly string[], qos: 0 | 1 = 1): Promise<void> {
    return subscribeChecked(client, filters, qos);
  }

  /** Unsubscribes the filters no watch holds, if that connection is still the current one. */
  unsubscribe(client: MqttClient, filters: readonly string[]): void {
    const drop = filters.filter((f) => !this.subs.has(f));
    if (drop.length > 0 && this.#client === client && this.#state === 'connected') client.unsubscribe(drop, () => undefined);
  }

  // ------------------------------------------------------------------ broker kind (PROTOCOL §7)

  async brokerKind(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<BrokerKind> {
    this.checkOpen();
    if (this.o.brokerKind !== 'auto') return this.o.brokerKind;
    const deadline = this.now() + (options.timeoutMs ?? DEFAULTS.queryTimeoutMs);
    for (;;) {
      await this.waitConnected(deadline, options.signal);
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
      const r = await this.until(() => e.result, { deadline, signal: options.signal, what: 'the broker kind' });
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
      this.wake();
    };
    if (!client || entry.gen !== this.#gen) return settle('lost');
    const sync = `qis/1/sync/${this.clientId}/${randomBytes(6).toString('hex')}`;
    const seen = kindObserver(sync);
    const listener: Listener = (topic, payload) => {
      seen.observe(topic, payload);
      this.wake();
    };
    this.listeners.add(listener);
    const subscribed: string[] = [];
    const lost = (): 'lost' | undefined => (entry.gen !== this.#gen ? 'lost' : undefined);
    // A broker that never acks the detection's SUBSCRIBE or marker is no broker of known ordering.
    const acks = { deadline: this.now() + DETECT_TIMEOUT_MS, what: 'the broker-kind acks' };
    try {
      try {
        await this.within(this.subscribe(client, [sync, BROKER_INFO_TOPIC], 0), acks);
        subscribed.push(sync, BROKER_INFO_TOPIC);
        // An ACL may deny $SYS; that only rules out recognising Mosquitto.
        await this.within(this.subscribe(client, [MOSQUITTO_VERSION_TOPIC], 0), acks).then(
          () => subscribed.push(MOSQUITTO_VERSION_TOPIC),
          (e: unknown) => {
            if (!(isQisError(e) && e.code === 'ERR_SUBSCRIBE_DENIED')) throw e;
          },
        );
        await this.within(client.publishAsync(sync, Buffer.from('?'), { qos: 1 }), acks);
      } catch (e) {
        if (isQisError(e) && e.code === 'ERR_CLOSED') throw e;
        return settle(lost() ?? 'unknown'); // denied, unanswered, or the connection went away
      }
      let timedOut = false;
      const t = this.timers.setTimeout(() => {
        timedOut = true;
        this.wake();
      }, DETECT_TIMEOUT_MS);
      try {
        const r = await this.until<'lost' | 'synced' | 'timeout'>(() => lost() ?? (seen.synced ? 'synced' : timedOut ? 'timeout' : undefined), { what: 'the sync marker' });
        settle(r === 'lost' ? 'lost' : r === 'timeout' ? 'unknown' : seen.kind);
      } finally {
        this.timers.clearTimeout(t);
      }
    } catch {
      settle('lost'); // closed
    } finally {
      this.listeners.delete(listener);
      this.unsubscribe(client, subscribed);
    }
  }

  // ------------------------------------------------------------------ closing

  /** Marks the node closed: timers stop, every pending wait rejects with ERR_CLOSED. */
  shutdown(): void {
    this.#state = 'closed';
    this.#gen++;
    if (this.#reconnectTimer !== undefined) this.timers.clearTimeout(this.#reconnectTimer);
    if (this.#stableTimer !== undefined) this.timers.clearTimeout(this.#stableTimer);
    this.wake(); // pending waits reject with ERR_CLOSED
  }

  endStatus(): void {
    for (const c of [...this.#statusChannels]) c.end();
  }

  async endClient(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (client) await client.endAsync(true).catch(() => undefined);
  }
}
