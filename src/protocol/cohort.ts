/**
 * The pure half of a query (PROTOCOL §7): from the messages a cohort subscription delivered to
 * the verified packets of the cohort, one per node, with every dropped message counted by reason.
 */
import { b32 } from './bytes.js';
import type { ErrorCode } from './errors.js';
import type { Address } from './fingerprint.js';
import type { Ed25519Backend } from './identity.js';
import { checkPacket, type VerifiedPacket } from './packet.js';

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
  const depth = o.address.levels.length;
  const kept = o.address.levels.slice(0, depth - o.widen);
  const dropped: Partial<Record<ErrorCode, number>> = {};
  const drop = (code: ErrorCode): void => {
    dropped[code] = (dropped[code] ?? 0) + 1;
  };
  const best = new Map<string, VerifiedPacket>();
  let received = 0;
  let superseded = 0;
  let duplicates = 0;
  const verifyOpts = {
    now: o.now,
    depth,
    ...(o.widen === 0 ? { expectFp: o.address.fp } : {}),
    ...(o.backend ? { backend: o.backend } : {}),
  };
  for (const m of messages) {
    received++;
    const r = checkPacket(m.topic, m.payload, verifyOpts);
    if (!r.ok) {
      drop(r.code);
      continue;
    }
    const p = r.packet;
    if (p.tplId !== o.address.tplId || kept.some((l, i) => p.levels[i] !== l)) {
      drop('ERR_FP_MISMATCH'); // delivered outside the filter: a broker bug or a forged delivery
      continue;
    }
    if (o.widen > 0 && b32(p.fp).slice(0, p.levels[depth - 1]?.length ?? 0) !== p.levels[depth - 1]) {
      drop('ERR_FP_MISMATCH');
      continue;
    }
    const prev = best.get(p.nodeId);
    if (!prev) {
      best.set(p.nodeId, p);
    } else if (p.seq > prev.seq) {
      best.set(p.nodeId, p);
      superseded++;
    } else if (p.seq === prev.seq && p.topic === prev.topic) {
      duplicates++;
    } else {
      superseded++;
    }
  }
  const packets: VerifiedPacket[] = [];
  let withdrawn = 0;
  for (const p of best.values()) {
    if (p.del) withdrawn++;
    else packets.push(p);
  }
  packets.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  return { packets, received, dropped, superseded, withdrawn, duplicates };
}

/** True when an MQTT topic matches a subscription filter (MQTT 3.1.1 §4.7; `$` topics need a `$` filter). */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') !== filter.startsWith('$')) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}
