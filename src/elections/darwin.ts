/**
 * "Darwinism" (PROTOCOL §9): scoring predictions, pooling rival templates' track records, ranking
 * them with uncertainty, Thompson sampling between them, and the reliability chart.
 *
 * Pure functions: the node runtime (src/node/scoring.ts) and the CLI feed them score packets read from a broker.
 */
import { QisError } from '../protocol/errors.js';
import type { Outcome } from '../protocol/packet.js';
import { capWeights, type Synthesis } from '../synthesis/index.js';
import type { Template } from '../protocol/template.js';
import { REL_BINS, type ScoreFields } from '../protocol/score.js';

// ------------------------------------------------------------------------------ predictions and scores

/** What a node was told by a cohort query, kept until it observes the outcome. */
export type Prediction =
  | { readonly kind: 'category'; readonly probs: { readonly [label: string]: number } }
  | { readonly kind: 'number'; readonly value: number };

/**
 * The prediction a synthesis gives (PROTOCOL §9 scores it later): label proportions, or the
 * median of a numeric cohort. A cohort too small to answer is, for categorical outcomes, the
 * uniform forecast (it says nothing, and is scored as such); numeric and map outcomes are not kept.
 */
export function predictionOf(template: Template, s: Synthesis): Prediction | undefined {
  const spec = template.doc.outcome;
  if (spec.kind === 'category') {
    const probs: Record<string, number> = {};
    for (const l of spec.labels) probs[l] = s.kind === 'category' ? (s.labels[l]?.proportion ?? 0) : 1 / spec.labels.length;
    return { kind: 'category', probs };
  }
  if (spec.kind === 'number' && s.kind === 'number') return { kind: 'number', value: s.median };
  return undefined;
}

/** How one prediction fared against what happened. */
export interface PredictionScore {
  /** Σ_l (p_l − [l happened])², 0 (perfect) … 2 (certain and wrong); categorical outcomes. */
  readonly brier?: number;
  /** The single most probable label came true (a tie for the top is not a hit: it names no label). */
  readonly hit?: boolean;
  /** |predicted − observed|; numeric outcomes (the prediction is the cohort's median). */
  readonly absError?: number;
}

/**
 * Scores one prediction against the observed outcome.
 * @param labels the template's labels in order (categorical outcomes)
 * @throws QisError ERR_OUTCOME_INVALID when the outcome's kind differs from the prediction's
 */
export function scorePrediction(p: Prediction, actual: Outcome, labels: readonly string[] = []): PredictionScore {
  if (p.kind === 'category') {
    if (typeof actual !== 'string') throw new QisError('ERR_OUTCOME_INVALID', 'a categorical prediction is scored against a label');
    const all = labels.length > 0 ? labels : Object.keys(p.probs);
    let brier = 0;
    let best: string | undefined;
    let bestP = -1;
    let tie = false;
    for (const l of all) {
      const q = p.probs[l] ?? 0;
      brier += (q - (l === actual ? 1 : 0)) ** 2;
      if (q > bestP) {
        bestP = q;
        best = l;
        tie = false;
      } else if (q === bestP) tie = true;
    }
    return { brier, hit: !tie && best === actual };
  }
  if (typeof actual !== 'number') throw new QisError('ERR_OUTCOME_INVALID', 'a numeric prediction is scored against a number');
  return { absError: Math.abs(p.value - actual) };
}

/** A node's running totals for one template (kept in its data directory). */
export interface ScoreTotals {
  /** Last seq used for this template's score packet. */
  readonly seq: number;
  readonly k: number;
  readonly brierSum: number;
  readonly brierCount: number;
  readonly hits: number;
  readonly absErrorSum: number;
  readonly absErrorCount: number;
  /** Unix s of the first scored prediction. */
  readonly since?: number;
  /** The reliability histogram of key 25: [n_0, y_0, …]. */
  readonly rel: readonly number[];
  /**
   * The prediction counted last (situation fp hex, when it was received, its score): a report
   * interrupted after its totals were saved but before its prediction was forgotten finds it here
   * on retry and is not counted twice.
   */
  readonly last?: { readonly fp: string; readonly at: number; readonly score: PredictionScore };
}

export const EMPTY_TOTALS: ScoreTotals = Object.freeze({ seq: 0, k: 0, brierSum: 0, brierCount: 0, hits: 0, absErrorSum: 0, absErrorCount: 0, rel: Object.freeze(new Array<number>(2 * REL_BINS).fill(0)) });

/** The reliability bin of a probability: [i/10, (i+1)/10), with 1 in the last bin. */
export function relBin(p: number): number {
  return Math.min(REL_BINS - 1, Math.max(0, Math.floor(p * REL_BINS)));
}

/** Adds one scored prediction to the totals. */
export function addScore(t: ScoreTotals, p: Prediction, s: PredictionScore, actual: Outcome, observedAtMs: number): ScoreTotals {
  const rel = [...t.rel];
  if (p.kind === 'category') {
    for (const [label, q] of Object.entries(p.probs)) {
      const i = relBin(q);
      rel[2 * i] = (rel[2 * i] ?? 0) + 1;
      if (label === actual) rel[2 * i + 1] = (rel[2 * i + 1] ?? 0) + 1;
    }
  }
  const since = t.since ?? Math.floor(observedAtMs / 1000);
  return {
    seq: t.seq,
    k: t.k + 1,
    brierSum: t.brierSum + (s.brier ?? 0),
    brierCount: t.brierCount + (s.brier !== undefined ? 1 : 0),
    hits: t.hits + (s.hit === true ? 1 : 0),
    absErrorSum: t.absErrorSum + (s.absError ?? 0),
    absErrorCount: t.absErrorCount + (s.absError !== undefined ? 1 : 0),
    since,
    rel,
  };
}

/** The score packet fields (§9) of the totals, to be signed with `seq` and `ts`. */
export function scoreFieldsOf(t: ScoreTotals, seq: number, ts: number): ScoreFields {
  const f: { -readonly [K in keyof ScoreFields]: ScoreFields[K] } = { seq, ts, k: t.k };
  if (t.brierCount > 0) {
    f.brier = t.brierSum / t.brierCount;
    f.hits = t.hits;
    f.rel = t.rel;
  }
  if (t.absErrorCount > 0) f.mae = t.absErrorSum / t.absErrorCount;
  if (t.since !== undefined) f.since = t.since;
  return f;
}

// ------------------------------------------------------------------------------ Beta distribution

/** ln Γ(x), Lanczos (g = 7, n = 9): about 15 significant digits for x > 0. */
function lnGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0] as number;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += (c[i] as number) / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaCf(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-14) break;
  }
  return h;
}

/** The Beta(a, b) cumulative distribution function (regularized incomplete beta I_x(a, b)). */
export function betaCdf(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lbt = lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log(1 - x);
  const bt = Math.exp(lbt);
  return x < (a + 1) / (a + b + 2) ? (bt * betaCf(a, b, x)) / a : 1 - (bt * betaCf(b, a, 1 - x)) / b;
}

/** The q-quantile of Beta(a, b), by bisection on {@link betaCdf} (to 1e-10). */
export function betaQuantile(q: number, a: number, b: number): number {
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 64 && hi - lo > 1e-10; i++) {
    const mid = (lo + hi) / 2;
    if (betaCdf(mid, a, b) < q) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** A standard normal deviate (Box–Muller) from a uniform source. */
function normal(rng: () => number): number {
  let u = rng();
  while (u <= Number.EPSILON) u = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

/** A Gamma(shape, 1) deviate: Marsaglia & Tsang (2000), with the shape < 1 boost. */
function gamma(shape: number, rng: () => number): number {
  if (shape < 1) {
    let u = rng();
    while (u <= Number.EPSILON) u = rng();
    return gamma(shape + 1, rng) * u ** (1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(rng);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** A Beta(a, b) deviate, from two Gamma deviates. */
export function sampleBeta(a: number, b: number, rng: () => number): number {
  const x = gamma(a, rng);
  const y = gamma(b, rng);
  return x / (x + y);
}

// ------------------------------------------------------------------------------ ranking

/** A template's scores as read from `qis/1/s/<tplId>/+` (one packet per node). */
export interface TrackRecord {
  readonly tplId: string;
  /** A human name, e.g. "maize-yield v2" (optional). */
  readonly name?: string;
  readonly scores: readonly ScoreFields[];
}

/** One template's pooled record. Intervals are 95 %. */
export interface RankRow {
  readonly tplId: string;
  readonly name?: string;
  /** Nodes with at least one scored prediction. */
  readonly nodes: number;
  /** Predictions scored, over all nodes. */
  readonly k: number;
  /** Pooled hits (categorical outcomes); the posterior is Beta(1 + hits, 1 + kHits − hits). */
  readonly hits: number;
  /** Predictions behind `hits` (those of packets that carry hits). */
  readonly kHits: number;
  /** Nodes whose claimed k was cut by the per-node cap ({@link cappedK}) before pooling. */
  readonly capped: number;
  /**
   * Posterior mean of the hit rate, Beta(1 + h, 1 + K − h) with h and K the pooled hits and k
   * after the per-node cap ((1 + hits) / (2 + kHits) when nobody is capped), and its equal-tailed interval.
   */
  readonly hitRate: number;
  readonly hitInterval: readonly [number, number];
  /** Mean Brier weighted by k; normal-approximation interval (docs/protocol-choices.md). */
  readonly brier?: number;
  readonly brierInterval?: readonly [number, number];
  /** Mean absolute error weighted by k, with its interval (numeric outcomes). */
  readonly mae?: number;
  readonly maeInterval?: readonly [number, number];
  /** Pooled reliability histogram (sum of the nodes' key 25), when any node sent one. */
  readonly rel?: readonly number[];
}

/**
 * The k-weighted mean of per-node means, and a 95 % normal interval. Each node's mean is taken
 * as the mean of its k_i predictions, so the per-prediction variance is estimated from the
 * spread between nodes, σ² = Σ k_i (m_i − m)² / (n − 1); with one node, `fallbackSd` is used.
 */
function pooledMean(items: readonly { m: number; k: number }[], fallbackSd: number): { mean: number; interval: [number, number] } | undefined {
  const K = items.reduce((s, x) => s + x.k, 0);
  if (K === 0) return undefined;
  const mean = items.reduce((s, x) => s + x.k * x.m, 0) / K;
  const n = items.length;
  const sd = n >= 2 ? Math.sqrt(items.reduce((s, x) => s + x.k * (x.m - mean) ** 2, 0) / (n - 1)) : fallbackSd;
  const half = (1.96 * sd) / Math.sqrt(K);
  return { mean, interval: [Math.max(0, mean - half), mean + half] };
}

/**
 * The weight each node's claims get when a template's record is pooled: its `k`, capped by the
 * same water-filling rule as synthesis weights (docs/synthesis.md) at 2/N of the pooled total for
 * N ≥ 3 nodes, so one node claiming a huge record cannot carry a ranking or a Thompson draw: k
 * colluding nodes hold at most 2k/N of it. With one or two nodes nothing is capped.
 */
export function cappedK(scores: readonly { readonly k: number }[]): { k: number[]; capped: number } {
  const ks = scores.map((x) => x.k);
  if (ks.length < 3) return { k: ks, capped: 0 };
  const c = capWeights(ks, 2 / ks.length);
  return { k: c.weights, capped: c.capped };
}

/** Pooled hits over the nodes that report them, each node's claim scaled to its capped k. */
function pooledHits(live: readonly ScoreFields[]): { hits: number; k: number; rawHits: number; rawK: number } {
  const withHits = live.filter((x) => x.hits !== undefined);
  const { k } = cappedK(withHits);
  let hits = 0;
  let kk = 0;
  let rawHits = 0;
  let rawK = 0;
  withHits.forEach((x, i) => {
    const ki = k[i] as number;
    hits += ((x.hits as number) * ki) / x.k;
    kk += ki;
    rawHits += x.hits as number;
    rawK += x.k;
  });
  return { hits, k: kk, rawHits, rawK };
}

/** Pools one template's track record (each node's claims capped as {@link cappedK} says). */
export function poolRecord(r: TrackRecord): RankRow {
  const live = r.scores.filter((s) => s.k > 0);
  const capped = cappedK(live);
  const eff = (i: number): number => capped.k[i] as number;
  const pooled = pooledHits(live);
  const hits = pooled.rawHits;
  const kHits = pooled.rawK;
  let rel: number[] | undefined;
  for (const s of live) {
    if (s.rel !== undefined) {
      rel ??= new Array<number>(2 * REL_BINS).fill(0);
      for (let i = 0; i < rel.length; i++) rel[i] = (rel[i] as number) + (s.rel[i] ?? 0);
    }
  }
  const a = 1 + pooled.hits;
  const b = 1 + pooled.k - pooled.hits;
  const brier = pooledMean(live.flatMap((s, i) => (s.brier === undefined ? [] : [{ m: s.brier, k: eff(i) }])), 0.5);
  const maeItems = live.flatMap((s, i) => (s.mae === undefined ? [] : [{ m: s.mae, k: eff(i) }]));
  // Numeric errors have no natural bound: with one node the spread is taken as the mean itself.
  const mae = pooledMean(maeItems, maeItems[0]?.m ?? 0);
  return {
    tplId: r.tplId,
    ...(r.name !== undefined ? { name: r.name } : {}),
    nodes: live.length,
    k: live.reduce((s, x) => s + x.k, 0),
    hits,
    kHits,
    capped: capped.capped,
    hitRate: a / (a + b),
    hitInterval: [betaQuantile(0.025, a, b), betaQuantile(0.975, a, b)],
    ...(brier ? { brier: brier.mean, brierInterval: brier.interval } : {}),
    ...(mae ? { mae: mae.mean, maeInterval: mae.interval } : {}),
    ...(rel ? { rel } : {}),
  };
}

/**
 * Ranks rival templates by their pooled track records: by posterior mean hit rate when they have
 * categorical scores, then by lower mean Brier; by lower mean absolute error for numeric ones.
 * Templates with no scored prediction come last (their posterior is the uniform prior).
 * @example rankTemplates([{ tplId: a, scores: scoresA }, { tplId: b, scores: scoresB }])[0].tplId
 */
export function rankTemplates(records: readonly TrackRecord[]): RankRow[] {
  const rows = records.map(poolRecord);
  return rows.sort((x, y) => {
    if ((x.k > 0) !== (y.k > 0)) return x.k > 0 ? -1 : 1;
    if (x.kHits > 0 || y.kHits > 0) {
      if (x.hitRate !== y.hitRate) return y.hitRate - x.hitRate;
      return (x.brier ?? Infinity) - (y.brier ?? Infinity);
    }
    return (x.mae ?? Infinity) - (y.mae ?? Infinity);
  });
}

/** One Thompson draw per template. */
export interface ThompsonDraw {
  readonly tplId: string;
  readonly hits: number;
  readonly k: number;
  readonly sample: number;
}

/**
 * Thompson sampling: draws a hit rate from each template's Beta(1 + hits, 1 + k − hits) posterior
 * and returns the draws, best first. A template nobody has scored draws from the uniform prior,
 * so it keeps being explored until evidence says otherwise.
 */
export function thompsonChoose(records: readonly TrackRecord[], rng: () => number): ThompsonDraw[] {
  if (records.length === 0) throw new QisError('ERR_INVALID_ARGUMENT', 'Thompson sampling needs at least one template');
  const pooled = records.map((r) => pooledHits(r.scores.filter((s) => s.k > 0)));
  // Pooling whole records (for mean absolute errors) only when no template has hits.
  const maes = pooled.some((p) => p.rawK > 0) ? undefined : records.map((r) => poolRecord(r));
  if (maes?.some((m) => m.mae !== undefined)) {
    // Numeric outcomes have no hits: draw each template's mean absolute error from a normal
    // posterior (its pooled mean, its standard error) and prefer the lowest draw. A template
    // nobody has scored draws around the others' mean with their mean as spread, so it is tried.
    const known = maes.flatMap((m) => (m.mae === undefined ? [] : [m.mae]));
    const prior = known.reduce((s, x) => s + x, 0) / known.length;
    const draws = records.map((r, i) => {
      const m = maes[i] as RankRow;
      const se = m.mae !== undefined && m.maeInterval ? (m.maeInterval[1] - m.mae) / 1.96 : prior;
      const mean = m.mae ?? prior;
      return { tplId: r.tplId, hits: 0, k: m.k, sample: -(mean + se * normalSample(rng)) };
    });
    return draws.sort((a, b) => b.sample - a.sample);
  }
  const draws = records.map((r, i) => {
    const p = pooled[i] as ReturnType<typeof pooledHits>;
    return { tplId: r.tplId, hits: p.rawHits, k: p.rawK, sample: sampleBeta(1 + p.hits, 1 + p.k - p.hits, rng) };
  });
  return draws.sort((a, b) => b.sample - a.sample);
}

/** One standard normal draw (Box–Muller) from a uniform source. */
function normalSample(rng: () => number): number {
  const u = Math.max(rng(), Number.MIN_VALUE);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

// ------------------------------------------------------------------------------ reliability chart

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const COLOURS = ['#1b6ac9', '#d1495b', '#2e933c', '#edae49', '#6f42c1', '#00798c'];

/** One bin of a reliability histogram that holds pairs: drawn at the bin centre. */
export interface CalibrationPoint {
  readonly bin: number;
  /** Predicted probability: the bin centre. */
  readonly predicted: number;
  /** Share of the bin's (prediction, label) pairs whose label came true. */
  readonly observed: number;
  readonly n: number;
  readonly yes: number;
}

/** The non-empty bins of a pooled reliability histogram (key 25: `[n_0, y_0, …]`), as points of a calibration chart. */
export function calibrationPoints(rel: readonly number[]): CalibrationPoint[] {
  const out: CalibrationPoint[] = [];
  for (let i = 0; i < REL_BINS; i++) {
    const n = rel[2 * i] ?? 0;
    if (n === 0) continue;
    const yes = rel[2 * i + 1] ?? 0;
    out.push({ bin: i, predicted: (i + 0.5) / REL_BINS, observed: yes / n, n, yes });
  }
  return out;
}

/**
 * A reliability (calibration) diagram as a standalone SVG: for each template, the observed
 * frequency of a label against the probability it was given (bins of 0.1, drawn at the bin
 * centre, dot area ∝ pairs in the bin), with the diagonal of perfect calibration.
 */
export function calibrationSvg(rows: readonly Pick<RankRow, 'tplId' | 'name' | 'rel' | 'brier' | 'k'>[], title = 'Reliability of rival templates'): string {
  const W = 560;
  const L = 60;
  const T = 40;
  const S = 340; // plot side
  const H = T + S + 64 + rows.length * 18;
  const x = (p: number): number => L + p * S;
  const y = (p: number): number => T + (1 - p) * S;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (let i = 0; i <= 10; i++) {
    const p = i / 10;
    parts.push(`<line x1="${x(p)}" y1="${y(0)}" x2="${x(p)}" y2="${y(1)}" stroke="#eee"/><line x1="${x(0)}" y1="${y(p)}" x2="${x(1)}" y2="${y(p)}" stroke="#eee"/>`);
    if (i % 2 === 0) {
      parts.push(`<text x="${x(p)}" y="${y(0) + 16}" text-anchor="middle">${p.toFixed(1)}</text>`);
      parts.push(`<text x="${x(0) - 6}" y="${y(p) + 4}" text-anchor="end">${p.toFixed(1)}</text>`);
    }
  }
  parts.push(`<rect x="${x(0)}" y="${y(1)}" width="${S}" height="${S}" fill="none" stroke="#555"/>`);
  parts.push(`<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}" stroke="#999" stroke-dasharray="4 4"/>`);
  parts.push(`<text x="${x(0.5)}" y="${y(0) + 34}" text-anchor="middle">predicted probability</text>`);
  parts.push(`<text transform="translate(18 ${y(0.5)}) rotate(-90)" text-anchor="middle">observed frequency</text>`);
  rows.forEach((r, idx) => {
    const colour = COLOURS[idx % COLOURS.length] as string;
    const label = `${r.name ?? r.tplId}${r.brier !== undefined ? ` (Brier ${r.brier.toFixed(3)}, k ${r.k})` : r.k === 0 ? ' (no scores)' : ''}`;
    parts.push(`<rect x="${x(0)}" y="${T + S + 48 + idx * 18}" width="12" height="12" fill="${colour}"/><text x="${x(0) + 18}" y="${T + S + 58 + idx * 18}">${esc(label)}</text>`);
    if (!r.rel) return;
    const points = calibrationPoints(r.rel);
    const total = points.reduce((s, q) => s + q.n, 0);
    const pts: string[] = [];
    for (const q of points) {
      const px = x(q.predicted);
      const py = y(q.observed);
      pts.push(`${px.toFixed(1)},${py.toFixed(1)}`);
      const radius = 2.5 + 9 * Math.sqrt(q.n / Math.max(1, total));
      parts.push(`<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="${radius.toFixed(1)}" fill="${colour}" fill-opacity="0.55"><title>${esc(`${r.name ?? r.tplId}: bin ${q.bin / 10}–${(q.bin + 1) / 10}: ${q.yes} of ${q.n} came true`)}</title></circle>`);
    }
    if (pts.length > 1) parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${colour}" stroke-width="2"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
