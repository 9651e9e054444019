/**
 * A querier that trusts operators (PROTOCOL §10): drop the packets without a valid enrolment by a
 * trusted, non-revoking operator (counted by reason), and cap each operator's share of a cohort's
 * weight as synthesis caps each node's (docs/synthesis.md, "Weight caps"). Pure: no I/O, `now` given.
 */
import { QisError } from '../protocol/errors.js';
import type { SynthPacket } from './types.js';
import { capWeights } from './weights.js';
import {
  ENROLMENT_REASONS,
  checkPacketEnrolment,
  revocationIndex,
  type EnrolmentPolicy,
  type EnrolmentReason,
  type OperatorId,
  type VerifiedRevocation,
} from '../protocol/enrolment.js';
import type { Ed25519Backend } from '../protocol/identity.js';

export interface TrustOptions {
  /** Trusted operator ids (see parseOperatorRef for keys given as hex). */
  readonly operators: Iterable<string>;
  /** Verified revocation lists (verifyRevocation); the highest seq per operator applies. */
  readonly revocations?: Iterable<VerifiedRevocation>;
  /** Unix ms for the enrolments' nbf/exp. Required: nothing reads the wall clock. */
  readonly now: number;
  /** Allowed clock skew on nbf/exp; default 5 minutes (PROTOCOL §6). */
  readonly skewMs?: number;
  readonly backend?: Ed25519Backend;
}

/** What a packet needs for the checks: its key, its label-13 bytes and its template (a VerifiedPacket has them). */
export interface EnrolledCandidate {
  readonly nodeId: string;
  readonly publicKey: Uint8Array;
  readonly enrolment?: Uint8Array;
  readonly tplId?: string;
}

export interface TrustFilterResult<P> {
  /** The packets that count, each with the operator that vouched for it. */
  readonly kept: ReadonlyArray<{ readonly packet: P; readonly operatorId: OperatorId }>;
  /** Dropped packets by reason (every reason present, 0 when none). */
  readonly dropped: Readonly<Record<EnrolmentReason, number>>;
  /** Distinct nodes kept per operator id. */
  readonly operators: Readonly<Record<string, number>>;
}

/** The enrolment policy of a trust list, built once for a whole cohort. */
export function trustPolicy(options: TrustOptions): EnrolmentPolicy {
  if (!Number.isFinite(options.now)) throw new QisError('ERR_INVALID_ARGUMENT', 'trust: now (Unix ms) is required');
  const p: { -readonly [K in keyof EnrolmentPolicy]: EnrolmentPolicy[K] } = {
    now: options.now,
    operators: new Set(options.operators),
    revoked: revocationIndex(options.revocations ?? []),
  };
  if (options.skewMs !== undefined) p.skewMs = options.skewMs;
  if (options.backend !== undefined) p.backend = options.backend;
  return p;
}

/**
 * Keeps the packets whose enrolment is valid under the trust list (PROTOCOL §10: signature, key,
 * time, scope, trusted operator, not revoked) and counts the others by reason.
 * @example
 * const t = filterTrusted(verifiedPackets, { operators: [opId], revocations, now })
 * t.dropped['unknown-operator'] // packets vouched for by operators not trusted here
 */
export function filterTrusted<P extends EnrolledCandidate>(packets: Iterable<P>, options: TrustOptions): TrustFilterResult<P> {
  const policy = trustPolicy(options);
  const dropped = Object.fromEntries(ENROLMENT_REASONS.map((r) => [r, 0])) as Record<EnrolmentReason, number>;
  const kept: Array<{ packet: P; operatorId: OperatorId }> = [];
  const nodes = new Map<string, Set<string>>();
  for (const packet of packets) {
    const c = checkPacketEnrolment(packet, policy);
    if (!c.ok) {
      dropped[c.reason]++;
      continue;
    }
    const op = c.enrolment.operatorId;
    kept.push({ packet, operatorId: op });
    let s = nodes.get(op);
    if (!s) nodes.set(op, (s = new Set()));
    s.add(packet.nodeId);
  }
  const operators: Record<string, number> = {};
  for (const op of [...nodes.keys()].sort()) operators[op] = nodes.get(op)!.size;
  return { kept, dropped, operators };
}

export interface OperatorCap<P> {
  /** The packets, the capped operators' with `conf` scaled down by their operator's factor. */
  readonly packets: P[];
  /** The cap applied: the option, or min(1, 2/M) for M operators. */
  readonly maxOperatorShare: number;
  /** Operators whose weight was cut. */
  readonly capped: readonly string[];
  /** Each operator's share of the capped total weight. */
  readonly shares: Readonly<Record<string, number>>;
}

/**
 * Caps each operator's share of the cohort's weight at `maxOperatorShare` (default min(1, 2/M)
 * for M operators: twice the average, as synthesis's node default) by the same water-filling
 * rule (`capWeights`), applied to each operator's total of w = n × conf. A capped operator's
 * packets keep their relative weights: their conf is scaled by the operator's factor (conf stays
 * in [0, 1] and n stays an integer, so synthesize takes them as they are). Recency and context
 * kernels are applied later by synthesize, so the share holds exactly when neither is used.
 * Then k liars of one operator hold at most the operator's share of the weighted figures
 * (docs/synthesis.md's bounds with ε_w ≤ maxOperatorShare); one-node-one-vote figures count nodes,
 * which is why the per-operator node counts are reported.
 */
export function capOperatorShare<P extends SynthPacket>(
  kept: ReadonlyArray<{ readonly packet: P; readonly operatorId: string }>,
  maxOperatorShare?: number,
): OperatorCap<P> {
  const totals = new Map<string, number>();
  for (const { packet, operatorId } of kept) totals.set(operatorId, (totals.get(operatorId) ?? 0) + packet.n * packet.conf);
  const ops = [...totals.keys()].sort();
  const s = maxOperatorShare ?? Math.min(1, 2 / Math.max(1, ops.length));
  const r = capWeights(
    ops.map((o) => totals.get(o)!),
    s,
  );
  const factor = new Map<string, number>();
  const capped: string[] = [];
  const shares: Record<string, number> = {};
  const total = r.weights.reduce((a, b) => a + b, 0);
  ops.forEach((o, i) => {
    const before = totals.get(o)!;
    const after = r.weights[i]!;
    if (after < before) {
      capped.push(o);
      factor.set(o, after / before);
    }
    shares[o] = total > 0 ? after / total : 0;
  });
  const packets = kept.map(({ packet, operatorId }) => {
    const f = factor.get(operatorId);
    return f === undefined ? packet : { ...packet, conf: packet.conf * f };
  });
  return { packets, maxOperatorShare: s, capped, shares };
}
