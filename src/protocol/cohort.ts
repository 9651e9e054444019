/**
 * The pure half of a query (PROTOCOL §7): from the messages a cohort subscription delivered to
 * the verified packets of the cohort, one per node, with every dropped message counted by reason.
 */
import { b32 } from './bytes.js';
import type { ErrorCode } from './errors.js';
import type { Address } from './fingerprint.js';
import type { Ed25519Backend } from './identity.js';
import { checkPacket, type CheckResult, type VerifiedPacket, type VerifyOptions } from './packet.js';

/** A message as a subscription delivered it. */
export interface CohortMessage {
  readonly topic: string;
  readonly payload: Uint8Array;
}

export interface FoldOptions {
  /** The querier's own address (template and bucket). */
  readonly address: Pick<Address, 'tplId' | 'levels' | 'fp'>;
  /** How many trailing levels the query dropped (0: exact cohort, fp must equal the querier's). */
  readonly widen: number;
  /** Unix ms for the expiry check. */
  readonly now: number;
  readonly backend?: Ed25519Backend;
}

/** The verified cohort and what was left out. */
export interface CohortFold {
  /** Live packets, one per node (its highest seq), sorted by node id. */
  readonly packets: VerifiedPacket[];
  /** Messages received on the cohort filter. */
  readonly received: number;
  /** Refused messages by error code (forged, foreign fingerprint, expired, malformed…). */
  readonly dropped: Partial<Record<ErrorCode, number>>;
  /** Valid packets replaced by a higher seq of the same node (e.g. an old bucket during a move). */
  readonly superseded: number;
  /** Nodes whose newest packet is a tombstone: they withdrew. */
  readonly withdrawn: number;
  /** The same packet delivered more than once (overlapping subscriptions). */
  readonly duplicates: number;
}

/**
 * Verifies every message and keeps each node's newest packet.
 * - exact cohort: `fp` must equal the querier's (`ERR_FP_MISMATCH` otherwise);
 * - widened: the packet's `fp` must belong to the bucket its topic names — its last level is
 *   `b32(fp)[0..10]`, as both come from the same hash (PROTOCOL §4) — and its topic must lie under
 *   the querier's kept levels.
 *
 * @example
 * const fold = foldCohort(messages, { address: addr, widen: 0, now: Date.now() })
 * fold.packets.length // nodes in the cohort
 */
export function foldCohort(messages: Iterable<CohortMessage>, o: FoldOptions): CohortFold {
  const f = new CohortFolder(o);
  for (const m of messages) f.add(m.topic, m.payload);
  return f.finish();
}

/**
 * {@link foldCohort} one message at a time, so that a query folds while its packets arrive: add()
 * checks a message here, addChecked() takes the verdict of the same check run elsewhere (a worker
 * thread, src/node/cohort-verify.ts) with {@link CohortFolder.verifyOptions}. Messages must come
 * in the order they were received (the first of two equal seqs on different topics is kept).
 */
export class CohortFolder {
  /** The options of the check each message gets (checkPacket). */
  readonly verifyOptions: VerifyOptions;
  readonly #o: FoldOptions;
  readonly #depth: number;
  readonly #kept: readonly string[];
  readonly #dropped: Partial<Record<ErrorCode, number>> = {};
  readonly #best = new Map<string, VerifiedPacket>();
  #received = 0;
  #superseded = 0;
  #duplicates = 0;

  constructor(o: FoldOptions) {
    this.#o = o;
    this.#depth = o.address.levels.length;
    this.#kept = o.address.levels.slice(0, this.#depth - o.widen);
    this.verifyOptions = {
      now: o.now,
      depth: this.#depth,
      ...(o.widen === 0 ? { expectFp: o.address.fp } : {}),
      ...(o.backend ? { backend: o.backend } : {}),
    };
  }

  #drop(code: ErrorCode): void {
    this.#dropped[code] = (this.#dropped[code] ?? 0) + 1;
  }

  /** Checks and folds one message. */
  add(topic: string, payload: Uint8Array): void {
    this.addChecked(checkPacket(topic, payload, this.verifyOptions));
  }

  /** Folds one message by the verdict of checkPacket(topic, payload, verifyOptions). */
  addChecked(r: CheckResult): void {
    this.#received++;
    if (!r.ok) return this.#drop(r.code);
    const p = r.packet;
    const depth = this.#depth;
    if (p.tplId !== this.#o.address.tplId || !startsWithLevels(p.levels, this.#kept)) {
      return this.#drop('ERR_FP_MISMATCH'); // delivered outside the filter: a broker bug or a forged delivery
    }
    if (this.#o.widen > 0 && b32(p.fp).slice(0, p.levels[depth - 1]?.length ?? 0) !== p.levels[depth - 1]) {
      return this.#drop('ERR_FP_MISMATCH');
    }
    const prev = this.#best.get(p.nodeId);
    if (!prev) {
      this.#best.set(p.nodeId, p);
    } else if (p.seq > prev.seq) {
      this.#best.set(p.nodeId, p);
      this.#superseded++;
    } else if (p.seq === prev.seq && p.topic === prev.topic) {
      this.#duplicates++;
    } else {
      this.#superseded++;
    }
  }

  finish(): CohortFold {
    const packets: VerifiedPacket[] = [];
    let withdrawn = 0;
    for (const p of this.#best.values()) {
      if (p.del) withdrawn++;
      else packets.push(p);
    }
    packets.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    return { packets, received: this.#received, dropped: this.#dropped, superseded: this.#superseded, withdrawn, duplicates: this.#duplicates };
  }
}

function startsWithLevels(levels: readonly string[], kept: readonly string[]): boolean {
  for (let i = 0; i < kept.length; i++) if (levels[i] !== kept[i]) return false;
  return true;
}

/** True when an MQTT topic matches a subscription filter (MQTT 3.1.1 §4.7; `$` topics need a `$` filter). */
export function topicMatches(filter: string, topic: string): boolean {
  return topicMatcher(filter)(topic);
}

/**
 * {@link topicMatches} for one filter, split once: a read tests every message it receives (10,000
 * for a big cohort), and the test walks the topic without splitting it.
 */
export function topicMatcher(filter: string): (topic: string) => boolean {
  const f = filter.split('/');
  const dollar = filter.startsWith('$');
  // The levels before the first wildcard are compared in one go, as one prefix with its slashes.
  const literal = f.findIndex((l) => l === '+' || l === '#');
  if (literal < 0) return (topic) => topic === filter;
  const prefix = f.slice(0, literal).join('/');
  const rest = f.slice(literal);
  return (topic) => {
    if (topic.startsWith('$') !== dollar || !topic.startsWith(prefix)) return false;
    // `at`: where the topic's next level starts; past its end once every level is used.
    let at = 0;
    if (literal > 0) {
      if (topic.length === prefix.length) at = topic.length + 1;
      else if (topic.charCodeAt(prefix.length) === 0x2f) at = prefix.length + 1;
      else return false;
    }
    for (const level of rest) {
      if (level === '#') return true;
      if (at > topic.length) return false;
      let end = topic.indexOf('/', at);
      if (end < 0) end = topic.length;
      if (level !== '+' && (end - at !== level.length || !topic.startsWith(level, at))) return false;
      at = end + 1;
    }
    return at === topic.length + 1;
  };
}
