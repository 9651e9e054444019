/**
 * The broker's limits (issue 13, `limits` in the options; docs/security.md): what a client, or all
 * of them, may cost. Connections are counted per address and in all before Aedes sees them;
 * each client's MQTT parser refuses a packet from its fixed header, before buffering it (and a
 * PUBLISH whose topic name is not valid UTF-8 or holds U+0000, MQTT 3.1.1 §1.5.3, §4.7.3);
 * keepalive is capped at CONNECT; subscriptions per client and ordinary retained messages are
 * bounded. Every hit is counted in `qis_limit_hits_total{code}` and logged once per episode.
 *
 * The decisions are pure functions (checkPacketSize, checkTopicName, …) so each code can be
 * produced alone; `createLimits` wires them to a broker.
 */
import { isUtf8 } from 'node:buffer';
import type { AedesOptions, Client } from 'aedes';
import { QisError, type ErrorCode } from '../../src/index.js';
import { RateLimiter, type Decision } from '../admission.js';
import type { LimitOptions } from '../options.js';
import type { IPublishPacket } from 'mqtt-packet';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import type { BrokerOptions } from '../options.js';

/** What the limits use of the broker (a part of BrokerContext, named here so context.ts can hold a Limits without an import circle). */
export interface LimitsDeps {
  readonly options: Pick<BrokerOptions, 'limits'>;
  readonly metrics: Pick<Metrics, 'limitHits'>;
  readonly logger: Logger;
  readonly now: () => number;
}

const refusal = (code: ErrorCode, message: string): Decision => ({ action: 'refuse', code, message });
const PASS: Decision = { action: 'pass' };

/** A packet of `length` bytes (remaining length) from a client connected or not yet. */
export function checkPacketSize(length: number, connected: boolean, l: Pick<LimitOptions, 'maxPacketSize' | 'maxConnectPacketSize'>): Decision {
  const max = connected ? l.maxPacketSize : l.maxConnectPacketSize;
  return length > max ? refusal('ERR_MQTT_PACKET_TOO_LARGE', `a packet of ${length} bytes ${connected ? '' : 'before CONNECT '}is over the limit of ${max}`) : PASS;
}

/** A PUBLISH topic name as its raw bytes: MQTT 3.1.1 §1.5.3 (well-formed UTF-8) and §4.7.3 (no U+0000). */
export function checkTopicName(bytes: Uint8Array): Decision {
  if (bytes.includes(0)) return refusal('ERR_TOPIC_NAME_INVALID', 'a topic name holds U+0000');
  return isUtf8(bytes) ? PASS : refusal('ERR_TOPIC_NAME_INVALID', 'a topic name is not well-formed UTF-8');
}

/** The keepalive the broker will use for one asked (seconds), and whether it was capped. */
export function capKeepalive(asked: number, maxKeepalive: number): { keepalive: number; decision: Decision } {
  if (asked > 0 && asked <= maxKeepalive) return { keepalive: asked, decision: PASS };
  return { keepalive: maxKeepalive, decision: refusal('ERR_KEEPALIVE_CAPPED', `keepalive ${asked} capped to ${maxKeepalive} s`) };
}

/** One more subscription for a client that holds `held`. */
export function checkSubscriptionCount(held: number, max: number): Decision {
  return held >= max ? refusal('ERR_TOO_MANY_SUBSCRIPTIONS', `a client holds ${held} subscriptions, the limit`) : PASS;
}

/** A connection without CONNECT after `ms` (Aedes closes it; this names it). */
export function connectTimedOut(ms: number): Decision {
  return refusal('ERR_CONNECT_TIMEOUT', `no CONNECT within ${ms} ms`);
}

/** Open connections, in all and per remote address, and new ones per second per address. */
export class ConnectionGate {
  readonly #perAddress = new Map<string, number>();
  #total = 0;
  readonly #rate: RateLimiter;
  constructor(private readonly l: LimitOptions) {
    this.#rate = new RateLimiter(l.connectRatePerSecond, l.connectBurst);
  }
  /** Counts the connection when it passes; the caller calls `release` once it closes. */
  admit(address: string, now: number): Decision {
    const n = this.#perAddress.get(address) ?? 0;
    if (this.#total >= this.l.maxConnections) return refusal('ERR_TOO_MANY_CONNECTIONS', `${this.#total} connections open, the limit`);
    if (n >= this.l.maxConnectionsPerAddress) return refusal('ERR_TOO_MANY_CONNECTIONS', `${n} connections open from one address, the limit`);
    if (!this.#rate.take(address, now)) return refusal('ERR_TOO_MANY_CONNECTIONS', 'connections from one address faster than the rate limit');
    this.#perAddress.set(address, n + 1);
    this.#total++;
    return PASS;
  }
  release(address: string): void {
    const n = (this.#perAddress.get(address) ?? 1) - 1;
    if (n <= 0) this.#perAddress.delete(address);
    else this.#perAddress.set(address, n);
    this.#total = Math.max(0, this.#total - 1);
  }
  prune(now: number): void {
    this.#rate.prune(now);
  }
}

/** Retained messages kept on ordinary topics, in count and payload bytes. */
export class RetainedBudget {
  readonly #sizes = new Map<string, number>();
  #bytes = 0;
  constructor(private readonly l: Pick<LimitOptions, 'maxRetained' | 'maxRetainedBytes'>) {}
  /** A retained `topic` of `bytes` (0: a delete, always passes). Counted when it passes. */
  admit(topic: string, bytes: number): Decision {
    const old = this.#sizes.get(topic);
    if (bytes === 0) {
      this.#forget(topic);
      return PASS;
    }
    const count = this.#sizes.size + (old === undefined ? 1 : 0);
    const total = this.#bytes - (old ?? 0) + bytes;
    if (count > this.l.maxRetained) return refusal('ERR_RETAINED_LIMIT', `${this.#sizes.size} retained messages kept outside qis/1/, the limit`);
    if (total > this.l.maxRetainedBytes) return refusal('ERR_RETAINED_LIMIT', `retained messages outside qis/1/ would hold ${total} bytes, over ${this.l.maxRetainedBytes}`);
    this.#sizes.set(topic, bytes);
    this.#bytes = total;
    return PASS;
  }
  #forget(topic: string): void {
    this.#bytes -= this.#sizes.get(topic) ?? 0;
    this.#sizes.delete(topic);
  }
  /** A refused replacement: the topic's old message is deleted too (never a stale one kept). */
  refused(topic: string): void {
    this.#forget(topic);
  }
}

/** How long a limit must stay quiet before its next hit is logged again, ms. */
export const EPISODE_QUIET_MS = 60_000;

/**
 * Counts every hit; logs the first of an episode (a code not hit for EPISODE_QUIET_MS), with how
 * many hits the log left out since the last line, so a flood costs one line a minute per code.
 */
export class Episodes {
  readonly #last = new Map<ErrorCode, { at: number; quiet: number }>();
  constructor(private readonly ctx: Pick<LimitsDeps, 'metrics' | 'logger' | 'now'>) {}
  hit(code: ErrorCode, message: string, fields: Record<string, unknown> = {}): void {
    this.ctx.metrics.limitHits.inc({ code });
    const now = this.ctx.now();
    const e = this.#last.get(code);
    if (e && now - e.at < EPISODE_QUIET_MS) {
      e.at = now;
      e.quiet++;
      return;
    }
    this.ctx.logger.warn({ code, ...fields, ...(e ? { notLogged: e.quiet } : {}) }, `${message} (limit hit; further hits of this code are counted, not logged, until ${EPISODE_QUIET_MS / 1000} s pass without one)`);
    this.#last.set(code, { at: now, quiet: 0 });
  }
}

/** The parts of mqtt-packet's parser the packet-size and topic-name checks hook (one parser per client). */
interface ParserInternals {
  packet: { cmd: string; length: number };
  _list: { length: number; readUInt16BE(offset: number): number; slice(start: number, end: number): Buffer };
  _parseLength(): boolean;
  _parsePayload(): boolean;
  _emitError(e: Error): void;
}

type AedesClient = Client & { connected?: boolean; conn: NodeJS.EventEmitter; _parser?: ParserInternals };

export interface Limits {
  readonly episodes: Episodes;
  readonly retained: RetainedBudget;
  /** A new connection (TCP/TLS socket or WebSocket): false when refused (the caller destroys it). */
  accept(address: string, onClose: (release: () => void) => void): boolean;
  /** A client Aedes made for a connection: its parser refuses over-size packets and bad topic names. */
  attach(client: Client): void;
  /** Wraps a preConnect hook: keepalive is capped before Aedes reads it. */
  preConnect(inner: NonNullable<AedesOptions['preConnect']>): NonNullable<AedesOptions['preConnect']>;
  /** One more subscription for `client` (a filter it does not hold yet). */
  subscription(client: Client, topic: string): Decision;
  /** Whether a retained ordinary publish is kept (counted when it is). */
  keepRetained(packet: IPublishPacket): boolean;
  prune(now: number): void;
}

export function createLimits(ctx: LimitsDeps): Limits {
  const l = ctx.options.limits;
  const episodes = new Episodes(ctx);
  const gate = new ConnectionGate(l);
  const retained = new RetainedBudget(l);
  const hit = (d: Decision, fields: Record<string, unknown>): boolean => {
    if (d.action !== 'refuse') return false;
    episodes.hit(d.code, d.message, fields);
    return true;
  };
  return {
    episodes,
    retained,
    accept(address, onClose) {
      if (hit(gate.admit(address, ctx.now()), { address })) return false;
      onClose(() => gate.release(address));
      return true;
    },
    attach(client) {
      const c = client as AedesClient;
      const p = c._parser;
      c.on('error', (e: Error) => {
        if (e.message === 'connect did not arrive in time') hit(connectTimedOut(l.connectTimeoutMs), {});
      });
      // Without these private hooks mqtt-packet buffers a packet whole before anything can look
      // at it (issue 13: six 256 MB announcements held 1.6 GB); the tests fail if Aedes changes them.
      if (!p || typeof p._parseLength !== 'function' || typeof p._parsePayload !== 'function') throw new QisError('ERR_INTERNAL', 'mqtt-packet parser internals changed: the packet-size limit cannot be enforced');
      const parseLength = p._parseLength.bind(p);
      const parsePayload = p._parsePayload.bind(p);
      const refuse = (d: Decision): false => {
        hit(d, { clientId: c.id ?? undefined });
        p._emitError(new QisError(d.action === 'refuse' ? d.code : 'ERR_INTERNAL', d.action === 'refuse' ? d.message : ''));
        return false;
      };
      p._parseLength = () => {
        if (!parseLength()) return false;
        const d = checkPacketSize(p.packet.length, c.connected === true, l);
        return d.action === 'refuse' ? refuse(d) : true;
      };
      p._parsePayload = () => {
        const list = p._list;
        if (p.packet.cmd === 'publish' && list.length >= p.packet.length && p.packet.length >= 2) {
          const n = list.readUInt16BE(0);
          if (2 + n <= p.packet.length) {
            const d = checkTopicName(list.slice(2, 2 + n));
            if (d.action === 'refuse') return refuse(d);
          }
        }
        return parsePayload();
      };
    },
    preConnect(inner) {
      return (client, packet, cb) => {
        const { keepalive, decision } = capKeepalive(packet.keepalive ?? 0, l.maxKeepalive);
        hit(decision, { clientId: packet.clientId });
        packet.keepalive = keepalive;
        inner(client, packet, cb);
      };
    },
    subscription(client, topic) {
      const subs = (client as Client & { subscriptions: Record<string, unknown> }).subscriptions;
      if (topic in subs) return PASS;
      const d = checkSubscriptionCount(Object.keys(subs).length, l.maxSubscriptionsPerClient);
      hit(d, { clientId: client.id });
      return d;
    },
    keepRetained(packet) {
      const d = retained.admit(packet.topic, (packet.payload as Buffer).length);
      if (!hit(d, { topic: packet.topic })) return true;
      retained.refused(packet.topic);
      return false;
    },
    prune(now) {
      gate.prune(now);
    },
  };
}
