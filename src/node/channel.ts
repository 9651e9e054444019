/**
 * A bounded async queue behind the node's async iterators (status, watch): producers push,
 * one consumer pulls with `for await`. When the consumer falls behind by more than `limit`
 * items, the oldest are dropped and counted rather than letting memory grow for months.
 */
export class Channel<T> implements AsyncIterableIterator<T> {
  readonly #items: T[] = [];
  readonly #waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  readonly #limit: number;
  readonly #onEnd: (() => void) | undefined;
  #ended = false;
  #error: unknown = undefined;
  /** Items dropped because the consumer fell behind by more than the limit. */
  overflowed = 0;

  constructor(limit = 10_000, onEnd?: () => void) {
    this.#limit = limit;
    this.#onEnd = onEnd;
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(item: T): void {
    if (this.#ended) return;
    const w = this.#waiting.shift();
    if (w) return w.resolve({ value: item, done: false });
    this.#items.push(item);
    if (this.#items.length > this.#limit) {
      this.#items.shift();
      this.overflowed++;
    }
  }

  /** Ends the iteration after the queued items; with `error`, the next pull rejects with it. */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    const waiting = this.#waiting.splice(0);
    // A consumer already waiting gets the error now; otherwise the next pull does.
    const first = waiting.shift();
    if (first && error !== undefined) first.reject(error);
    else {
      this.#error = error;
      first?.resolve({ value: undefined, done: true });
    }
    for (const w of waiting) w.resolve({ value: undefined, done: true });
    this.#onEnd?.();
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#ended) {
      const e = this.#error;
      this.#error = undefined;
      return e === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(e);
    }
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.#items.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
