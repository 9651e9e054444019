/**
 * The Cohort explorer's answer from the messages heard: each node's newest verified packet, the
 * cohort at every level from the exact bucket to the whole template (PROTOCOL §7 widening), and
 * src/'s synthesis at the chosen level.
 */
import { address, cohortFilter, equalBytes, synthesize, type Address, type Situation, type Synthesis, type Template, type VerifiedPacket, type FieldSpec } from '../../src/browser.js';
import type { Checked } from './session.js';

export interface Level {
  /** Trailing levels dropped (0: the exact cohort). */
  readonly widen: number;
  readonly filter: string;
  /** Live nodes in this cohort. */
  readonly nodes: number;
}

export interface CohortView {
  readonly address: Address;
  readonly levels: readonly Level[];
  readonly widen: number;
  readonly packets: readonly VerifiedPacket[];
  readonly synthesis: Synthesis;
  /** Messages heard for the template, refused ones included. */
  readonly received: number;
  readonly refused: number;
}

/** Fewest nodes for an answer (src/synthesis' default); also where widening stops. */
export const MIN_COHORT = 5;

/** Each node's newest packet among the checked messages; nodes whose newest is a tombstone are left out. */
export function newestByNode(messages: Iterable<Checked>): VerifiedPacket[] {
  const best = new Map<string, { seq: number; packet?: VerifiedPacket }>();
  for (const m of messages) {
    const seq = m.packet?.seq ?? m.withdrawnSeq;
    if (seq === undefined) continue;
    const prev = best.get(m.nodeId);
    if (!prev || seq > prev.seq) best.set(m.nodeId, m.packet ? { seq, packet: m.packet } : { seq });
  }
  const out: VerifiedPacket[] = [];
  for (const b of best.values()) if (b.packet) out.push(b.packet);
  return out;
}

/** True when packet p is in the cohort of `addr` widened by `widen` (foldCohort's rule). */
export function inCohort(p: VerifiedPacket, addr: Address, widen: number): boolean {
  const keep = addr.levels.length - widen;
  for (let i = 0; i < keep; i++) if (p.levels[i] !== addr.levels[i]) return false;
  return widen > 0 || equalBytes(p.fp, addr.fp);
}

export function cohortView(template: Template, situation: Situation, messages: Iterable<Checked>, chosenWiden?: number): CohortView {
  const addr = address(template, situation);
  const all = [...messages];
  const live = newestByNode(all);
  const depth = addr.levels.length;
  const levels: Level[] = [];
  for (let w = 0; w <= depth; w++) levels.push({ widen: w, filter: cohortFilter(addr, w), nodes: live.filter((p) => inCohort(p, addr, w)).length });
  const widen = chosenWiden ?? levels.find((l) => l.nodes >= MIN_COHORT)?.widen ?? depth;
  const packets = live.filter((p) => inCohort(p, addr, widen));
  const synthesis = synthesize(
    template,
    packets.flatMap((p) => (p.out === undefined ? [] : [{ nodeId: p.nodeId, out: p.out, conf: p.conf, n: p.n, ts: p.ts, ...(p.ctx ? { ctx: p.ctx } : {}) }])),
    { minCohort: MIN_COHORT },
  );
  return { address: addr, levels, widen, packets, synthesis, received: all.length, refused: all.filter((m) => m.code !== undefined).length };
}

/** The choices a form offers for a routed field: closed sets and bins as ranges; undefined for free text. */
export function fieldChoices(f: FieldSpec): { label: string; value: string | number | boolean }[] | undefined {
  if (f.kind === 'boolean') return [{ label: 'true', value: true }, { label: 'false', value: false }];
  if (f.kind === 'category') return f.values?.map((v) => ({ label: v, value: v }));
  const b = f.bins;
  const out: { label: string; value: number }[] = [];
  const first = b[0] as number;
  out.push({ label: `< ${first}`, value: first - 1 });
  for (let i = 0; i + 1 < b.length; i++) out.push({ label: `${b[i]} – ${b[i + 1]}`, value: b[i] as number });
  out.push({ label: `≥ ${b[b.length - 1]}`, value: b[b.length - 1] as number });
  return out;
}
