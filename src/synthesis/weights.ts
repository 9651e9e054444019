/**
 * Each packet's weight: confidence × recency (half-life) × context kernel, then the per-node
 * weight cap that bounds what one node can move (docs/synthesis.md, "Weight caps"), and the
 * effective size of the weighted cohort.
 */
import { cmp, finite, invalid, type Entry } from './common.js';
import type { Resolved } from './options.js';
import { weightedQuantile } from './stats.js';
import type { SynthPacket } from './types.js';

/** 1/Φ⁻¹(3/4): makes the MAD a consistent estimator of σ for normal data. */
export const MAD_TO_SIGMA = 1.4826;
/** √(π/2): the same for the mean absolute deviation, used when the MAD is 0. */
export const MEAN_AD_TO_SIGMA = Math.sqrt(Math.PI / 2);
/** Relative slack when checking a water-filling level against the weights around it. */
const CAP_SLACK = 1e-12;
/** The default cap is this many times the average share 1/N (docs/synthesis.md, "Weight caps"). */
const DEFAULT_SHARE_MULTIPLE = 2;

/** conf × recency × kernel for each packet, and the context fields that took part. */
export function weigh(packets: readonly SynthPacket[], o: Resolved): { factors: number[]; contextFields: string[] } {
  let now = o.now;
  if (now === undefined) now = packets.reduce((m, p) => Math.max(m, p.ts), -Infinity);
  const recency = (ts: number): number => {
    if (o.halfLifeMs === undefined) return 1;
    // A packet stamped after `now` counts as fresh, never as more than fresh.
    return 0.5 ** (Math.max(0, (now as number) - ts) / o.halfLifeMs);
  };
  const { kernel, fields } = contextKernel(packets, o.context);
  return { factors: packets.map((p) => p.conf * recency(p.ts) * kernel(p)), contextFields: fields };
}

function contextKernel(
  packets: readonly SynthPacket[],
  context: Resolved['context'],
): { kernel: (p: SynthPacket) => number; fields: string[] } {
  if (!context) return { kernel: () => 1, fields: [] };
  const spreads = new Map<string, number>();
  for (const field of [...context.values.keys()].sort(cmp)) {
    const xs: number[] = [];
    for (const p of packets) {
      const v = p.ctx && Object.hasOwn(p.ctx, field) ? p.ctx[field] : undefined;
      if (v !== undefined) xs.push(v);
    }
    if (xs.length > 0) spreads.set(field, robustSpread(xs));
  }
  const twoBw2 = 2 * context.bandwidth * context.bandwidth;
  const kernel = (p: SynthPacket): number => {
    let sum = 0;
    let k = 0;
    for (const [field, spread] of spreads) {
      const v = p.ctx && Object.hasOwn(p.ctx, field) ? p.ctx[field] : undefined;
      if (v === undefined) continue;
      const d = (v - (context.values.get(field) as number)) / spread;
      sum += d * d;
      k++;
    }
    // A packet that shares no field with the query is treated as one spread away on average:
    // unknown, so neither dismissed nor as close as an exact match.
    const d2 = k === 0 ? 1 : sum / k;
    return Math.exp(-d2 / twoBw2);
  };
  return { kernel, fields: [...spreads.keys()] };
}

/** 1.4826 × MAD; else the sample standard deviation; else 1 (all equal, or one value). */
function robustSpread(xs: readonly number[]): number {
  const ones = xs.map(() => 1);
  const med = weightedQuantile(xs, ones, 0.5);
  const mad = weightedQuantile(
    xs.map((x) => Math.abs(x - med)),
    ones,
    0.5,
  );
  if (mad > 0) return MAD_TO_SIGMA * mad;
  if (xs.length >= 2) {
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1));
    if (sd > 0) return sd;
  }
  return 1;
}

/**
 * Caps positive weights so that none exceeds `maxShare` of the capped total, by water-filling:
 * every weight above a common level T is cut to T, where T solves T = maxShare × Σ min(w, T).
 * With the weights sorted w(1) ≥ … ≥ w(N), T = s·R_k / (1 − k·s) for the fewest capped k that is
 * consistent (w(k+1) ≤ T ≤ w(k)), R_k being the sum of the N − k uncapped weights. When
 * N × maxShare ≤ 1 no level gives every node at most maxShare; then every weight becomes the
 * smallest one (T = w(N)), the limit of the rule as maxShare falls to 1/N: one node, one weight.
 * The result does not depend on the order of `weights`; zero weights stay 0.
 *
 * @throws QisError ERR_INVALID_ARGUMENT unless maxShare is in (0, 1] and every weight is finite and ≥ 0
 * @example
 * capWeights([10, 1, 1, 1, 1], 0.4) // { level: 8/3, weights: [8/3, 1, 1, 1, 1], capped: 1 }
 */
export function capWeights(weights: readonly number[], maxShare: number): { level: number; weights: number[]; capped: number } {
  if (!Array.isArray(weights)) invalid('capWeights: weights must be an array');
  if (!finite(maxShare) || maxShare <= 0 || maxShare > 1) invalid(`capWeights: maxShare must be a number in (0, 1], got ${String(maxShare)}`);
  weights.forEach((w: unknown, i) => {
    if (!finite(w) || w < 0) invalid(`capWeights: weights[${i}] must be a finite number ≥ 0`);
  });
  const desc = weights.filter((w) => w > 0).sort((a, b) => b - a);
  if (desc.length === 0) return { level: 0, weights: [...weights], capped: 0 };
  // Ascending sums of the smallest weights, so R_k is exact whatever k (no subtraction).
  const N = desc.length;
  const rest = new Array<number>(N + 1).fill(0);
  for (let i = N - 1; i >= 0; i--) rest[i] = (rest[i + 1] as number) + (desc[i] as number);
  let level = desc[N - 1] as number;
  for (let k = 0; k < N; k++) {
    if (k * maxShare >= 1) break;
    const T = (maxShare * (rest[k] as number)) / (1 - k * maxShare);
    const above = k === 0 ? Infinity : (desc[k - 1] as number);
    // Cap consistent: the k largest reach the level, the next one does not exceed it. The slack
    // absorbs float crumbs where the level falls exactly on a weight (k and k + 1 both hold then).
    if ((desc[k] as number) <= T * (1 + CAP_SLACK) && T <= above * (1 + CAP_SLACK)) {
      level = T;
      break;
    }
  }
  let capped = 0;
  const out = weights.map((w) => {
    if (w <= level) return w;
    capped++;
    return level;
  });
  return { level, weights: out, capped };
}

/** The share cap for a cohort of `count` nodes: the option, or min(1, 2/count). */
function shareFor(o: Resolved, count: number): number {
  return o.maxNodeShare ?? Math.min(1, DEFAULT_SHARE_MULTIPLE / count);
}

/** The entries with their weights capped (c scaled with w, so n_eff sees the cap), and the figures of the cap. */
export function capEntries<V>(live: ReadonlyArray<Entry<V>>, o: Resolved): { entries: Array<Entry<V>>; maxNodeShare: number; capped: number } {
  const maxNodeShare = shareFor(o, live.length);
  const r = capWeights(
    live.map((e) => e.w),
    maxNodeShare,
  );
  const entries = live.map((e, i) => {
    const w = r.weights[i] as number;
    return w === e.w ? e : { ...e, w, c: w / e.n };
  });
  return { entries, maxNodeShare, capped: r.capped };
}

/** n_eff = (Σ n·c)² / Σ n·c²: Kish's effective size over the nodes' individual observations. */
function effectiveN(entries: ReadonlyArray<Entry<unknown>>): number {
  let s1 = 0;
  let s2 = 0;
  for (const e of entries) {
    s1 += e.w;
    s2 += e.w * e.c;
  }
  return (s1 * s1) / s2;
}

export function basics(entries: ReadonlyArray<Entry<unknown>>): { observations: number; weight: number; effectiveN: number } {
  let observations = 0;
  let weight = 0;
  for (const e of entries) {
    observations += e.n;
    weight += e.w;
  }
  return { observations, weight, effectiveN: effectiveN(entries) };
}
