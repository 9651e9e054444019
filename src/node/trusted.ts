/**
 * A query that trusts operators (PROTOCOL §10, QueryOptions.trust): the operators' revocation
 * lists are read in the same round trip as the cohort (their topics are subscribed before the sync
 * marker), packets without a valid enrolment by a trusted, non-revoking operator are dropped and
 * counted by reason, and each operator's share of the cohort's weight is capped (capOperatorShare).
 */
import type { CohortMessage } from '../protocol/cohort.js';
import { isQisError, type ErrorCode } from '../protocol/errors.js';
import { parseOperatorRef, revocationTopic, verifyRevocation, type EnrolmentReason, type VerifiedRevocation } from '../protocol/enrolment.js';
import type { VerifiedPacket } from '../protocol/packet.js';
import { capOperatorShare, filterTrusted } from '../synthesis/trust.js';
import type { SynthPacket } from '../synthesis/index.js';
import { DEFAULT_SKEW_MS } from '../protocol/enrolment.js';

/** What a trusting query reports besides the answer. */
export interface TrustReport {
  /** The trusted operators (ids). */
  readonly trusted: readonly string[];
  /** Nodes counted per operator id (every trusted operator listed, 0 when none). */
  readonly operators: Readonly<Record<string, number>>;
  /** Packets dropped for want of a valid enrolment, by reason (every reason present). */
  readonly notEnrolled: Readonly<Record<EnrolmentReason, number>>;
  /** The per-operator cap applied, the operators it cut, and each one's share of the capped weight. */
  readonly maxOperatorShare: number;
  readonly capped: readonly string[];
  readonly shares: Readonly<Record<string, number>>;
  /** Revocation lists read (valid ones), and the seq of each operator's list applied. */
  readonly revocations: Readonly<Record<string, number>>;
}

/** Trusted operator ids from ids or public keys. @throws QisError ERR_INVALID_ARGUMENT */
export function trustedOperators(trust: readonly string[]): string[] {
  return [...new Set(trust.map((t) => parseOperatorRef(t)))].sort();
}

/** The revocation topics to read with the cohort. */
export function revocationFilters(operators: readonly string[]): string[] {
  return operators.map(revocationTopic);
}

/**
 * Splits what a round trip read into cohort messages and verified revocation lists; invalid lists
 * are counted in `dropped` by code and ignored.
 */
export function splitRevocations(messages: readonly CohortMessage[], operators: readonly string[], dropped: Partial<Record<ErrorCode, number>>, now: number): { cohort: CohortMessage[]; lists: VerifiedRevocation[] } {
  const topics = new Set(revocationFilters(operators));
  const cohort: CohortMessage[] = [];
  const lists: VerifiedRevocation[] = [];
  for (const m of messages) {
    if (!topics.has(m.topic)) {
      cohort.push(m);
      continue;
    }
    try {
      lists.push(verifyRevocation(m.topic, m.payload, { now, maxSkewMs: DEFAULT_SKEW_MS }));
    } catch (e) {
      if (!isQisError(e)) throw e;
      dropped[e.code] = (dropped[e.code] ?? 0) + 1;
    }
  }
  return { cohort, lists };
}

/**
 * The trusted part of a folded cohort: the packets kept (tombstones aside), the synthesis input
 * with each operator's weight capped, and the report.
 */
export function applyTrust(
  packets: readonly VerifiedPacket[],
  o: { operators: readonly string[]; lists: readonly VerifiedRevocation[]; now: number; maxOperatorShare?: number },
): { packets: VerifiedPacket[]; synth: SynthPacket[]; report: TrustReport } {
  const t = filterTrusted(packets, { operators: o.operators, revocations: o.lists, now: o.now });
  const live = t.kept.filter(({ packet }) => packet.out !== undefined);
  const cap = capOperatorShare(
    live.map(({ packet: p, operatorId }) => ({ operatorId, packet: { nodeId: p.nodeId, out: p.out!, conf: p.conf, n: p.n, ts: p.ts, ...(p.ctx ? { ctx: p.ctx } : {}) } })),
    o.maxOperatorShare,
  );
  const operators: Record<string, number> = {};
  for (const op of o.operators) operators[op] = t.operators[op] ?? 0;
  const revocations: Record<string, number> = {};
  for (const l of o.lists) revocations[l.operatorId] = Math.max(revocations[l.operatorId] ?? -1, l.seq);
  return {
    packets: t.kept.map((k) => k.packet),
    synth: cap.packets,
    report: { trusted: o.operators, operators, notEnrolled: t.dropped, maxOperatorShare: cap.maxOperatorShare, capped: cap.capped, shares: cap.shares, revocations },
  };
}
