/**
 * The `put` batches of one federation link, admitted in arrival order with up to
 * LINK_PUTS_ADMITTING at once: the second batch is verified while the first waits for its store
 * writes and disk sync, so the verify threads do not idle between a link's batches (a live hop,
 * a catch-up's pipelined puts). Two batches admitted at once are no less safe than the packets
 * of one batch, which are admitted concurrently: the newest seq wins whichever is stored first.
 * A batch carrying a template document or a revocation list is a barrier: it starts once every
 * earlier batch finished, and no later batch starts before it finished, so packets never race
 * the document they need (a peer with a closed registry would refuse them for good).
 */

/** `put` batches of one link waiting or being admitted, at most (256 packets each: ~40 MB at most). */
export const LINK_PUTS_QUEUED = 64;
/** `put` batches of one link admitted at once. */
export const LINK_PUTS_ADMITTING = 2;

interface Waiting {
  readonly barrier: boolean;
  readonly start: () => void;
}

class OneLink {
  running = 0;
  runningBarrier = false;
  readonly waiting: Waiting[] = [];

  get size(): number {
    return this.running + this.waiting.length;
  }

  /** Starts waiting batches in order while the head may start. */
  next(): void {
    for (;;) {
      const head = this.waiting[0];
      if (!head || this.runningBarrier) return;
      if (head.barrier ? this.running > 0 : this.running >= LINK_PUTS_ADMITTING) return;
      this.waiting.shift();
      head.start();
    }
  }
}

export class LinkPutQueue {
  readonly #links = new Map<string, OneLink>();

  /**
   * Runs `job` for link `id` in order (see the file comment); `barrier`: the batch carries a
   * template document or revocation list. Undefined when LINK_PUTS_QUEUED batches of the link are
   * waiting or running already (the caller refuses the batch as transient).
   */
  queue<T>(id: string, job: () => Promise<T>, barrier = false): Promise<T> | undefined {
    let q = this.#links.get(id);
    if (!q) this.#links.set(id, (q = new OneLink()));
    if (q.size >= LINK_PUTS_QUEUED) return undefined;
    const link = q;
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        link.running++;
        if (barrier) link.runningBarrier = true;
        const done = (): void => {
          link.running--;
          if (barrier) link.runningBarrier = false;
          if (link.size === 0 && this.#links.get(id) === link) this.#links.delete(id);
          else link.next();
        };
        let run: Promise<T>;
        try {
          run = job();
        } catch (e) {
          run = Promise.reject(e as Error);
        }
        run.then(resolve, reject).finally(done);
      };
      link.waiting.push({ barrier, start });
      link.next();
    });
  }

  /** Batches of link `id` waiting or being admitted (for tests). */
  size(id: string): number {
    return this.#links.get(id)?.size ?? 0;
  }
}
