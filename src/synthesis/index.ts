/**
 * Synthesis: folds the verified outcome packets of one cohort into an answer a person can read
 * ("of 212 machines exactly like mine, 31 % failed"). Pure: no I/O, and no clock (recency is
 * measured from an injected `now`, by default the newest packet). Definitions, and why each
 * was chosen, are in docs/synthesis.md; the numbers there are the DEFAULTS below.
 */
import { QisError } from '../protocol/errors.js';
import type { Outcome } from '../protocol/packet.js';
import type { OutcomeSpec, Template } from '../protocol/template.js';

/**
 * One node's latest verified packet for the cohort (the caller keeps one per node, highest seq).
 * @example
 * const v = verifyPacket(topic, bytes, { expectFp })
 * // tombstones (del) carry no outcome and leave the cohort
 * if (!v.del && v.out !== undefined)
 *   latest.set(v.nodeId, { nodeId: v.nodeId, out: v.out, conf: v.conf, n: v.n, ts: v.ts, ...(v.ctx ? { ctx: v.ctx } : {}) })
 */
export interface SynthPacket {
  readonly nodeId: string;
  /** A label, a number, or a map of text to label/number (PROTOCOL §5 key 5). */
  readonly out: Outcome;
  /** 0..1, the protocol's default of 1 already applied. */
  readonly conf: number;
  /** Integer ≥ 1: observations behind `out`. */
  readonly n: number;
  /** Unix ms when the outcome was observed. */
  readonly ts: number;
  readonly ctx?: { readonly [k: string]: number };
}

/** The querier's own context values, for kernel refinement (only fields the template lists). */
export interface SynthesisContext {
  readonly values: { readonly [k: string]: number };
  /** Gaussian kernel bandwidth in robust-spread units; default 1. */
  readonly bandwidth?: number;
}

/**
 * How packets are weighted and screened; every field is optional (defaults in docs/synthesis.md).
 * @example
 * { minCohort: 10, halfLifeMs: 90 * 86_400_000, context: { values: { rpm: 1480 } }, excludeOutliers: true }
 */
export interface SynthesisOptions {
  /** Fewest contributing nodes for an answer; default 5. Applies per key of a map outcome. */
  readonly minCohort?: number;
  /** Unix ms that ages are measured from; default: the newest `ts` among the fitting packets. */
  readonly now?: number;
  /** Recency half-life in ms: weight × 0.5^((now − ts)/halfLifeMs). Default: off. */
  readonly halfLifeMs?: number;
  /** Fraction of the total weight cut from EACH tail for `trimmedMean`; default 0.1, in [0, 0.5). */
  readonly trim?: number;
  /** Robust z above which a number is an outlier; default 3.5. */
  readonly outlierK?: number;
  /** Default false: outliers are reported. True: also removed before every statistic is computed. */
  readonly excludeOutliers?: boolean;
  readonly context?: SynthesisContext;
  /** Level of the proportion intervals; default 0.95. */
  readonly confidence?: number;
  /**
   * Largest share of the cohort's total weight one node may hold, in (0, 1]; weights above it
   * are capped at a common level found by water-filling (docs/synthesis.md, "Weight caps").
   * Default: 2/N for N contributing nodes (twice the average share; 1 when N ≤ 2). 1 turns capping off.
   */
  readonly maxNodeShare?: number;
}

/** How many packets (for a map key: values) took no part, and why. */
export interface SynthesisAccounting {
  /** Packets whose `out` does not fit the template's outcome (signatures say who, not what). */
  readonly skipped: number;
  /** Fitting packets whose weight is 0 (conf 0, or a recency or kernel factor that underflows). */
  readonly zeroWeight: number;
}

export interface InsufficientSummary extends SynthesisAccounting {
  readonly kind: 'insufficient';
  /** `few-nodes`: fewer contributing nodes than minCohort; `mixed-kinds`: a map key as often text as numbers. */
  readonly reason: 'few-nodes' | 'mixed-kinds';
  /** Contributing nodes (after outlier exclusion, when that is what fell short). */
  readonly count: number;
  readonly minCohort: number;
  /** Outliers removed before the count fell short; 0 otherwise. */
  readonly excluded: number;
  /** e.g. `insufficient evidence: 3 nodes, 5 needed`. */
  readonly message: string;
}

/** Figures shared by categorical and numeric summaries. */
export interface WeightedSummary extends SynthesisAccounting {
  /** Contributing nodes. */
  readonly count: number;
  /** Σ n over contributing nodes. */
  readonly observations: number;
  /** Σ w, w = n × conf × recency × kernel. */
  readonly weight: number;
  /** (Σ n·c)² / Σ n·c², c = conf × recency × kernel (docs/synthesis.md). */
  readonly effectiveN: number;
  /** The cap on one node's share of `weight` that was applied: the option, or its default min(1, 2/count). */
  readonly maxNodeShare: number;
  /** Nodes whose weight was cut down to the cap (0: the cap did not bind). */
  readonly capped: number;
  /** Context fields of the query that at least one packet carried, sorted. */
  readonly contextFields: readonly string[];
}

export interface LabelStat {
  /** Nodes reporting the label (raw, unweighted). */
  readonly count: number;
  readonly weight: number;
  /** weight / total weight. */
  readonly proportion: number;
  /** Wilson interval for `proportion` with n = effectiveN. */
  readonly low: number;
  readonly high: number;
  /** count / contributing nodes: the label's share of the one-node-one-vote count. */
  readonly voteShare: number;
}

/**
 * The robust decision: one node, one vote, whatever its n, conf or weight (docs/synthesis.md,
 * "Collusion bounds"). k lying nodes can change `top` away from the honest nodes' plurality only
 * if k ≥ margin.
 */
export interface LabelVote {
  readonly rule: 'one-node-one-vote';
  /** The label with the most nodes; ties: more weight, then the first in `labels`. */
  readonly top: string;
  /** Nodes voting `top` minus nodes voting the runner-up (0 on a tie). */
  readonly margin: number;
}

export interface CategorySummary extends WeightedSummary {
  readonly kind: 'category';
  /** Every template label (zero counts included), or for a map key every observed label. */
  readonly labels: { readonly [label: string]: LabelStat };
  /** The label with the most weight (ties: the first in `labels`). */
  readonly top: string;
  /** The one-node-one-vote decision, which claimed n cannot steer. */
  readonly vote: LabelVote;
  readonly confidence: number;
  /** Normal quantile of the interval: z for `confidence`. */
  readonly z: number;
}

export interface OutlierReport {
  readonly nodeId: string;
  readonly value: number;
  /** |value − median| / scale, on the whole cohort. */
  readonly z: number;
}

export interface NumberSummary extends WeightedSummary {
  readonly kind: 'number';
  readonly mean: number;
  readonly median: number;
  readonly trimmedMean: number;
  /** Weighted median of |x − median| (unscaled). */
  readonly mad: number;
  /** Robust σ behind outlier z: 1.4826 × mad, or √(π/2) × mean absolute deviation when mad is 0. */
  readonly scale: number;
  readonly p10: number;
  readonly p90: number;
  readonly min: number;
  readonly max: number;
  /** Values with robust z > outlierK, found on the whole cohort, sorted by value then nodeId. */
  readonly outliers: readonly OutlierReport[];
  /** How many outliers were removed before the figures above (0 unless excludeOutliers). */
  readonly excluded: number;
  /**
   * Median and trimmed mean with every node counted once (weight 1, same `trim`), over the same
   * nodes as the figures above: what a fraction ε of lying nodes can move by ε of the count,
   * whatever n they claim (docs/synthesis.md, "Collusion bounds").
   */
  readonly byNode: { readonly median: number; readonly trimmedMean: number };
  readonly unit?: string;
}

export type KeySummary = CategorySummary | NumberSummary | InsufficientSummary;

export interface MapSummary extends SynthesisAccounting {
  readonly kind: 'map';
  /** Contributing nodes (fitting map, positive weight). */
  readonly count: number;
  readonly contextFields: readonly string[];
  /** The template's keys in its order (each present), or every observed key, sorted. */
  readonly keys: { readonly [key: string]: KeySummary };
}

/**
 * What {@link synthesize} returns; switch on `kind`.
 * @example
 * if (s.kind === 'number') console.log(`median ${s.median} ${s.unit ?? ''} over ${s.count} nodes`)
 */
export type Synthesis = InsufficientSummary | CategorySummary | NumberSummary | MapSummary;

const DEFAULTS = Object.freeze({
  minCohort: 5,
  trim: 0.1,
  outlierK: 3.5,
  excludeOutliers: false,
  bandwidth: 1,
  confidence: 0.95,
});

/** 1/Φ⁻¹(3/4): makes the MAD a consistent estimator of σ for normal data. */
const MAD_TO_SIGMA = 1.4826;
/** √(π/2): the same for the mean absolute deviation, used when the MAD is 0. */
const MEAN_AD_TO_SIGMA = Math.sqrt(Math.PI / 2);
/** Relative slack when checking a water-filling level against the weights around it. */
const CAP_SLACK = 1e-12;
/** Relative tolerance for "cumulative weight equals q·W" in quantiles (float sums of weights). */
const TIE_TOLERANCE = 1e-12;

interface Resolved {
  readonly minCohort: number;
  readonly now: number | undefined;
  readonly halfLifeMs: number | undefined;
  readonly trim: number;
  readonly outlierK: number;
  readonly excludeOutliers: boolean;
  readonly context: { readonly values: ReadonlyMap<string, number>; readonly bandwidth: number } | undefined;
  readonly confidence: number;
  readonly z: number;
  /** undefined: the default min(1, 2/N), which depends on the cohort. */
  readonly maxNodeShare: number | undefined;
}

const OPTION_NAMES = new Set(['minCohort', 'now', 'halfLifeMs', 'trim', 'outlierK', 'excludeOutliers', 'context', 'confidence', 'maxNodeShare']);
/** The default cap is this many times the average share 1/N (docs/synthesis.md, "Weight caps"). */
const DEFAULT_SHARE_MULTIPLE = 2;

function invalid(what: string): never {
  throw new QisError('ERR_INVALID_ARGUMENT', what);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Validates the options once and merges them over DEFAULTS. */
function resolve(template: Template, options: unknown): Resolved {
  if (options !== undefined && !isRecord(options)) invalid('synthesize: options must be an object');
  const o = (options ?? {}) as Record<string, unknown>;
  // A misspelt option would otherwise be silently ignored and the answer quietly differ.
  for (const k of Object.keys(o)) if (!OPTION_NAMES.has(k)) invalid(`synthesize: unknown option "${k}"`);
  const minCohort = o.minCohort ?? DEFAULTS.minCohort;
  if (!Number.isSafeInteger(minCohort) || (minCohort as number) < 1) invalid(`synthesize: minCohort must be an integer ≥ 1, got ${String(minCohort)}`);
  const trim = o.trim ?? DEFAULTS.trim;
  if (!finite(trim) || trim < 0 || trim >= 0.5) invalid(`synthesize: trim must be a number in [0, 0.5), got ${String(trim)}`);
  const outlierK = o.outlierK ?? DEFAULTS.outlierK;
  if (!finite(outlierK) || outlierK <= 0) invalid(`synthesize: outlierK must be a number > 0, got ${String(outlierK)}`);
  const excludeOutliers = o.excludeOutliers ?? DEFAULTS.excludeOutliers;
  if (typeof excludeOutliers !== 'boolean') invalid('synthesize: excludeOutliers must be true or false');
  const confidence = o.confidence ?? DEFAULTS.confidence;
  if (!finite(confidence) || confidence <= 0 || confidence >= 1) invalid(`synthesize: confidence must be a number in (0, 1), got ${String(confidence)}`);
  const now = o.now;
  if (now !== undefined && !finite(now)) invalid(`synthesize: now must be a finite number (Unix ms), got ${String(now)}`);
  const halfLifeMs = o.halfLifeMs;
  if (halfLifeMs !== undefined && (!finite(halfLifeMs) || halfLifeMs <= 0)) {
    invalid(`synthesize: halfLifeMs must be a number > 0, got ${String(halfLifeMs)}`);
  }
  const maxNodeShare = o.maxNodeShare;
  if (maxNodeShare !== undefined && (!finite(maxNodeShare) || maxNodeShare <= 0 || maxNodeShare > 1)) {
    invalid(`synthesize: maxNodeShare must be a number in (0, 1], got ${String(maxNodeShare)}`);
  }
  let context: Resolved['context'];
  if (o.context !== undefined) {
    const c = o.context;
    if (!isRecord(c) || !isRecord(c.values)) invalid('synthesize: context must be { values: { field: number }, bandwidth? }');
    const bandwidth = c.bandwidth ?? DEFAULTS.bandwidth;
    if (!finite(bandwidth) || bandwidth <= 0) invalid(`synthesize: context bandwidth must be a number > 0, got ${String(bandwidth)}`);
    const allowed = template.doc.context ?? [];
    const values = new Map<string, number>();
    for (const [k, v] of Object.entries(c.values)) {
      // Packets only carry the template's context fields; any other name is a typo that would
      // silently refine nothing.
      if (!allowed.includes(k)) invalid(`synthesize: context "${k}" is not a context value of the template (it has: ${allowed.join(', ') || 'none'})`);
      if (!finite(v)) invalid(`synthesize: context "${k}" must be a finite number`);
      values.set(k, v);
    }
    context = { values, bandwidth };
  }
  return {
    minCohort: minCohort as number,
    now,
    halfLifeMs,
    trim,
    outlierK,
    excludeOutliers,
    context,
    confidence,
    // Lower tail: 1 − confidence is exact in binary (Sterbenz), 1 − (1 − confidence)/2 is not.
    z: -normalQuantile((1 - confidence) / 2),
    maxNodeShare,
  };
}

function checkPackets(packets: unknown): readonly SynthPacket[] {
  if (!Array.isArray(packets)) invalid('synthesize: packets must be an array');
  const seen = new Set<string>();
  packets.forEach((p: unknown, i: number) => {
    const at = `synthesize: packets[${i}]`;
    if (!isRecord(p)) invalid(`${at} must be an object`);
    if (typeof p.nodeId !== 'string' || p.nodeId.length === 0) invalid(`${at}.nodeId must be a non-empty string`);
    // Two packets of one node would count it twice and make the answer depend on their order.
    if (seen.has(p.nodeId)) invalid(`${at}: node ${p.nodeId} appears twice (keep one packet per node, the highest seq)`);
    seen.add(p.nodeId);
    if (!finite(p.conf) || p.conf < 0 || p.conf > 1) invalid(`${at}.conf must be a number from 0 to 1`);
    if (!Number.isSafeInteger(p.n) || (p.n as number) < 1) invalid(`${at}.n must be an integer ≥ 1`);
    if (!finite(p.ts)) invalid(`${at}.ts must be a finite number (Unix ms)`);
    if (p.ctx !== undefined) {
      if (!isRecord(p.ctx)) invalid(`${at}.ctx must be a map of text to number`);
      for (const [k, v] of Object.entries(p.ctx)) if (!finite(v)) invalid(`${at}.ctx["${k}"] must be a finite number`);
    }
  });
  return packets as readonly SynthPacket[];
}

/** A packet reduced to what the statistics need: its value and its weight factors. */
interface Entry<V> {
  readonly nodeId: string;
  readonly value: V;
  readonly n: number;
  /** conf × recency × kernel: the weight of each of the node's n observations. */
  readonly c: number;
  /** n × c. */
  readonly w: number;
}

type MapValue = { readonly [key: string]: string | number };

/** The value of a packet in the template's terms, or undefined when it does not fit. */
function fit(spec: OutcomeSpec, labels: ReadonlySet<string>, out: Outcome): string | number | MapValue | undefined {
  switch (spec.kind) {
    case 'category': {
      if (typeof out !== 'string') return undefined;
      // Labels compare in NFC, as the signer (checkOutcomeFits) writes them.
      const label = out.normalize('NFC');
      return labels.has(label) ? label : undefined;
    }
    case 'number':
      return finite(out) ? out : undefined;
    case 'map': {
      if (!isRecord(out)) return undefined;
      const keys = Object.keys(out);
      if (keys.length === 0) return undefined;
      // A key outside the template's list makes the whole outcome not fit, as for the signer.
      if (spec.keys && keys.some((k) => !spec.keys?.includes(k))) return undefined;
      // Null prototype: a key named "__proto__" stays data.
      const m = Object.create(null) as Record<string, string | number>;
      for (const k of keys) {
        const v: unknown = out[k];
        if (typeof v === 'string') m[k] = v.normalize('NFC');
        else if (finite(v)) m[k] = v;
        else return undefined;
      }
      return m;
    }
  }
}

/**
 * Folds the packets of one cohort into a summary of the template's outcome kind.
 * Packets that do not fit the outcome are skipped and counted; fewer contributing nodes than
 * `minCohort` give `{ kind: 'insufficient' }`. The result does not depend on packet order.
 *
 * @throws QisError ERR_INVALID_ARGUMENT for a bad option or a malformed packet record
 * @example
 * const s = synthesize(bearing, packets, { halfLifeMs: 180 * 86_400_000 })
 * if (s.kind === 'category') {
 *   const f = s.labels['failure']
 *   console.log(`of ${s.count} machines like mine, ${Math.round(100 * (f?.proportion ?? 0))} % failed`)
 * }
 */
export function synthesize(template: Template, packets: readonly SynthPacket[], options?: SynthesisOptions): Synthesis {
  if (!isRecord(template) || !isRecord(template.doc) || !isRecord(template.doc.outcome)) {
    invalid('synthesize: template must be a compiled Template (compileTemplate)');
  }
  const o = resolve(template, options);
  const spec = template.doc.outcome;
  const labels = spec.kind === 'category' ? spec.labels.map((l) => l.normalize('NFC')) : [];
  const labelSet = new Set(labels);
  // One fixed order (node ids are unique) for every sum, so the floats do not depend on input order.
  const sorted = [...checkPackets(packets)].sort((a, b) => cmp(a.nodeId, b.nodeId));
  const fitting: Array<{ p: SynthPacket; value: string | number | MapValue }> = [];
  for (const p of sorted) {
    const value = fit(spec, labelSet, p.out);
    if (value !== undefined) fitting.push({ p, value });
  }
  const skipped = sorted.length - fitting.length;
  const { factors, contextFields } = weigh(
    fitting.map((f) => f.p),
    o,
  );
  const entries = fitting.map(({ p, value }, i) => {
    const c = factors[i] as number;
    return { nodeId: p.nodeId, value, n: p.n, c, w: p.n * c };
  });
  switch (spec.kind) {
    case 'category':
      return summarizeCategory(entries as Array<Entry<string>>, labels, o, skipped, contextFields);
    case 'number':
      return summarizeNumber(entries as Array<Entry<number>>, o, skipped, contextFields, spec.unit);
    case 'map':
      return summarizeMap(entries as Array<Entry<MapValue>>, spec.keys, o, skipped, contextFields);
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** conf × recency × kernel for each packet, and the context fields that took part. */
function weigh(packets: readonly SynthPacket[], o: Resolved): { factors: number[]; contextFields: string[] } {
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

function plural(k: number, word: string): string {
  return `${k} ${word}${k === 1 ? '' : 's'}`;
}

function insufficient(count: number, minCohort: number, skipped: number, zeroWeight: number, excluded = 0): InsufficientSummary {
  const after = excluded > 0 ? ` after excluding ${plural(excluded, 'outlier')}` : '';
  return {
    kind: 'insufficient',
    reason: 'few-nodes',
    count,
    minCohort,
    excluded,
    skipped,
    zeroWeight,
    message: `insufficient evidence: ${plural(count, 'node')}${after}, ${minCohort} needed`,
  };
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
function capEntries<V>(live: ReadonlyArray<Entry<V>>, o: Resolved): { entries: Array<Entry<V>>; maxNodeShare: number; capped: number } {
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

function basics(entries: ReadonlyArray<Entry<unknown>>): { observations: number; weight: number; effectiveN: number } {
  let observations = 0;
  let weight = 0;
  for (const e of entries) {
    observations += e.n;
    weight += e.w;
  }
  return { observations, weight, effectiveN: effectiveN(entries) };
}

function summarizeCategory(
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

interface NumberStats {
  readonly observations: number;
  readonly weight: number;
  readonly effectiveN: number;
  readonly mean: number;
  readonly median: number;
  readonly trimmedMean: number;
  readonly mad: number;
  readonly scale: number;
  readonly p10: number;
  readonly p90: number;
  readonly min: number;
  readonly max: number;
  readonly byNode: { readonly median: number; readonly trimmedMean: number };
}

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

function summarizeNumber(
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

function summarizeMap(
  all: ReadonlyArray<Entry<MapValue>>,
  templateKeys: readonly string[] | undefined,
  o: Resolved,
  skipped: number,
  contextFields: readonly string[],
): MapSummary | InsufficientSummary {
  const live = all.filter((e) => e.w > 0);
  const zeroWeight = all.length - live.length;
  // Every key would be insufficient too; one top-level answer is simpler to act on.
  if (live.length < o.minCohort) return insufficient(live.length, o.minCohort, skipped, zeroWeight);
  const keys = templateKeys ? [...templateKeys] : [...new Set(all.flatMap((e) => Object.keys(e.value)))].sort(cmp);
  const out = keys.map((key): [string, KeySummary] => {
    const texts: Array<Entry<string>> = [];
    const nums: Array<Entry<number>> = [];
    for (const e of all) {
      if (!Object.hasOwn(e.value, key)) continue;
      const v = e.value[key] as string | number;
      if (typeof v === 'string') texts.push({ ...e, value: v });
      else nums.push({ ...e, value: v });
    }
    // A key read as text by some nodes and as numbers by others: the kind more contributing
    // nodes use wins and the other values are skipped, so one odd node cannot blank out a key.
    const liveTexts = texts.filter((e) => e.w > 0).length;
    const liveNums = nums.filter((e) => e.w > 0).length;
    if (liveTexts > 0 && liveTexts === liveNums) {
      return [
        key,
        {
          kind: 'insufficient',
          reason: 'mixed-kinds',
          count: liveTexts + liveNums,
          minCohort: o.minCohort,
          excluded: 0,
          skipped: 0,
          zeroWeight: texts.length + nums.length - liveTexts - liveNums,
          message: `insufficient evidence: key "${key}" is text from ${plural(liveTexts, 'node')} and a number from ${liveNums}`,
        },
      ];
    }
    if (liveTexts > liveNums) {
      const labels = [...new Set(texts.filter((e) => e.w > 0).map((e) => e.value))].sort(cmp);
      return [key, summarizeCategory(texts, labels, o, nums.length, contextFields)];
    }
    return [key, summarizeNumber(nums, o, texts.length, contextFields, undefined)];
  });
  return { kind: 'map', count: live.length, keys: Object.fromEntries(out), skipped, zeroWeight, contextFields };
}

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
function quantileSorted(xs: readonly number[], ws: readonly number[], total: number, q: number): number {
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
function trimmedMeanSorted(xs: readonly number[], ws: readonly number[], total: number, trim: number): number {
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
function normalQuantile(p: number): number {
  const q = p - 0.5;
  if (Math.abs(q) <= 0.425) {
    const r = 0.180625 - q * q;
    return (q * horner(AS241_CENTRAL_NUM, r)) / horner(AS241_CENTRAL_DEN, r);
  }
  const r = Math.sqrt(-Math.log(q < 0 ? p : 1 - p));
  const val = r <= 5 ? horner(AS241_NEAR_NUM, r - 1.6) / horner(AS241_NEAR_DEN, r - 1.6) : horner(AS241_FAR_NUM, r - 5) / horner(AS241_FAR_DEN, r - 5);
  return q < 0 ? -val : val;
}
