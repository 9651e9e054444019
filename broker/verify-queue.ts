/**
 * The verifier pool's waiting room (broker/verifier.ts): one bounded lane per publishing source
 * (an MQTT client, a federation link). The pool fills a batch with one job of every waiting lane
 * (round robin: take()), then tops it up in arrival order (takeOldest()). So a quiet client's
 * packet waits behind the batches already in the workers and at most one job of each busy source,
 * not behind a flood's backlog (issue 15: the p99 of other traffic during a burst); and busy
 * sources are otherwise served first come first served, so their Aedes reads (one socket read at a
 * time, the next once every publish of the last is answered) stay staggered instead of all
 * finishing, and all reading again, at once.
 */

interface Lane<J> {
  readonly key: unknown;
  /** Jobs from `head` on are waiting, oldest first, and their arrival numbers. */
  jobs: J[];
  arrivals: number[];
  head: number;
  /** Neighbours in the ring. */
  prev: Lane<J>;
  next: Lane<J>;
}

export class FairQueue<J> {
  readonly #lanes = new Map<unknown, Lane<J>>();
  /** The lane take() serves next (undefined: no lane waits). */
  #cursor: Lane<J> | undefined;
  #size = 0;
  #arrivals = 0;

  /** `perSource`: jobs one source may have waiting at most; push() refuses beyond. */
  constructor(readonly perSource: number) {}

  /** Jobs waiting, all sources. */
  get size(): number {
    return this.#size;
  }

  /** Sources with at least one job waiting. */
  get sources(): number {
    return this.#lanes.size;
  }

  /** Jobs `source` has waiting. */
  waiting(source: unknown): number {
    const l = this.#lanes.get(source);
    return l ? l.jobs.length - l.head : 0;
  }

  /** Queues `job` behind `source`'s earlier jobs; false (nothing queued) when that source already has `perSource` waiting. */
  push(source: unknown, job: J): boolean {
    let l = this.#lanes.get(source);
    if ((l ? l.jobs.length - l.head : 0) >= this.perSource) return false;
    if (!l) {
      const lane = { key: source, jobs: [], arrivals: [], head: 0 } as unknown as Lane<J>;
      // A new lane joins the ring just before the cursor: take() serves it once every lane
      // already waiting has had its turn, i.e. after at most one job of each.
      const c = this.#cursor;
      if (c) {
        lane.prev = c.prev;
        lane.next = c;
        c.prev.next = lane;
        c.prev = lane;
      } else {
        lane.prev = lane.next = lane;
        this.#cursor = lane;
      }
      this.#lanes.set(source, lane);
      l = lane;
    }
    l.jobs.push(job);
    l.arrivals.push(this.#arrivals++);
    this.#size++;
    return true;
  }

  /** The job take() would return. */
  peek(): J | undefined {
    const l = this.#cursor;
    return l ? l.jobs[l.head] : undefined;
  }

  /** The next job round robin (one per source per turn), or undefined when none waits. */
  take(): J | undefined {
    const l = this.#cursor;
    if (!l) return undefined;
    this.#cursor = l.next;
    return this.#takeFrom(l);
  }

  /** The job takeOldest() would return. */
  peekOldest(): J | undefined {
    const l = this.#oldest();
    return l ? l.jobs[l.head] : undefined;
  }

  /** The job that has waited longest, whatever its source (the round-robin turn does not move), or undefined. */
  takeOldest(): J | undefined {
    const l = this.#oldest();
    return l ? this.#takeFrom(l) : undefined;
  }

  /** Every waiting job, the queue left empty (close). */
  drain(): J[] {
    const out: J[] = [];
    for (let j = this.take(); j !== undefined; j = this.take()) out.push(j);
    return out;
  }

  /** The lane whose first job came first: one look at each waiting lane (a batch tops up from it only while few lanes wait). */
  #oldest(): Lane<J> | undefined {
    const start = this.#cursor;
    if (!start) return undefined;
    let best = start;
    for (let l = start.next; l !== start; l = l.next) if ((l.arrivals[l.head] as number) < (best.arrivals[best.head] as number)) best = l;
    return best;
  }

  #takeFrom(l: Lane<J>): J {
    const job = l.jobs[l.head] as J;
    l.jobs[l.head] = undefined as J; // no reference kept to a job handed out
    l.head++;
    this.#size--;
    if (l.head === l.jobs.length) {
      // Empty: the lane leaves the ring (a source that comes back gets a new one).
      this.#lanes.delete(l.key);
      if (l.next === l) this.#cursor = undefined;
      else {
        l.prev.next = l.next;
        l.next.prev = l.prev;
        if (this.#cursor === l) this.#cursor = l.next;
      }
    } else if (l.head >= 1024 && l.head * 2 >= l.jobs.length) {
      l.jobs = l.jobs.slice(l.head);
      l.arrivals = l.arrivals.slice(l.head);
      l.head = 0;
    }
    return job;
  }
}
