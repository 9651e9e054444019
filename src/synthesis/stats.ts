/**
 * The statistics synthesis is built from, pure and exact at the edges: the Wilson interval,
 * weighted quantiles and trimmed means, and the normal quantile (AS 241).
 */
import { finite, invalid } from './common.js';

/** Relative tolerance for "cumulative weight equals q·W" in quantiles (float sums of weights). */
const TIE_TOLERANCE = 1e-12;

/**
 * Wilson score interval for a proportion `p` observed over `n` (possibly fractional, an effective
 * size) trials at normal quantile `z`. Bounds are clamped to [0, 1] and exact at p = 0 and p = 1;
 * n = 0 (no information) gives [0, 1].
 *
 * @throws QisError ERR_INVALID_ARGUMENT unless 0 ≤ p ≤ 1, n ≥ 0 and z ≥ 0 are finite
 * @example
 * wilson(0.5, 100, 1.959963984540054) // { low: 0.4038…, high: 0.5961… }
 */
export function wilson(p: number, n: number, z: number): { low: number; high: number } {
  if (!finite(p) || p < 0 || p > 1) invalid(`wilson: p must be a number from 0 to 1, got ${String(p)}`);
  if (!finite(n) || n < 0) invalid(`wilson: n must be a number ≥ 0, got ${String(n)}`);
  if (!finite(z) || z < 0) invalid(`wilson: z must be a number ≥ 0, got ${String(z)}`);
  if (n === 0) return { low: 0, high: 1 };
  const z2n = (z * z) / n;
  const center = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  // Exact ends: algebraically low = 0 at p = 0 and high = 1 at p = 1; floats leave crumbs.
  return {
    low: p === 0 ? 0 : Math.min(1, Math.max(0, center - half)),
    high: p === 1 ? 1 : Math.min(1, Math.max(0, center + half)),
  };
}

/**
 * The weighted q-quantile: the inverse of the weighted empirical distribution function, averaging
 * the two neighbouring values where the cumulative weight equals q·W exactly (Hyndman and Fan's
 * type 2, the textbook median). Splitting one value's weight into copies does not change it, so
 * a node reporting n observations counts like n nodes with one. Zero weights are ignored.
 *
 * @throws QisError ERR_INVALID_ARGUMENT for unequal lengths, non-finite values, negative weights,
 *   no positive weight, or q outside [0, 1]
 * @example
 * weightedQuantile([1, 2, 3, 4], [1, 1, 1, 1], 0.5) // 2.5
 * weightedQuantile([1, 2, 3], [1, 1, 5], 0.5)       // 3
 */
export function weightedQuantile(values: readonly number[], weights: readonly number[], q: number): number {
  if (!Array.isArray(values) || !Array.isArray(weights) || values.length !== weights.length) {
    invalid('weightedQuantile: values and weights must be arrays of the same length');
  }
  if (!finite(q) || q < 0 || q > 1) invalid(`weightedQuantile: q must be a number from 0 to 1, got ${String(q)}`);
  const idx: number[] = [];
  let total = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    const w = weights[i];
    if (!finite(x)) invalid(`weightedQuantile: values[${i}] must be a finite number`);
    if (!finite(w) || w < 0) invalid(`weightedQuantile: weights[${i}] must be a finite number ≥ 0`);
    if (w > 0) {
      idx.push(i);
      total += w;
    }
  }
  if (idx.length === 0) invalid('weightedQuantile: at least one weight must be positive');
  idx.sort((a, b) => (values[a] as number) - (values[b] as number));
  return quantileSorted(
    idx.map((i) => values[i] as number),
    idx.map((i) => weights[i] as number),
    total,
    q,
  );
}

/** Type 2 weighted quantile of values sorted ascending with positive weights summing to `total`. */
export function quantileSorted(xs: readonly number[], ws: readonly number[], total: number, q: number): number {
  if (q <= 0) return xs[0] as number;
  const target = q * total;
  const tol = TIE_TOLERANCE * total;
  let cum = 0;
  for (let i = 0; i < xs.length; i++) {
    cum += ws[i] as number;
    if (cum < target - tol) continue;
    if (cum <= target + tol && i + 1 < xs.length) return ((xs[i] as number) + (xs[i + 1] as number)) / 2;
    return xs[i] as number;
  }
  return xs[xs.length - 1] as number;
}

/**
 * Mean of what is left after cutting `trim` of the total weight from each tail; a value that
 * straddles a cut keeps only its inner part (fractional weights).
 */
export function trimmedMeanSorted(xs: readonly number[], ws: readonly number[], total: number, trim: number): number {
  const lo = trim * total;
  const hi = total - lo;
  let cum = 0;
  let sum = 0;
  let kept = 0;
  for (let i = 0; i < xs.length; i++) {
    const start = cum;
    cum += ws[i] as number;
    const part = Math.min(cum, hi) - Math.max(start, lo);
    if (part > 0) {
      sum += part * (xs[i] as number);
      kept += part;
    }
  }
  // Only reachable through float crumbs with trim just below 0.5: the middle is the median.
  return kept > 0 ? sum / kept : quantileSorted(xs, ws, total, 0.5);
}

// Coefficients of AS 241 (Wichura 1988), highest power first, for Horner evaluation.
const AS241_CENTRAL_NUM = [
  2509.0809287301226727, 33430.575583588128105, 67265.770927008700853, 45921.953931549871457,
  13731.693765509461125, 1971.5909503065514427, 133.14166789178437745, 3.387132872796366608,
] as const;
const AS241_CENTRAL_DEN = [
  5226.495278852545925, 28729.085735721942674, 39307.89580009271061, 21213.794301586595867,
  5394.1960214247511077, 687.1870074920579083, 42.313330701600911252, 1,
] as const;
const AS241_NEAR_NUM = [
  7.7454501427834140764e-4, 0.0227238449892691845833, 0.24178072517745061177, 1.27045825245236838258,
  3.64784832476320460504, 5.7694972214606914055, 4.6303378461565452959, 1.42343711074968357734,
] as const;
const AS241_NEAR_DEN = [
  1.05075007164441684324e-9, 5.475938084995344946e-4, 0.0151986665636164571966, 0.14810397642748007459,
  0.68976733498510000455, 1.6763848301838038494, 2.05319162663775882187, 1,
] as const;
const AS241_FAR_NUM = [
  2.01033439929228813265e-7, 2.71155556874348757815e-5, 0.0012426609473880784386, 0.026532189526576123093,
  0.29656057182850489123, 1.7848265399172913358, 5.4637849111641143699, 6.6579046435011037772,
] as const;
const AS241_FAR_DEN = [
  2.04426310338993978564e-15, 1.4215117583164458887e-7, 1.8463183175100546818e-5, 7.868691311456132591e-4,
  0.0148753612908506148525, 0.13692988092273580531, 0.59983220655588793769, 1,
] as const;

function horner(coefficients: readonly number[], x: number): number {
  let acc = 0;
  for (const c of coefficients) acc = acc * x + c;
  return acc;
}

/**
 * Φ⁻¹(p), the standard normal quantile for 0 < p < 1, by Wichura's algorithm AS 241 (PPND16,
 * relative error about 1e-16), the one R's qnorm uses.
 */
export function normalQuantile(p: number): number {
  const q = p - 0.5;
  if (Math.abs(q) <= 0.425) {
    const r = 0.180625 - q * q;
    return (q * horner(AS241_CENTRAL_NUM, r)) / horner(AS241_CENTRAL_DEN, r);
  }
  const r = Math.sqrt(-Math.log(q < 0 ? p : 1 - p));
  const val = r <= 5 ? horner(AS241_NEAR_NUM, r - 1.6) / horner(AS241_NEAR_DEN, r - 1.6) : horner(AS241_FAR_NUM, r - 5) / horner(AS241_FAR_DEN, r - 5);
  return q < 0 ? -val : val;
}
