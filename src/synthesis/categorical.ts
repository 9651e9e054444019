/**
 * The summary of a category outcome: weighted proportions with Wilson intervals per label, the
 * top label by weight, and the one-node-one-vote count beside it.
 */
import { insufficient, type Entry } from './common.js';
import type { Resolved } from './options.js';
import { wilson } from './stats.js';
import type { CategorySummary, InsufficientSummary, LabelStat, LabelVote } from './types.js';
import { basics, capEntries } from './weights.js';

export function summarizeCategory(
  all: ReadonlyArray<Entry<string>>,
  labels: readonly string[],
  o: Resolved,
  skipped: number,
  contextFields: readonly string[],
): CategorySummary | InsufficientSummary {
  const raw = all.filter((e) => e.w > 0);
  const zeroWeight = all.length - raw.length;
  if (raw.length < o.minCohort) return insufficient(raw.length, o.minCohort, skipped, zeroWeight);
  const { entries: live, maxNodeShare, capped } = capEntries(raw, o);
  const b = basics(live);
  let top = labels[0] as string;
  let topWeight = -1;
  const stats = labels.map((label): [string, LabelStat] => {
    let count = 0;
    let weight = 0;
    for (const e of live) {
      if (e.value !== label) continue;
      count++;
      weight += e.w;
    }
    // Strictly greater: on a tie the earlier label stays on top, so the choice is fixed.
    if (weight > topWeight) {
      top = label;
      topWeight = weight;
    }
    const proportion = Math.min(1, weight / b.weight);
    return [label, { count, weight, proportion, ...wilson(proportion, b.effectiveN, o.z), voteShare: count / live.length }];
  });
  return {
    kind: 'category',
    count: live.length,
    ...b,
    maxNodeShare,
    capped,
    labels: Object.fromEntries(stats),
    top,
    vote: vote(stats),
    confidence: o.confidence,
    z: o.z,
    skipped,
    zeroWeight,
    contextFields,
  };
}

/** One node, one vote: most nodes; ties by weight, then label order (stable sort keeps it). */
function vote(stats: ReadonlyArray<[string, LabelStat]>): LabelVote {
  const ranked = [...stats].sort(([, a], [, b]) => b.count - a.count || b.weight - a.weight);
  const [first, second] = ranked;
  const top = (first as [string, LabelStat])[0];
  const margin = (first as [string, LabelStat])[1].count - (second ? second[1].count : 0);
  return { rule: 'one-node-one-vote', top, margin };
}
