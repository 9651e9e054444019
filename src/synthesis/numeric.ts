/**
 * The summary of a number outcome: weighted mean, median, trimmed mean, spread and tails, the
 * same figures with every node counted once, and robust-z outliers (optionally excluded).
 */
import { cmp, insufficient, type Entry } from './common.js';
import type { Resolved } from './options.js';
import { quantileSorted, trimmedMeanSorted } from './stats.js';
import type { InsufficientSummary, NumberSummary } from './types.js';
import { basics, capEntries, MAD_TO_SIGMA, MEAN_AD_TO_SIGMA } from './weights.js';

/** The figures numberStats works out: those of a NumberSummary that come from the values. */
type NumberStats = Pick<
  NumberSummary,
  'observations' | 'weight' | 'effectiveN' | 'mean' | 'median' | 'trimmedMean' | 'mad' | 'scale' | 'p10' | 'p90' | 'min' | 'max' | 'byNode'
>;

/** Every numeric figure of entries sorted by value (then node id), all with positive weight. */
function numberStats(sorted: ReadonlyArray<Entry<number>>, trim: number): NumberStats {
  const xs = sorted.map((e) => e.value);
  const ws = sorted.map((e) => e.w);
  const b = basics(sorted);
  const W = b.weight;
  let sum = 0;
  for (const e of sorted) sum += e.w * e.value;
  const median = quantileSorted(xs, ws, W, 0.5);
  const dev = sorted.map((e) => ({ d: Math.abs(e.value - median), w: e.w })).sort((a, b) => a.d - b.d);
  const mad = quantileSorted(
    dev.map((d) => d.d),
    dev.map((d) => d.w),
    W,
    0.5,
  );
  let scale = MAD_TO_SIGMA * mad;
  if (scale === 0) {
    // More than half the weight sits exactly on the median. Rather than make every other value
    // an infinitely far outlier, measure spread by the mean absolute deviation (Iglewicz and
    // Hoaglin's fallback); it is 0 only when every value equals the median.
    let s = 0;
    for (const d of dev) s += d.w * d.d;
    scale = MEAN_AD_TO_SIGMA * (s / W);
  }
  const ones = xs.map(() => 1);
  return {
    ...b,
    mean: sum / W,
    median,
    trimmedMean: trimmedMeanSorted(xs, ws, W, trim),
    mad,
    scale,
    p10: quantileSorted(xs, ws, W, 0.1),
    p90: quantileSorted(xs, ws, W, 0.9),
    min: xs[0] as number,
    max: xs[xs.length - 1] as number,
    byNode: {
      median: quantileSorted(xs, ones, xs.length, 0.5),
      trimmedMean: trimmedMeanSorted(xs, ones, xs.length, trim),
    },
  };
}

export function summarizeNumber(
  all: ReadonlyArray<Entry<number>>,
  o: Resolved,
  skipped: number,
  contextFields: readonly string[],
  unit: string | undefined,
): NumberSummary | InsufficientSummary {
  const live = all.filter((e) => e.w > 0).sort((a, b) => a.value - b.value || cmp(a.nodeId, b.nodeId));
  const zeroWeight = all.length - live.length;
  if (live.length < o.minCohort) return insufficient(live.length, o.minCohort, skipped, zeroWeight);
  let cap = capEntries(live, o);
  let stats = numberStats(cap.entries, o.trim);
  const whole = stats;
  const z = (x: number): number => (whole.scale > 0 ? Math.abs(x - whole.median) / whole.scale : 0);
  const outliers = live.filter((e) => z(e.value) > o.outlierK).map((e) => ({ nodeId: e.nodeId, value: e.value, z: z(e.value) }));
  let kept = live;
  if (o.excludeOutliers && outliers.length > 0) {
    // One pass: outliers are judged on the whole cohort, then removed; the rest is not re-screened.
    const out = new Set(outliers.map((x) => x.nodeId));
    kept = live.filter((e) => !out.has(e.nodeId));
    if (kept.length < o.minCohort) return insufficient(kept.length, o.minCohort, skipped, zeroWeight, outliers.length);
    // The cap is worked out again on what is left, from the uncapped weights.
    cap = capEntries(kept, o);
    stats = numberStats(cap.entries, o.trim);
  }
  const s: NumberSummary = {
    kind: 'number',
    count: kept.length,
    ...stats,
    maxNodeShare: cap.maxNodeShare,
    capped: cap.capped,
    outliers,
    excluded: live.length - kept.length,
    skipped,
    zeroWeight,
    contextFields,
  };
  return unit === undefined ? s : { ...s, unit };
}
