/**
 * Receiving: packets the peer sends on the forwarded prefixes go through this broker's admission
 * (FederationHost.admit), ADMIT_CONCURRENCY at a time, under the link's rate limit. Past MAX_INBOX
 * waiting, or over the rate, packets are dropped and a catch-up a little later fetches them again.
 */
import { QisError } from '../../src/index.js';
import { RateLimiter } from '../admission.js';
import { TRANSIENT_CODES, isRevocation, passes, tplOf, type PeerAdmission } from './common.js';
import { notNewer } from './digest.js';
import { kindOf, receivedCounter } from './metrics.js';
import { RetryQueue } from './retry.js';
import type { CatchUpTrigger, LinkState } from './state.js';

/** Received packets waiting for admission above which a link drops and catches up later. */
const MAX_INBOX = 20_000;
/** Admissions of received packets in flight at once. */
const ADMIT_CONCURRENCY = 32;

export class Inbox {
  #queue: { topic: string; payload: Buffer }[] = [];
  #admitting = 0;
  readonly #rate: RateLimiter;
  /** Received packets admission refused for a transient reason (a ts ahead of this broker's clock): admitted again later. */
  readonly #retry: RetryQueue<{ topic: string; payload: Buffer }>;

  constructor(
    private readonly s: LinkState,
    private readonly behind: CatchUpTrigger,
  ) {
    this.#rate = new RateLimiter(s.peer.rateLimit, Math.max(100, s.peer.rateLimit));
    this.#retry = new RetryQueue({
      send: async (items) => {
        const again: { topic: string; payload: Buffer }[] = [];
        for (const m of items) if ((await this.#admit(m.topic, m.payload)) === 'again') again.push(m);
        return { progressed: items.length - again.length, again };
      },
      lost: () => this.behind.soon(),
    });
  }

  /** The link is closing: nothing more is retried. */
  close(): void {
    this.#retry.close();
  }

  /** A packet on a forwarded prefix from the peer: queued for admission. */
  receive(topic: string, payload: Buffer): void {
    if (this.#queue.length >= MAX_INBOX) {
      this.s.m.dropped.inc({ peer: this.s.name, code: 'ERR_RATE_LIMITED' });
      this.behind.soon();
      return;
    }
    this.#queue.push({ topic, payload });
    this.#pump();
  }

  /** Nothing waiting and nothing being admitted. */
  idle(): boolean {
    return this.#queue.length === 0 && this.#admitting === 0;
  }

  #pump(): void {
    while (this.#admitting < ADMIT_CONCURRENCY && this.#queue.length > 0) {
      const m = this.#queue.shift() as { topic: string; payload: Buffer };
      this.#admitting++;
      void this.admitOne(m.topic, m.payload).finally(() => {
        this.#admitting--;
        this.#pump();
      });
    }
  }

  /** One received packet through admission; counted per outcome. A transient refusal is retried later. */
  async admitOne(topic: string, payload: Buffer): Promise<PeerAdmission['result']> {
    const r = await this.#admit(topic, payload);
    if (r !== 'again') return r;
    this.#retry.add([{ topic, payload }]);
    return 'refused';
  }

  async #admit(topic: string, payload: Buffer): Promise<PeerAdmission['result'] | 'again'> {
    const { name, m, host } = this.s;
    receivedCounter(host.registry).inc({ kind: kindOf(topic) });
    const tplId = tplOf(topic);
    if (tplId !== undefined && !isRevocation(topic) && !passes(this.s.peer.accept, tplId)) return 'refused';
    if (!this.#rate.take(name, host.now())) {
      m.dropped.inc({ peer: name, code: 'ERR_RATE_LIMITED' });
      this.behind.soon();
      return 'refused';
    }
    // Not newer than what we hold: dropped before any signature work (loops and echoes end here).
    if (notNewer(host.store, host.scoreStore, topic, payload)) {
      m.dropped.inc({ peer: name, code: 'ERR_SEQ_STALE' });
      return 'stale';
    }
    let r: PeerAdmission;
    try {
      r = await host.admit(topic, payload, this.s.peerRegion ?? name);
    } catch (e) {
      r = { result: 'refused', code: e instanceof QisError ? e.code : 'ERR_INTERNAL', message: (e as Error).message };
    }
    if (r.result === 'stored') m.forwarded.inc({ peer: name, direction: 'in' });
    else if (r.result === 'stale') m.dropped.inc({ peer: name, code: 'ERR_SEQ_STALE' });
    else if (r.result === 'refused') {
      m.refused.inc({ peer: name, code: r.code });
      this.s.log.warn({ code: r.code, topic }, `packet from peer refused: ${r.message}`);
      if (TRANSIENT_CODES.has(r.code)) return 'again';
    }
    return r.result;
  }
}
