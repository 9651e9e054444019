/**
 * MQTT steps of a link: subscribe (a refused grant is an error), the sync-marker round trip,
 * asking what the peer is, and requests to a qis peer with their answers.
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { QisError } from '../../src/index.js';
import { FED_REQ } from './common.js';

export function subscribe(c: MqttClient, filters: string[], qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) =>
    c.subscribe(filters, { qos }, (e, granted) => {
      if (e) return reject(e);
      const bad = granted?.find((g) => g.qos === 128);
      if (bad) return reject(new QisError('ERR_SUBSCRIBE_DENIED', `peer refused the subscription to ${bad.topic}`));
      resolve();
    }),
  );
}

/** Publishes a marker to ourselves and waits until it comes back (after the retained messages of earlier subscriptions). */
export function marker(c: MqttClient, topic: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.off('message', on);
      c.off('end', gone);
      reject(new QisError('ERR_TIMEOUT', 'the peer did not return the sync marker'));
    }, 30_000);
    timer.unref();
    // A link closed meanwhile (broker shutting down) ends the wait at once.
    const gone = (): void => {
      clearTimeout(timer);
      c.off('message', on);
      reject(new QisError('ERR_CLOSED', 'the link closed while waiting for the sync marker'));
    };
    c.once('end', gone);
    const on = (t: string): void => {
      if (t !== topic) return;
      c.off('end', gone);
      clearTimeout(timer);
      c.off('message', on);
      c.unsubscribe(topic);
      resolve();
    };
    c.on('message', on);
    c.subscribe(topic, { qos: 1 }, (e) => {
      if (e) {
        clearTimeout(timer);
        return reject(e);
      }
      c.publish(topic, 'm', { qos: 1 });
    });
  });
}
/** What a peer's qis/1/broker says: a qis broker (digest catch-up) or anything else, and a federating qis broker's region and key id. */
export interface PeerInfo {
  readonly kind: 'qis' | 'mqtt';
  readonly region?: string;
  readonly key?: string;
}

/** A qis broker keeps qis/1/broker retained; anything else (Mosquitto) gets the full retained exchange. */
export function detectPeer(c: MqttClient): Promise<PeerInfo> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (info: PeerInfo): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      c.off('message', on);
      c.unsubscribe('qis/1/broker');
      resolve(info);
    };
    const on = (topic: string, payload: Buffer): void => {
      if (topic !== 'qis/1/broker') return;
      try {
        const v = JSON.parse(payload.toString()) as { kind?: unknown; region?: unknown; key?: unknown };
        if (v.kind !== 'qis') return finish({ kind: 'mqtt' });
        finish({ kind: 'qis', ...(typeof v.region === 'string' ? { region: v.region } : {}), ...(typeof v.key === 'string' ? { key: v.key } : {}) });
      } catch {
        finish({ kind: 'mqtt' });
      }
    };
    c.on('message', on);
    const timer = setTimeout(() => finish({ kind: 'mqtt' }), 2_000);
    c.subscribe('qis/1/broker', { qos: 0 }, (e) => {
      if (e) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}
/** How long a catch-up request waits for its answer, ms (live 'put' batches have their own, shorter bound: federation.putTimeoutMs). */
export const REQUEST_TIMEOUT_MS = 30_000;

/** A link's requests to a qis peer (on qis/1/f/req/<its clientId>) and their answers (qis/1/f/res/<its clientId>), matched by id. */
export class Requests {
  readonly #waiters = new Map<string, (payload: Buffer) => void>();
  /** Connections this link is done with: a request on one fails at once (it might never be answered). */
  readonly #retired = new WeakSet<MqttClient>();
  constructor(
    private readonly clientId: string,
    private readonly peer: string,
  ) {}

  /** Sends `body` with a fresh id and resolves with the parsed answer; `meter.bytes` counts both payloads; ERR_TIMEOUT after `timeoutMs`. */
  async request(c: MqttClient, body: Record<string, unknown>, meter?: { bytes: number }, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Record<string, unknown>> {
    // Never queued by mqtt.js while offline: a catch-up at the next connection covers it.
    if (!c.connected || this.#retired.has(c)) throw new QisError('ERR_CLOSED', 'link not connected');
    const id = randomBytes(6).toString('hex');
    const payload = Buffer.from(JSON.stringify({ id, ...body }));
    if (meter) meter.bytes += payload.length;
    const answer = new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(id);
        reject(new QisError('ERR_TIMEOUT', `peer ${this.peer} did not answer a ${String(body.op)} request within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#waiters.set(id, (b) => {
        clearTimeout(timer);
        if (b.length === 0) reject(new QisError('ERR_CLOSED', 'link closed during catch-up'));
        else resolve(b);
      });
    });
    // QoS 0: the answer is the acknowledgement. A request or answer lost with its connection
    // fails at once (failAll); a PUBACK each way would only cost both brokers a packet per batch.
    c.publish(`${FED_REQ}${this.clientId}`, payload, { qos: 0 });
    const res = await answer;
    if (meter) meter.bytes += res.length;
    return JSON.parse(res.toString('utf8')) as Record<string, unknown>;
  }

  /** An answer arrived: its request resolves (false: the payload is not JSON with an id). */
  answered(payload: Buffer): boolean {
    try {
      const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
      const w = typeof id === 'string' ? this.#waiters.get(id) : undefined;
      if (w) {
        this.#waiters.delete(id as string);
        w(payload);
      }
      return true;
    } catch {
      return false;
    }
  }

  /**
   * The connection ended (or the link closes): every waiting request fails with ERR_CLOSED, and so
   * does any later request on `c` (a catch-up still running would otherwise send one on a
   * connection that is closing, and wait its whole timeout).
   */
  failAll(c?: MqttClient): void {
    if (c) this.#retired.add(c);
    for (const w of this.#waiters.values()) w(Buffer.alloc(0));
    this.#waiters.clear();
  }
}
