/**
 * Forwarding: what this broker admitted goes to the peer, to a qis peer in 'put' batches
 * (admitted there concurrently, so its disk syncs are shared), to any other as retained QoS 1
 * publishes. Batching is Nagle-style, with no timer: while fewer than IN_FLIGHT batches wait for
 * the peer's answer a packet goes at once (a batch of one on an idle link); what arrives while
 * IN_FLIGHT are unanswered queues and goes as the next batch (up to BATCH) the moment an answer
 * comes. Unacknowledged forwards (queued or sent) are bounded: past MAX_PENDING the link stops
 * forwarding and catches up once the peer drained. Forwards a qis peer refused for a transient
 * reason are sent again (retry.ts).
 */
import type { MqttClient } from 'mqtt';
import { QisError } from '../../src/index.js';
import { FORWARDED_PREFIXES, isRevocation, passes, tplOf } from './common.js';
import { RetryQueue } from './retry.js';
import type { CatchUpTrigger, LinkState } from './state.js';

/** Unacknowledged forwards above which a link stops forwarding and catches up once it drained. */
const MAX_PENDING = 10_000;
/** Packets per 'put' batch to a qis peer. */
export const BATCH = 256;
/**
 * Live 'put' batches a link keeps unanswered at once. Two: the next batch is on the wire while the
 * peer admits the one before (it admits a link's batches in turn, each once the one before is
 * relayed), so a hop costs one admission, not an admission plus a round trip; more would only
 * queue at the peer.
 */
export const IN_FLIGHT = 2;
/** Default of federation.putTimeoutMs: how long a live batch waits for its answer before the link reconnects. */
export const PUT_TIMEOUT_MS = 10_000;

export class Outbox {
  #pending = 0;
  #overflow = false;
  /** Packets for a qis peer waiting for a free batch slot (counted in #pending), and when each was admitted here (performance.now()). */
  #queue: [string, Uint8Array][] = [];
  #queuedAt: number[] = [];
  /** Live batches sent on the current connection and not answered yet. */
  #inFlight = 0;
  readonly #drainWaiters: (() => void)[] = [];
  readonly #retry: RetryQueue<[string, Uint8Array]>;

  /**
   * @param putTimeoutMs how long a live batch waits for its answer; past it the connection is
   * ended, and the link reconnects and catches up (a peer that stopped answering would otherwise
   * hold IN_FLIGHT slots, and with them all forwarding, for the whole request timeout).
   */
  constructor(
    private readonly s: LinkState,
    private readonly behind: CatchUpTrigger,
    private readonly putTimeoutMs: number = PUT_TIMEOUT_MS,
  ) {
    this.#retry = new RetryQueue({
      send: (items) => this.#resend(items),
      lost: (n) => {
        this.s.log.warn({ packets: n }, 'forwards waiting for a retry dropped; a catch-up will send what differs');
        this.behind.soon();
      },
    });
  }

  /** Forwards a packet this broker admitted (skipped while disconnected: the next catch-up carries it). */
  forward(topic: string, payload: Uint8Array): void {
    if (!this.s.connected || !this.s.client) return;
    if (!FORWARDED_PREFIXES.some((x) => topic.startsWith(x))) return;
    // An admitted topic is well formed: with a share of '*' it need not be parsed again.
    if (!isRevocation(topic) && !this.s.peer.share.includes('*')) {
      const tplId = tplOf(topic);
      if (tplId === undefined || !passes(this.s.peer.share, tplId)) return;
    }
    if (this.#pending >= MAX_PENDING) {
      // A slow peer: stop queueing; once it drained, a catch-up sends what differs.
      if (!this.#overflow) this.s.log.warn({ pending: this.#pending }, 'federation link is slow; forwarding paused until it catches up');
      this.#overflow = true;
      return;
    }
    this.send(topic, payload);
  }

  /**
   * Documents a peer needs before any packet of theirs (template documents, revocation lists), at
   * connect: to a qis peer as 'put' batches awaited in turn, so they are admitted before the
   * catch-up's first put, which does not queue behind live forwards; to any other peer as
   * publishes, in order on the one connection.
   */
  async sendFirst(c: MqttClient, items: readonly [string, Uint8Array][]): Promise<void> {
    if (this.s.peerKind !== 'qis') {
      for (const [topic, bytes] of items) this.send(topic, bytes);
      return;
    }
    for (let i = 0; i < items.length && this.s.client === c; i += BATCH) await this.put(c, items.slice(i, i + BATCH));
  }

  /** Forwards one packet: to a qis peer in batches; otherwise a retained QoS 1 publish. */
  send(topic: string, payload: Uint8Array): void {
    const c = this.s.client;
    if (!c) return;
    if (this.s.peerKind === 'qis') {
      this.#queue.push([topic, Uint8Array.from(payload)]);
      this.#queuedAt.push(performance.now());
      this.#setPending(this.#pending + 1);
      this.#pump(c);
      return;
    }
    const t0 = performance.now();
    this.#setPending(this.#pending + 1);
    c.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos: 1, retain: true }, (e) => {
      if (this.s.client !== c) return;
      this.#setPending(Math.max(0, this.#pending - 1));
      if (!e) {
        this.s.m.forwarded.inc({ peer: this.s.name, direction: 'out' });
        this.s.m.lag.set({ peer: this.s.name }, performance.now() - t0); // sent as it was admitted
        this.s.m.hop.observe({ peer: this.s.name }, (performance.now() - t0) / 1000);
      }
      this.#afterAck();
    });
  }

  /** Sends what queued, a batch at a time, while fewer than IN_FLIGHT are unanswered. */
  #pump(c: MqttClient): void {
    while (this.#inFlight < IN_FLIGHT && this.#queue.length > 0 && this.s.client === c) {
      const items = this.#queue.length <= BATCH ? this.#queue : this.#queue.slice(0, BATCH);
      const admittedAt = this.#queuedAt[items.length - 1] as number;
      this.#queue = items === this.#queue ? [] : this.#queue.slice(BATCH);
      this.#queuedAt = this.#queue.length === 0 ? [] : this.#queuedAt.slice(BATCH);
      this.#inFlight++;
      void this.#putOnce(c, items, undefined, { admittedAt }).then((r) => {
        this.#retry.add(r.again);
        if (this.s.client !== c) return; // disconnected() started again from 0
        this.#inFlight--;
        this.#pump(c);
      });
    }
  }

  /**
   * One batch of packets to a qis peer (op 'put'); resolves with how many it stored. What the peer
   * refused for a transient reason waits in the retry queue; other failures leave the rest to a
   * catch-up. `meter` counts a catch-up's bytes.
   */
  async put(c: MqttClient, items: [string, Uint8Array][], meter?: { bytes: number }): Promise<number> {
    const r = await this.#putOnce(c, items, meter);
    this.#retry.add(r.again);
    return r.stored;
  }

  /**
   * One 'put' request: how many the peer stored, and the items it refused for a transient reason
   * (its answer's `retry` indexes). `live`: queued live forwards (already in #pending), with when
   * the batch's last packet was admitted here; a live batch waits putTimeoutMs for its answer, and
   * past that the connection is ended (the link reconnects and catches up).
   */
  async #putOnce(c: MqttClient, items: [string, Uint8Array][], meter?: { bytes: number }, live?: { admittedAt: number }): Promise<{ stored: number; again: [string, Uint8Array][] }> {
    const t0 = performance.now();
    if (!live) this.#setPending(this.#pending + items.length);
    let stored = 0;
    let again: [string, Uint8Array][] = [];
    try {
      const body = { op: 'put', items: items.map(([t, b]) => [t, Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')]) };
      const res = await (live ? this.s.requests.request(c, body, meter, this.putTimeoutMs) : this.s.requests.request(c, body, meter));
      stored = typeof res.stored === 'number' ? res.stored : 0;
      again = retryItems(res.retry, items);
      const now = performance.now();
      this.s.m.forwarded.inc({ peer: this.s.name, direction: 'out' }, items.length - again.length);
      this.s.m.lag.set({ peer: this.s.name }, now - (live?.admittedAt ?? t0));
      this.s.m.hop.observe({ peer: this.s.name }, (now - t0) / 1000);
    } catch (e) {
      if (this.s.client === c) {
        const timedOut = live !== undefined && e instanceof QisError && e.code === 'ERR_TIMEOUT';
        if (timedOut) {
          this.s.log.warn({ code: 'ERR_TIMEOUT', packets: items.length, timeoutMs: this.putTimeoutMs }, 'the peer did not answer a batch in time; reconnecting (a catch-up will send what differs)');
          c.end(true);
        } else {
          this.s.log.warn({ err: (e as Error).message, packets: items.length }, 'a batch to the peer failed; a catch-up will send what differs');
          this.behind.soon();
        }
      }
    } finally {
      if (this.s.client === c) {
        this.#setPending(Math.max(0, this.#pending - items.length));
        this.#afterAck();
      }
    }
    return { stored, again };
  }

  /** A retry round: the waiting forwards again, in batches, on the current connection. */
  async #resend(items: [string, Uint8Array][]): Promise<{ progressed: number; again: [string, Uint8Array][] }> {
    const c = this.s.client;
    if (!c || !this.s.connected) throw new Error('link not connected');
    let again: [string, Uint8Array][] = [];
    for (let i = 0; i < items.length; i += BATCH) again = again.concat((await this.#putOnce(c, items.slice(i, i + BATCH))).again);
    return { progressed: items.length - again.length, again };
  }

  /** Forwards waiting to be sent again. */
  retrying(): number {
    return this.#retry.size;
  }

  #setPending(n: number): void {
    this.#pending = n;
    this.s.m.pending.set({ peer: this.s.name }, n);
  }

  #afterAck(): void {
    if (this.#pending !== 0) return;
    for (const w of this.#drainWaiters.splice(0)) w();
    if (this.#overflow) {
      this.#overflow = false;
      this.behind.now();
    }
  }

  /** Resolves once every forward is acknowledged (or at once without a connection). */
  drained(): Promise<void> {
    if (this.#pending === 0 || !this.s.client) return Promise.resolve();
    return new Promise((r) => this.#drainWaiters.push(r));
  }

  /** The connection ended: nothing is pending on it any more. */
  disconnected(): void {
    this.#queue = []; // the catch-up at the next connection sends what differs
    this.#queuedAt = [];
    this.#inFlight = 0;
    this.#setPending(0);
    this.#retry.clear(); // the catch-up at the next connection sends what differs
  }

  /** The link is closing: drain waiters go, nothing queued is sent. */
  close(): void {
    this.#retry.close();
    for (const w of this.#drainWaiters.splice(0)) w();
    this.#queue = [];
    this.#queuedAt = [];
  }
}

/** The items a 'put' answer's `retry` (indexes into the batch) names; anything malformed names none. */
function retryItems<T>(retry: unknown, items: readonly T[]): T[] {
  if (!Array.isArray(retry)) return [];
  const out: T[] = [];
  for (const i of new Set(retry)) if (Number.isInteger(i) && (i as number) >= 0 && (i as number) < items.length) out.push(items[i as number] as T);
  return out;
}
