/**
 * What synthesis takes and returns: the packet records, the options and the summaries.
 */
import type { Outcome } from '../protocol/packet.js';

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
