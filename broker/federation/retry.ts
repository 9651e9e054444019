/**
 * Retried forwards (PROTOCOL §8): packets a peer refused for a transient reason (its rate limit,
 * a clock a little behind the packet's ts) wait here and are sent again after a backoff with
 * jitter, so regions converge without a reconnect. Bounded: past MAX_RETRY waiting, the oldest
 * are dropped and the link's next catch-up sends what still differs. A round in which nothing
 * went through doubles the delay (up to the cap); a round that made progress starts again from
 * the base, so a peer limited to N/s drains the queue at about N/s.
 */
import { backoffDelay } from '../../src/index.js';

/** Forwards waiting to be sent again, per link. */
export const MAX_RETRY = 10_000;

export interface RetryOptions<T> {
  /** Sends one round again; resolves with how many went through and the items still refused for a transient reason. */
  readonly send: (items: T[]) => Promise<{ progressed: number; again: T[] }>;
  /** Items were dropped (bound reached, or the round failed): a catch-up should follow. */
  readonly lost: (n: number) => void;
  readonly baseMs?: number;
  readonly capMs?: number;
  /** For tests: a deterministic jitter. */
  readonly random?: () => number;
}

export class RetryQueue<T> {
  #items: T[] = [];
  #attempt = 0;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #closed = false;
  readonly #o: Required<Omit<RetryOptions<T>, 'random'>> & { random: () => number };

  constructor(o: RetryOptions<T>) {
    this.#o = { baseMs: 250, capMs: 10_000, random: Math.random, ...o };
  }

  get size(): number {
    return this.#items.length;
  }

  /** Queues items for a later round (the oldest go past MAX_RETRY). */
  add(items: readonly T[]): void {
    if (this.#closed || items.length === 0) return;
    this.#items.push(...items);
    const over = this.#items.length - MAX_RETRY;
    if (over > 0) {
      this.#items.splice(0, over);
      this.#o.lost(over);
    }
    this.#schedule();
  }

  /** The connection ended: what waits is left to the catch-up at the next connection. */
  clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#items = [];
    this.#attempt = 0;
  }

  close(): void {
    this.#closed = true;
    this.clear();
  }

  #schedule(): void {
    if (this.#timer || this.#running || this.#items.length === 0 || this.#closed) return;
    // Full jitter over [base, base·2^attempt], never 0: a refused burst is not resent at once.
    const delay = this.#o.baseMs + backoffDelay(this.#attempt, { baseMs: this.#o.baseMs, capMs: this.#o.capMs }, this.#o.random);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#round();
    }, delay);
    this.#timer.unref();
  }

  async #round(): Promise<void> {
    const items = this.#items;
    this.#items = [];
    this.#running = true;
    try {
      const r = await this.#o.send(items);
      this.#attempt = r.progressed > 0 ? 0 : this.#attempt + 1;
      if (!this.#closed) this.#items.unshift(...r.again);
    } catch {
      this.#o.lost(items.length);
    } finally {
      this.#running = false;
      this.#schedule();
    }
  }
}
