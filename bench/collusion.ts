/**
 * How far k colluding nodes (valid keys, lying outcomes, claiming n = 1e12) can move each
 * synthesis statistic of a cohort of N nodes: the figure table behind docs/synthesis.md,
 * "Collusion bounds". Not a timing bench: it prints, for ε = 10, 20, 30 %, the worst shift the
 * liars achieved over a sweep of placements, next to the bound the docs derive, in units of the
 * honest spread (honest values are the N(0, 1) quantiles, so the units are σ). The bound column
 * is the formula's value: the median's on this honest sample, the trimmed mean's max bias for the
 * normal population, a share's largest move for the 60/30/10 % honest labels.
 *
 *   npm run build && node dist/bench/collusion.js [--nodes=1000] [--json]
 */
import { compileTemplate } from '../src/protocol/template.js';
import { synthesize, type NumberSummary, type SynthPacket } from '../src/synthesis/index.js';
import { JSON_OUT, optNum } from './args.js';

const NODES = Math.round(optNum('nodes', 1000));
const EPSILONS = [0.1, 0.2, 0.3];
const HUGE = 1e12;

const life = compileTemplate({ name: 'bench-life', version: 1, fields: [{ name: 'model', kind: 'category' }], outcome: { kind: 'number' } });
const mode = compileTemplate({
  name: 'bench-mode',
  version: 1,
  fields: [{ name: 'model', kind: 'category' }],
  outcome: { kind: 'category', labels: ['a', 'b', 'c'] },
});

/** Φ⁻¹ by Acklam's rational approximation (relative error < 1.2e-9): enough for a figure table. */
function probit(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  const poly = (k: readonly number[], x: number): number => k.reduce((s, v) => s * x + v, 0);
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return poly(c, q) / (poly(d, q) * q + 1);
  }
  if (p > 1 - lo) return -probit(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (poly(a, r) * q) / (poly(b, r) * r + 1);
}

const pk = (id: string, out: number | string, n = 1): SynthPacket => ({ nodeId: id, out, conf: 1, n, ts: 0 });

interface Row {
  readonly statistic: string;
  readonly epsilon: number;
  /** Largest |shift| the sweep found, in σ. */
  readonly worst: number;
  /** The documented bound on |shift|, in σ (Infinity: unbounded). */
  readonly bound: number;
}

const rows: Row[] = [];
for (const eps of EPSILONS) {
  const k = Math.round(eps * NODES);
  const h = NODES - k;
  const honest = [...Array(h).keys()].map((i) => pk(`h${i}`, probit((i + 0.5) / h)));
  const base = synthesize(life, honest) as NumberSummary;
  // Every liar at the same place (point contamination, the worst case for a location figure):
  // beyond every honest value, or anywhere on a grid through them.
  const places = [-HUGE, HUGE, ...[...Array(201).keys()].map((i) => -5 + i * 0.05)];
  const worst = new Map<string, number>();
  const note = (name: string, shift: number): void => {
    worst.set(name, Math.max(worst.get(name) ?? 0, Math.abs(shift)));
  };
  const alpha = Math.round((eps + 0.05) * 100) / 100;
  for (const x of places) {
    const liars = [...Array(k).keys()].map((i) => pk(`l${i}`, x, HUGE));
    const all = [...honest, ...liars];
    const s = synthesize(life, all) as NumberSummary;
    const st = synthesize(life, all, { trim: alpha }) as NumberSummary;
    const capped = synthesize(life, all, { maxNodeShare: 1.5 / NODES }) as NumberSummary;
    note('by-node median', s.byNode.median - base.byNode.median);
    note(`by-node trimmed mean (trim ${alpha})`, st.byNode.trimmedMean - base.byNode.trimmedMean);
    note('by-node trimmed mean (trim 0.1, default)', s.byNode.trimmedMean - base.byNode.trimmedMean);
    note('weighted median, default cap', s.median - base.median);
    note(`weighted median, cap 1.5/N = ${1.5 / NODES}`, capped.median - base.median);
    note('weighted mean, default cap', s.mean - base.mean);
  }
  // Labels: honest shares 60/30/10 %; every liar votes the label it pushes.
  const labels = ['a', 'b', 'c'] as const;
  const honestL = [...Array(h).keys()].map((i) => pk(`h${i}`, labels[i < 0.6 * h ? 0 : i < 0.9 * h ? 1 : 2] as string));
  const baseL = synthesize(mode, honestL);
  for (const target of labels) {
    const s = synthesize(mode, [...honestL, ...[...Array(k).keys()].map((i) => pk(`l${i}`, target, HUGE))]);
    if (s.kind !== 'category' || baseL.kind !== 'category') throw new Error('expected categories');
    note('label vote share', s.labels[target]!.voteShare - baseL.labels[target]!.voteShare);
    note('label weighted share, default cap', s.labels[target]!.proportion - baseL.labels[target]!.proportion);
  }
  const sDefault = Math.min(1, 2 / NODES);
  const ewDefault = Math.min(1, k * sDefault);
  const ewTight = Math.min(1, (k * 1.5) / NODES);
  // The honest sample's upper p-quantile inf{x : F(x) > p} (values sorted, unit weights): the
  // documented median bound q(½/(1−e)), on this sample rather than the normal population.
  const hv = honest.map((p) => p.out as number);
  const upperQ = (p: number): number => hv[Math.min(h - 1, Math.floor(p * h))] as number;
  const medianBound = (e: number): number => (e < 0.5 ? upperQ(0.5 / (1 - e)) - base.median : Infinity);
  // Max bias of the trimmed mean (trim α ≥ e) when the liars sit beyond every honest value: the
  // mean of the honest values between honest quantiles α/(1−e) and (1−α)/(1−e), for N(0, 1)
  // (φ(Φ⁻¹(a)) − φ(Φ⁻¹(b))) / (b − a).
  const phi = (x: number): number => Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI);
  const trimBias = (a: number, e: number): number => {
    if (a < e) return Infinity;
    const lo = a / (1 - e);
    const hi = (1 - a) / (1 - e);
    return (phi(probit(lo)) - (hi >= 1 ? 0 : phi(probit(hi)))) / (hi - lo);
  };
  const bounds: Record<string, number> = {
    'by-node median': medianBound(eps),
    [`by-node trimmed mean (trim ${alpha})`]: trimBias(alpha, eps),
    'by-node trimmed mean (trim 0.1, default)': trimBias(0.1, eps),
    'weighted median, default cap': medianBound(ewDefault),
    [`weighted median, cap 1.5/N = ${1.5 / NODES}`]: medianBound(ewTight),
    'weighted mean, default cap': Infinity,
    // A label of honest share p moves to (1−ε)p + ελ, λ ∈ [0, 1]: by ε(1 − p) at most upwards;
    // the sweep pushes each label, the least common (p = 0.1) moves most.
    'label vote share': eps * (1 - 0.1),
    'label weighted share, default cap': ewDefault * (1 - 0.1),
  };
  for (const [statistic, w] of worst) rows.push({ statistic, epsilon: eps, worst: w, bound: bounds[statistic] ?? NaN });
}

if (JSON_OUT) {
  console.log(JSON.stringify({ nodes: NODES, rows: rows.map((r) => ({ ...r, bound: Number.isFinite(r.bound) ? r.bound : null })) }));
} else {
  const f = (x: number): string => (!Number.isFinite(x) ? 'unbounded' : x >= 1e6 ? x.toExponential(1) : x.toFixed(3));
  const names = [...new Set(rows.map((r) => r.statistic))];
  const w = Math.max(...names.map((n) => n.length));
  console.log(`collusion: ${NODES} nodes, liars claim n = 1e12; worst shift found / documented bound (σ; shares as fractions)`);
  console.log(`${'statistic'.padEnd(w)}  ${EPSILONS.map((e) => `ε = ${Math.round(e * 100)} %`.padStart(24)).join('')}`);
  for (const n of names) {
    const cells = EPSILONS.map((e) => {
      const r = rows.find((x) => x.statistic === n && x.epsilon === e);
      return r ? `${f(r.worst)} / ${f(r.bound)}`.padStart(24) : ''.padStart(24);
    });
    console.log(`${n.padEnd(w)}  ${cells.join('')}`);
  }
}
