/**
 * The verifier pool's waiting room (broker/verifier.ts): one bounded lane per publishing source
 * (an MQTT client, a federation link), served round robin, one job per lane per turn. A source
 * that floods fills only its own lane, so a quiet client's packet waits behind at most one job of
 * each busy source when a batch is filled, not behind the whole backlog (issue 15: the p99 of other
 * traffic during a burst). Jobs cost about the same (one Ed25519 verification each), so a quantum of
 * one job is deficit round robin without the deficit.
 */

interface Lane<J> {
  readonly key: unknown;
  /** Jobs from `head` on are waiting, oldest first. */
  jobs: J[];
  head: number;
  /** The next lane in the ring. */
  next: Lane<J>;
}

export class FairQueue<J> {
  readonly #lanes = new Map<unknown, Lane<J>>();
  /** The lane served next, and the one before it in the ring (undefined: no lane waits). */
  #cursor: Lane<J> | undefined;
  #prev: Lane<J> | undefined;
  #size = 0;

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
      const lane = { key: source, jobs: [], head: 0 } as unknown as Lane<J>;
      // A new lane joins the ring just before the cursor: it is served once every lane already
      // waiting has had its turn, i.e. after at most one job of each.
      if (this.#cursor && this.#prev) {
        this.#prev.next = lane;
        lane.next = this.#cursor;
        this.#prev = lane;
      } else {
        lane.next = lane;
        this.#cursor = this.#prev = lane;
      }
      this.#lanes.set(source, lane);
      l = lane;
    }
    l.jobs.push(job);
    this.#size++;
    return true;
  }

  /** The job take() would return. */
  peek(): J | undefined {
    const l = this.#cursor;
    return l ? l.jobs[l.head] : undefined;
  }

  /** The next job in round-robin order (one per source per turn), or undefined when none waits. */
  take(): J | undefined {
    const l = this.#cursor;
    if (!l) return undefined;
    const job = l.jobs[l.head] as J;
    l.jobs[l.head] = undefined as J; // no reference kept to a job handed out
    l.head++;
    this.#size--;
    if (l.head === l.jobs.length) {
      // Empty: the lane leaves the ring (a source that comes back gets a new one).
      this.#lanes.delete(l.key);
      if (l.next === l) this.#cursor = this.#prev = undefined;
      else {
        (this.#prev as Lane<J>).next = l.next;
        this.#cursor = l.next;
      }
    } else {
      if (l.head >= 1024 && l.head * 2 >= l.jobs.length) {
        l.jobs = l.jobs.slice(l.head);
        l.head = 0;
      }
      this.#prev = l;
      this.#cursor = l.next;
    }
    return job;
  }

  /** Every waiting job, the queue left empty (close). */
  drain(): J[] {
    const out: J[] = [];
    for (let j = this.take(); j !== undefined; j = this.take()) out.push(j);
    return out;
  }
}
