import t, { type Test } from 'tap';
import { compileTemplate } from '../src/protocol/template.js';
import {
  synthesize,
  weightedQuantile,
  wilson,
  type CategorySummary,
  type MapSummary,
  type NumberSummary,
  type SynthPacket,
  type Synthesis,
} from '../src/synthesis/index.js';
import { bearing } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';

// Every expected value below is computed here from its definition (docs/synthesis.md), written
// out independently of src/synthesis/: Wilson by its closed form, quantiles and trimmed means
// by expanding integer weights into repeated values.

/** Φ⁻¹ values from published tables (R qnorm, 16 digits). */
const Z = { 0.5: 0.6744897501960817, 0.9: 1.6448536269514722, 0.95: 1.959963984540054, 0.99: 2.5758293035489004 } as const;
const T0 = 1_700_000_000_000;
const HOUR = 3_600_000;

const pump = compileTemplate({
  name: 'pump-life',
  version: 1,
  fields: [{ name: 'model', kind: 'category' }],
  context: ['rpm', 'ambient_c'],
  outcome: { kind: 'number', unit: 'h' },
});
const inspection = compileTemplate({
  name: 'pump-inspection',
  version: 1,
  fields: [{ name: 'model', kind: 'category' }],
  outcome: { kind: 'map' },
});
const inspectionKeyed = compileTemplate({
  name: 'pump-inspection',
  version: 2,
  fields: [{ name: 'model', kind: 'category' }],
  outcome: { kind: 'map', keys: ['mode', 'hours', 'noise'] },
});

const id = (i: number): string => `node${String(i).padStart(3, '0')}`;
function pk(i: number, out: SynthPacket['out'], extra: Partial<Omit<SynthPacket, 'nodeId' | 'out'>> = {}): SynthPacket {
  return { nodeId: id(i), out, conf: 1, n: 1, ts: T0, ...extra };
}

function wilsonRef(p: number, n: number, z: number): { low: number; high: number } {
  const center = p + (z * z) / (2 * n);
  const spread = z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  const denom = 1 + (z * z) / n;
  return { low: (center - spread) / denom, high: (center + spread) / denom };
}

/** Hyndman-Fan type 2 quantile of an already sorted, unweighted sample. */
function type2(sorted: readonly number[], q: number): number {
  const N = sorted.length;
  if (q === 0) return sorted[0] as number;
  const j = q * N;
  const jr = Math.round(j);
  if (Math.abs(j - jr) < 1e-9) return jr >= N ? (sorted[N - 1] as number) : ((sorted[jr - 1] as number) + (sorted[jr] as number)) / 2;
  return sorted[Math.ceil(j) - 1] as number;
}

/** Trimmed mean of a sorted sample: g = trim·N cut from each end, the boundary values partially. */
function trimmedRef(sorted: readonly number[], trim: number): number {
  const N = sorted.length;
  const g = trim * N;
  const k = Math.floor(g);
  const f = g - k;
  let sum = (1 - f) * ((sorted[k] as number) + (sorted[N - 1 - k] as number));
  for (let i = k + 1; i <= N - 2 - k; i++) sum += sorted[i] as number;
  return sum / (N - 2 * g);
}

function expand(values: readonly number[], counts: readonly number[]): number[] {
  return values.flatMap((v, i) => Array<number>(counts[i] as number).fill(v)).sort((a, b) => a - b);
}

const mean = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;

function near(t: Test, actual: number | undefined, expected: number, message: string, rel = 1e-9): void {
  const ok = actual !== undefined && Math.abs(actual - expected) <= rel * Math.max(1, Math.abs(expected));
  t.ok(ok, `${message}: ${actual} ≈ ${expected}`);
}

function asCategory(t: Test, s: Synthesis): CategorySummary {
  if (s.kind !== 'category') throw new Error(`expected a category summary, got ${JSON.stringify(s)}`);
  t.pass('category summary');
  return s;
}
function asNumber(s: Synthesis | undefined): NumberSummary {
  if (s?.kind !== 'number') throw new Error(`expected a number summary, got ${JSON.stringify(s)}`);
  return s;
}
function asMap(s: Synthesis): MapSummary {
  if (s.kind !== 'map') throw new Error(`expected a map summary, got ${JSON.stringify(s)}`);
  return s;
}

function shuffle<T>(xs: readonly T[], rand: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

t.test('synthesis - category lists every template label with Wilson bounds for some, none and all hits', async (t) => {
  const packets = [...Array(10).keys()].map((i) => pk(i, i < 3 ? 'failure' : 'no_failure'));
  const s = asCategory(t, synthesize(bearing, packets));
  t.equal(s.count, 10);
  t.equal(s.observations, 10);
  t.equal(s.weight, 10);
  t.equal(s.effectiveN, 10, 'all weights 1: n_eff = Σn');
  t.same(Object.keys(s.labels), ['no_failure', 'failure'], 'template order');
  t.equal(s.top, 'no_failure');
  near(t, s.z, Z[0.95], 'z for 0.95', 1e-12);
  const f = s.labels.failure;
  t.equal(f?.count, 3);
  t.equal(f?.weight, 3);
  t.equal(f?.proportion, 0.3);
  const ref = wilsonRef(0.3, 10, Z[0.95]);
  near(t, f?.low, ref.low, 'low', 1e-12);
  near(t, f?.high, ref.high, 'high', 1e-12);
  near(t, s.labels.no_failure?.low, 1 - ref.high, 'the complement mirrors', 1e-12);

  const all = asCategory(t, synthesize(bearing, [...Array(8).keys()].map((i) => pk(i, 'failure'))));
  const hit = all.labels.failure;
  const miss = all.labels.no_failure;
  t.same(miss, { count: 0, weight: 0, proportion: 0, low: 0, high: miss?.high, voteShare: 0 }, 'a label nobody reported is listed');
  t.equal(hit?.proportion, 1);
  t.equal(hit?.high, 1, 'all hits: high is exactly 1');
  t.equal(miss?.low, 0, 'no hits: low is exactly 0');
  near(t, hit?.low, wilsonRef(1, 8, Z[0.95]).low, 'all hits: low', 1e-12);
  near(t, miss?.high, wilsonRef(0, 8, Z[0.95]).high, 'no hits: high', 1e-12);
  for (const l of Object.values(all.labels)) t.ok(l.low >= 0 && l.low <= l.proportion && l.proportion <= l.high && l.high <= 1, 'ordered within [0, 1]');
  t.equal(all.top, 'failure');
});

t.test('synthesis - the interval level sets z from the inverse normal', async (t) => {
  const packets = [...Array(20).keys()].map((i) => pk(i, i % 4 === 0 ? 'failure' : 'no_failure'));
  for (const level of [0.5, 0.9, 0.95, 0.99] as const) {
    const s = asCategory(t, synthesize(bearing, packets, { confidence: level }));
    near(t, s.z, Z[level], `z(${level})`, 1e-12);
    t.equal(s.confidence, level);
    const ref = wilsonRef(0.25, 20, Z[level]);
    near(t, s.labels.failure?.low, ref.low, `low at ${level}`, 1e-12);
    near(t, s.labels.failure?.high, ref.high, `high at ${level}`, 1e-12);
  }
});

t.test('synthesis - n and conf weight packets; effective N counts observations at their weight', async (t) => {
  // These check the raw weighting, so the per-node cap (test/synthesis-bounds.test.ts) is off.
  const off = { maxNodeShare: 1 };
  // One node with n = 4 is four observations: the same as four nodes with n = 1.
  const one = asCategory(t, synthesize(bearing, [pk(0, 'failure', { n: 4 }), ...[1, 2, 3, 4, 5].map((i) => pk(i, 'no_failure'))], off));
  const four = asCategory(t, synthesize(bearing, [0, 6, 7, 8].map((i) => pk(i, 'failure')).concat([1, 2, 3, 4, 5].map((i) => pk(i, 'no_failure'))), off));
  t.equal(one.count, 6);
  t.equal(one.observations, 9);
  t.equal(one.effectiveN, 9);
  const drop = (l: CategorySummary['labels']) => Object.entries(l).map(([k, { weight, proportion, low, high }]) => [k, weight, proportion, low, high]);
  t.same(drop(one.labels), drop(four.labels), 'same weights, proportions and intervals');
  t.equal(one.labels.failure?.count, 1, 'count is nodes, not observations');

  const packets = [
    pk(0, 'failure', { n: 3, conf: 0.5 }),
    pk(1, 'failure', { n: 1, conf: 0.9 }),
    pk(2, 'no_failure', { n: 2, conf: 1 }),
    pk(3, 'no_failure', { n: 5, conf: 0.2 }),
    pk(4, 'no_failure', { n: 1, conf: 0.7 }),
  ];
  const s = asCategory(t, synthesize(bearing, packets, off));
  const w = packets.map((p) => p.n * p.conf);
  const W = w.reduce((a, b) => a + b, 0);
  const neff = W ** 2 / packets.reduce((a, p) => a + p.n * p.conf ** 2, 0);
  near(t, s.weight, W, 'weight = Σ n·conf');
  near(t, s.effectiveN, neff, 'n_eff = (Σ n c)² / Σ n c²');
  const pf = (w[0]! + w[1]!) / W;
  near(t, s.labels.failure?.weight, w[0]! + w[1]!, 'label weight');
  near(t, s.labels.failure?.proportion, pf, 'weighted proportion');
  near(t, s.labels.failure?.low, wilsonRef(pf, neff, Z[0.95]).low, 'Wilson low at n_eff');
  near(t, s.labels.failure?.high, wilsonRef(pf, neff, Z[0.95]).high, 'Wilson high at n_eff');

  // All n = 1: Kish's (Σw)²/Σw².
  const kish = [0.2, 0.4, 0.6, 0.8, 1].map((conf, i) => pk(i, 'failure', { conf }));
  const k = asCategory(t, synthesize(bearing, kish));
  near(t, k.effectiveN, 3 ** 2 / (0.04 + 0.16 + 0.36 + 0.64 + 1), 'Kish');

  // conf 0 carries no evidence: it is left out and counted.
  const z = synthesize(bearing, [...kish, pk(9, 'no_failure', { conf: 0 })]);
  t.equal(z.kind === 'category' && z.count, 5);
  t.equal(z.zeroWeight, 1);
  t.equal(z.kind === 'category' && z.labels.no_failure?.count, 0);
});

t.test('synthesis - recency half-life: a packet one half-life old weighs half', async (t) => {
  const H = 1000 * HOUR;
  const packets = [
    pk(0, 'failure', { ts: T0 - H }),
    pk(1, 'failure', { ts: T0 - 2 * H }),
    pk(2, 'no_failure', { ts: T0 }),
    pk(3, 'no_failure', { ts: T0 + 5 * H }),
    pk(4, 'no_failure', { ts: T0 - H, n: 2 }),
  ];
  const s = asCategory(t, synthesize(bearing, packets, { now: T0, halfLifeMs: H }));
  near(t, s.labels.failure?.weight, 0.5 + 0.25, 'one and two half-lives old');
  near(t, s.labels.no_failure?.weight, 1 + 1 + 2 * 0.5, 'a packet after now counts as fresh, never more');
  const off = asCategory(t, synthesize(bearing, packets, { now: T0 }));
  t.equal(off.weight, 6, 'no half-life, no decay');
  // Default now: the newest packet (T0 + 5H), never the clock.
  const d = asCategory(t, synthesize(bearing, packets, { halfLifeMs: H, maxNodeShare: 1 }));
  near(t, d.labels.failure?.weight, 0.5 ** 6 + 0.5 ** 7, 'ages from the newest ts');
  near(t, d.labels.no_failure?.weight, 0.5 ** 5 + 1 + 2 * 0.5 ** 6, 'ages from the newest ts');
});

t.test('synthesis - context kernel weighs nearer packets more; a packet without ctx sits at d² = 1', async (t) => {
  const rpms = [1000, 1200, 1400, 1500, 1600];
  const ambients = [20, 20, 20, 20, 30];
  const packets = [
    ...rpms.map((rpm, i) => pk(i, 100 * (i + 1), { ctx: { rpm, ambient_c: ambients[i]! } })),
    pk(5, 600), // no ctx at all
    pk(6, 700, { ctx: { rpm: 1450 } }), // only one of the two fields
  ];
  const query = { rpm: 1450, ambient_c: 25 };
  // Spreads from the carriers, by hand. rpm: 1000 1200 1400 1450 1500 1600, median 1425,
  // |dev| 425 225 25 25 75 175 → median (75 + 175)/2 = 125.
  const rpmSpread = 1.4826 * 125;
  // ambient_c: 20 20 20 20 30: median 20, MAD 0 → sample standard deviation √((4·2² + 8²)/4).
  const ambSpread = Math.sqrt((4 * 4 + 64) / 4);
  const kernel = (d2: number, bw = 1): number => Math.exp(-d2 / (2 * bw * bw));
  const d2s = [
    ...rpms.map((rpm, i) => (((rpm - 1450) / rpmSpread) ** 2 + ((ambients[i]! - 25) / ambSpread) ** 2) / 2),
    1,
    0,
  ];
  for (const bw of [1, 0.5]) {
    const s = asNumber(synthesize(pump, packets, { context: { values: query, bandwidth: bw }, maxNodeShare: 1 }));
    const k = d2s.map((d2) => kernel(d2, bw));
    const W = k.reduce((a, b) => a + b, 0);
    near(t, s.weight, W, `total weight, bandwidth ${bw}`);
    near(t, s.mean, k.reduce((a, ki, i) => a + ki * 100 * (i + 1), 0) / W, `kernel-weighted mean, bandwidth ${bw}`);
    t.same(s.contextFields, ['ambient_c', 'rpm']);
  }
  // Nearer weighs more: the 1400 and 1500 rpm nodes outweigh the 1000 rpm node.
  const cat = [
    pk(0, 'failure', { ctx: { rpm: 1460 } }),
    pk(1, 'failure', { ctx: { rpm: 1440 } }),
    pk(2, 'no_failure', { ctx: { rpm: 1000 } }),
    pk(3, 'no_failure', { ctx: { rpm: 900 } }),
    pk(4, 'no_failure'),
  ];
  const plain = asCategory(t, synthesize(bearing, cat));
  const refined = asCategory(t, synthesize(bearing, cat, { context: { values: { rpm: 1450 } } }));
  t.equal(plain.top, 'no_failure');
  t.equal(refined.top, 'failure', 'the near nodes decide');
  t.same(refined.contextFields, ['rpm']);
  // A query field no packet carries: every packet sits at d² = 1, so nothing changes but the scale.
  const none = asCategory(t, synthesize(bearing, cat.map((p) => ({ ...p, ctx: {} })), { context: { values: { ambient_c: 3 } } }));
  t.same(none.contextFields, []);
  near(t, none.weight, 5 * Math.exp(-0.5), 'exp(-1/2) each');
  near(t, none.labels.failure?.proportion, 0.4, 'proportions unchanged');
  // All carriers equal: spread 1.
  const flat = asNumber(
    synthesize(pump, [0, 1, 2, 3, 4].map((i) => pk(i, i, { ctx: { rpm: 1000 } })), { context: { values: { rpm: 1002 } } }),
  );
  near(t, flat.weight, 5 * kernel(4), 'spread falls back to 1');
});

t.test('synthesis - numeric statistics match brute force over expanded integer weights', async (t) => {
  const rand = prng(0x5eed);
  let cases = 0;
  for (let round = 0; round < 200; round++) {
    const N = 5 + Math.floor(rand() * 40);
    // Values on a coarse grid so ties (and MAD = 0) happen; integer n so weights expand exactly.
    const values = [...Array(N)].map(() => Math.round(rand() * (round % 3 === 0 ? 4 : 2000)) / 2);
    const ns = values.map(() => 1 + Math.floor(rand() * 6));
    const trim = [0, 0.1, 0.25, 0.05 + rand() * 0.3][round % 4] as number;
    const packets = values.map((v, i) => pk(i, v, { n: ns[i]! }));
    const s = asNumber(synthesize(pump, packets, { trim, minCohort: 1, maxNodeShare: 1 }));
    const x = expand(values, ns);
    const med = type2(x, 0.5);
    const mad = type2(
      x.map((v) => Math.abs(v - med)).sort((a, b) => a - b),
      0.5,
    );
    const fails: string[] = [];
    const check = (name: string, a: number, b: number): void => {
      if (!(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)))) fails.push(`${name}: ${a} vs ${b}`);
    };
    check('count', s.count, N);
    check('observations', s.observations, x.length);
    check('weight', s.weight, x.length);
    check('effectiveN', s.effectiveN, x.length);
    check('mean', s.mean, mean(x));
    check('median', s.median, med);
    check('p10', s.p10, type2(x, 0.1));
    check('p90', s.p90, type2(x, 0.9));
    check('mad', s.mad, mad);
    check('trimmedMean', s.trimmedMean, trimmedRef(x, trim));
    check('min', s.min, x[0]!);
    check('max', s.max, x[x.length - 1]!);
    // Outliers by the documented rule, on the expanded sample.
    let scale = 1.4826 * mad;
    if (scale === 0) scale = Math.sqrt(Math.PI / 2) * mean(x.map((v) => Math.abs(v - med)));
    const expected = values
      .map((v, i) => ({ nodeId: id(i), value: v, z: scale > 0 ? Math.abs(v - med) / scale : 0 }))
      .filter((o) => o.z > 3.5)
      .sort((a, b) => a.value - b.value || (a.nodeId < b.nodeId ? -1 : 1));
    check('scale', s.scale, scale);
    if (JSON.stringify(s.outliers.map((o) => o.nodeId)) !== JSON.stringify(expected.map((o) => o.nodeId))) fails.push('outliers');
    s.outliers.forEach((o, i) => check(`z of ${o.nodeId}`, o.z, expected[i]?.z ?? NaN));
    if (fails.length > 0) {
      t.fail(`round ${round} (N ${N}, trim ${trim}): ${fails.join('; ')}`);
      return;
    }
    cases++;
  }
  t.equal(cases, 200, 'every random cohort agrees');
});

t.test('synthesis - the same conf on every packet changes the weight, not the statistics', async (t) => {
  const rand = prng(7);
  const values = [...Array(23)].map(() => Math.round(rand() * 5000));
  const base = asNumber(synthesize(pump, values.map((v, i) => pk(i, v, { n: 1 + (i % 3) }))));
  const half = asNumber(synthesize(pump, values.map((v, i) => pk(i, v, { n: 1 + (i % 3), conf: 0.5 }))));
  near(t, half.weight, base.weight / 2, 'weight halves');
  near(t, half.effectiveN, base.effectiveN, 'n_eff is scale-free');
  for (const k of ['mean', 'median', 'trimmedMean', 'mad', 'p10', 'p90', 'min', 'max'] as const) near(t, half[k], base[k], k);
});

t.test('synthesis - trimmed mean and median resist an outlier that drags the mean', async (t) => {
  const values = [1800, 1850, 1900, 1950, 2000, 2050, 2100, 2150, 2200, 1_000_000];
  const s = asNumber(synthesize(pump, values.map((v, i) => pk(i, v))));
  t.equal(s.unit, 'h', 'unit from the template');
  near(t, s.mean, mean(values), 'mean follows the outlier');
  t.ok(s.mean > 100_000);
  // trim 0.1 of 10: one value off each end.
  near(t, s.trimmedMean, mean(values.slice(1, 9)), 'trimmed mean drops it');
  t.equal(s.median, 2025);
  t.same(
    s.outliers.map((o) => o.nodeId),
    [id(9)],
  );
});

t.test('synthesis - outliers are reported by robust z, and removed before every statistic only when asked', async (t) => {
  const values = [10, 11, 12, 13, 14, 15, 16, 100];
  const packets = values.map((v, i) => pk(i, v));
  const s = asNumber(synthesize(pump, packets));
  // median (13 + 14)/2; |dev| .5 .5 1.5 1.5 2.5 2.5 3.5 86.5 → MAD 2; scale 1.4826·2.
  t.equal(s.median, 13.5);
  t.equal(s.mad, 2);
  near(t, s.scale, 2.9652, 'scale');
  t.equal(s.outliers.length, 1);
  t.equal(s.outliers[0]?.nodeId, id(7));
  t.equal(s.outliers[0]?.value, 100);
  near(t, s.outliers[0]?.z, 86.5 / 2.9652, 'z');
  t.equal(s.excluded, 0);
  t.equal(s.count, 8);
  t.equal(s.max, 100, 'reported, still counted');

  const x = asNumber(synthesize(pump, packets, { excludeOutliers: true }));
  t.equal(x.excluded, 1);
  t.equal(x.count, 7);
  t.equal(x.max, 16);
  t.equal(x.mean, 13);
  t.equal(x.median, 13);
  t.same(x.outliers, s.outliers, 'the outliers are still listed');
  near(t, x.trimmedMean, 13, 'trimmed mean of the rest');

  const k = asNumber(synthesize(pump, packets, { outlierK: 30 }));
  t.same(k.outliers, [], 'z 29.2 is not above k = 30');

  const short = synthesize(pump, packets, { excludeOutliers: true, minCohort: 8 });
  t.same(short, {
    kind: 'insufficient',
    reason: 'few-nodes',
    count: 7,
    minCohort: 8,
    excluded: 1,
    skipped: 0,
    zeroWeight: 0,
    message: 'insufficient evidence: 7 nodes after excluding 1 outlier, 8 needed',
  });
});

t.test('synthesis - a MAD of 0 falls back to the mean absolute deviation; all equal, no outliers', async (t) => {
  const values = [5, 5, 5, 5, 5, 5, 6, 50];
  const s = asNumber(synthesize(pump, values.map((v, i) => pk(i, v))));
  t.equal(s.mad, 0);
  const scale = Math.sqrt(Math.PI / 2) * ((1 + 45) / 8);
  near(t, s.scale, scale, 'scale from the mean absolute deviation');
  t.same(
    s.outliers.map((o) => [o.value, o.z]),
    [[50, 45 / scale]],
    'a value one unit off the median is not an outlier',
  );
  const flat = asNumber(synthesize(pump, [0, 1, 2, 3, 4].map((i) => pk(i, 7))));
  t.equal(flat.scale, 0);
  t.same(flat.outliers, []);
  t.equal(flat.trimmedMean, 7);
});

t.test('synthesis - map outcomes: text keys are categorical, number keys numeric, mixed keys by majority', async (t) => {
  const outs = [
    { mode: 'wear', hours: 1200, noise: 'low' },
    { mode: 'wear', hours: 1500 },
    { mode: 'seal', hours: 900, noise: 3 },
    { mode: 'wear', hours: 1300, noise: 'high' },
    { mode: 'cavitation', hours: 'unknown', noise: 4 },
    { mode: 'seal', hours: 1100 },
  ];
  const s = asMap(synthesize(inspection, outs.map((o, i) => pk(i, o))));
  t.equal(s.count, 6);
  t.same(Object.keys(s.keys), ['hours', 'mode', 'noise'], 'observed keys, sorted');
  const mode = s.keys.mode;
  if (mode?.kind !== 'category') throw new Error('mode should be categorical');
  t.same(Object.keys(mode.labels), ['cavitation', 'seal', 'wear'], 'observed labels, sorted');
  t.equal(mode.labels.wear?.count, 3);
  t.equal(mode.labels.wear?.proportion, 0.5);
  near(t, mode.labels.wear?.low, wilsonRef(0.5, 6, Z[0.95]).low, 'Wilson per key', 1e-12);
  t.equal(mode.top, 'wear');
  const hours = asNumber(s.keys.hours);
  t.equal(hours.count, 5, 'five numbers');
  t.equal(hours.skipped, 1, 'the text value of a number key is skipped');
  t.equal(hours.median, 1200);
  t.equal(hours.mean, 1200);
  t.equal(hours.unit, undefined);
  t.same(s.keys.noise, {
    kind: 'insufficient',
    reason: 'mixed-kinds',
    count: 4,
    minCohort: 5,
    excluded: 0,
    skipped: 0,
    zeroWeight: 0,
    message: 'insufficient evidence: key "noise" is text from 2 nodes and a number from 2',
  });
  const few = asMap(synthesize(inspection, outs.map((o, i) => pk(i, o)), { minCohort: 6 }));
  t.equal(few.keys.hours?.kind, 'insufficient', 'minCohort applies per key');
  t.equal(few.keys.hours?.kind === 'insufficient' && few.keys.hours.message, 'insufficient evidence: 5 nodes, 6 needed');
  t.equal(few.keys.mode?.kind, 'category');

  // Template keys: each listed key is present; an unlisted key makes the packet not fit.
  const keyed = asMap(synthesize(inspectionKeyed, [...outs.map((o, i) => pk(i, o)), pk(9, { mode: 'wear', colour: 'red' }), pk(10, 'wear')]));
  t.same(Object.keys(keyed.keys), ['mode', 'hours', 'noise'], 'template order');
  t.equal(keyed.skipped, 2, 'unlisted key, and a label where a map belongs');
  t.equal(keyed.count, 6);
  const empty = asMap(synthesize(inspectionKeyed, [0, 1, 2, 3, 4].map((i) => pk(i, { mode: 'wear' }))));
  t.same(empty.keys.hours, {
    kind: 'insufficient',
    reason: 'few-nodes',
    count: 0,
    minCohort: 5,
    excluded: 0,
    skipped: 0,
    zeroWeight: 0,
    message: 'insufficient evidence: 0 nodes, 5 needed',
  });
  t.equal(synthesize(inspection, [0, 1, 2].map((i) => pk(i, { mode: 'wear' }))).kind, 'insufficient', 'a small map cohort');
});

t.test('synthesis - labels compare in NFC; odd map keys stay data; non-fitting map values skip the packet', async (t) => {
  const french = compileTemplate({
    name: 'roulement',
    version: 1,
    fields: [{ name: 'modèle', kind: 'category' }],
    outcome: { kind: 'category', labels: ['d\u00e9faut', 'ok'] },
  });
  const s = asCategory(t, synthesize(french, [0, 1, 2, 3, 4].map((i) => pk(i, i < 2 ? 'de\u0301faut' : 'ok'))));
  t.equal(s.labels['d\u00e9faut']?.count, 2, 'a decomposed label counts as its NFC form');
  const proto = JSON.parse('{"__proto__": "x", "mode": "wear"}') as { [k: string]: string };
  const m = asMap(synthesize(inspection, [...[0, 1, 2, 3, 4].map((i) => pk(i, proto)), pk(5, { mode: 'wear', hours: NaN }), pk(6, {})]));
  t.same(Object.keys(m.keys), ['__proto__', 'mode']);
  t.equal(m.keys['__proto__']?.kind, 'category');
  t.equal(m.skipped, 2, 'a NaN value and an empty map do not fit');
});

t.test('synthesis - fewer contributing nodes than minCohort give insufficient evidence with the count', async (t) => {
  const three = [0, 1, 2].map((i) => pk(i, 'failure'));
  t.same(synthesize(bearing, three), {
    kind: 'insufficient',
    reason: 'few-nodes',
    count: 3,
    minCohort: 5,
    excluded: 0,
    skipped: 0,
    zeroWeight: 0,
    message: 'insufficient evidence: 3 nodes, 5 needed',
  });
  t.equal(synthesize(bearing, three, { minCohort: 3 }).kind, 'category');
  t.equal(synthesize(bearing, []).kind, 'insufficient');
  const one = synthesize(bearing, [pk(0, 'failure')]);
  t.equal(one.kind === 'insufficient' && one.message, 'insufficient evidence: 1 node, 5 needed');
  // Packets that do not fit, or carry no weight, do not count toward the cohort.
  const mixed = [...three, pk(3, 'exploded'), pk(4, 42), pk(5, { a: 1 }), pk(6, 'failure', { conf: 0 }), pk(7, 'no_failure', { ts: 0 })];
  const s = synthesize(bearing, mixed, { halfLifeMs: 1 });
  t.equal(s.kind, 'insufficient');
  t.equal(s.kind === 'insufficient' && s.count, 3);
  t.equal(s.skipped, 3);
  t.equal(s.zeroWeight, 2, 'conf 0, and a recency that underflows');
  const num = synthesize(pump, [pk(0, 'failure'), pk(1, 1), pk(2, 2), pk(3, 3), pk(4, 4), pk(5, 5)]);
  t.equal(num.kind, 'number');
  t.equal(num.skipped, 1);
});

t.test('synthesis - bad options and packets are refused with ERR_INVALID_ARGUMENT', async (t) => {
  const ok = [0, 1, 2, 3, 4].map((i) => pk(i, 'failure'));
  const bad: Array<[string, unknown]> = [
    ['minCohort 0', { minCohort: 0 }],
    ['minCohort 2.5', { minCohort: 2.5 }],
    ['trim 0.5', { trim: 0.5 }],
    ['trim -0.1', { trim: -0.1 }],
    ['trim NaN', { trim: NaN }],
    ['outlierK 0', { outlierK: 0 }],
    ['confidence 1', { confidence: 1 }],
    ['confidence 0', { confidence: 0 }],
    ['halfLifeMs 0', { halfLifeMs: 0 }],
    ['halfLifeMs Infinity', { halfLifeMs: Infinity }],
    ['now NaN', { now: NaN }],
    ['excludeOutliers "yes"', { excludeOutliers: 'yes' }],
    ['context without values', { context: {} }],
    ['context field not in the template', { context: { values: { rmp: 1 } } }],
    ['context value not a number', { context: { values: { rpm: '1' } } }],
    ['bandwidth 0', { context: { values: { rpm: 1 }, bandwidth: 0 } }],
    ['a misspelt option', { mincohort: 3 }],
    ['options not an object', 5],
  ];
  for (const [name, options] of bad) {
    t.throws(() => synthesize(bearing, ok, options as never), { code: 'ERR_INVALID_ARGUMENT' }, name);
  }
  // Each refusal names the packet (its index) and what is wrong with it.
  const badPackets: Array<[string, unknown, string]> = [
    ['not an array', {}, 'synthesize: packets must be an array'],
    ['not an object', [ok[0], null], 'synthesize: packets[1] must be an object'],
    ['conf above 1', [ok[0], { ...ok[1], conf: 1.5 }], 'synthesize: packets[1].conf must be a number from 0 to 1'],
    ['n 0', [{ ...ok[0], n: 0 }], 'synthesize: packets[0].n must be an integer ≥ 1'],
    ['n 1.5', [ok[0], ok[1], { ...ok[2], n: 1.5 }], 'synthesize: packets[2].n must be an integer ≥ 1'],
    ['ts NaN', [{ ...ok[0], ts: NaN }], 'synthesize: packets[0].ts must be a finite number (Unix ms)'],
    ['no nodeId', [{ ...ok[0], nodeId: '' }], 'synthesize: packets[0].nodeId must be a non-empty string'],
    ['ctx not a map', [{ ...ok[0], ctx: [1] }], 'synthesize: packets[0].ctx must be a map of text to number'],
    ['ctx value not a number', [ok[0], { ...ok[1], ctx: { ambient_c: 20, rpm: 'fast' } }], 'synthesize: packets[1].ctx["rpm"] must be a finite number'],
    ['a node twice', [ok[0], ok[1], ok[0]], `synthesize: packets[2]: node ${ok[0]!.nodeId} appears twice (keep one packet per node, the highest seq)`],
    // A hole is refused like any other non-object (an array's forEach skipped holes before).
    ['a hole', [ok[0], , ok[1]], 'synthesize: packets[1] must be an object'],
  ];
  const whole = (m: string): RegExp => new RegExp(`^${m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  for (const [name, packets, message] of badPackets) {
    t.throws(() => synthesize(bearing, packets as never), { code: 'ERR_INVALID_ARGUMENT', message: whole(message) }, name);
  }
  t.throws(() => synthesize({} as never, ok), { code: 'ERR_INVALID_ARGUMENT' }, 'not a template');
  t.doesNotThrow(() => synthesize(bearing, ok, { trim: 0, now: 0, confidence: 0.999 }), 'edges that are allowed');
});

t.test('synthesis - the answer does not depend on packet order', async (t) => {
  const rand = prng(42);
  const numeric = [...Array(40)].map((_, i) =>
    pk(i, Math.round(rand() * 3000) + (i === 7 ? 50_000 : 0), {
      n: 1 + Math.floor(rand() * 4),
      conf: Math.round(rand() * 100) / 100,
      ts: T0 - Math.floor(rand() * 1000) * HOUR,
      ...(i % 5 === 0 ? {} : { ctx: { rpm: 1000 + Math.floor(rand() * 1000), ...(i % 3 ? { ambient_c: Math.round(rand() * 40) } : {}) } }),
    }),
  );
  // Equal values on several nodes, so the value-then-node order matters.
  const withTies = numeric.map((p, i) => (i % 4 === 0 ? { ...p, out: 1500 } : p));
  const opts = { halfLifeMs: 300 * HOUR, context: { values: { rpm: 1400, ambient_c: 18 } }, excludeOutliers: true } as const;
  const categorical = withTies.map((p, i) => ({ ...p, out: i % 3 === 0 ? 'failure' : 'no_failure' }));
  const map = withTies.map((p, i) => ({ ...p, out: { hours: p.out as number, mode: ['wear', 'seal', 'cavitation'][i % 3]! } }));
  for (const [name, template, packets] of [
    ['number', pump, withTies],
    ['category', bearing, categorical],
    ['map', inspection, map],
  ] as const) {
    const reference = synthesize(template, packets, template === inspection ? { halfLifeMs: 300 * HOUR } : opts);
    let same = true;
    for (let round = 0; round < 20; round++) {
      const again = synthesize(template, shuffle(packets, rand), template === inspection ? { halfLifeMs: 300 * HOUR } : opts);
      if (JSON.stringify(again) !== JSON.stringify(reference)) same = false;
    }
    t.ok(same, `${name}: 20 shuffles give the identical summary`);
    t.not(reference.kind, 'insufficient', `${name}: a real answer`);
  }
});

t.test('wilson - matches the closed form, stays within [0, 1], exact at the ends', async (t) => {
  const rand = prng(3);
  let worst = 0;
  for (let i = 0; i < 1000; i++) {
    const n = 0.5 + rand() * 500;
    const p = i % 10 === 0 ? 0 : i % 10 === 1 ? 1 : rand();
    const z = rand() * 4;
    const got = wilson(p, n, z);
    const ref = wilsonRef(p, n, z);
    worst = Math.max(worst, Math.abs(got.low - Math.max(0, ref.low)), Math.abs(got.high - Math.min(1, ref.high)));
    if (!(got.low >= 0 && got.low <= p && p <= got.high && got.high <= 1)) t.fail(`out of order at p ${p} n ${n} z ${z}`);
    if (p === 0 && got.low !== 0) t.fail('p = 0 must give low 0');
    if (p === 1 && got.high !== 1) t.fail('p = 1 must give high 1');
  }
  t.ok(worst < 1e-12, `largest difference ${worst}`);
  // A textbook value: 81 of 263 at 95 % (Newcombe 1998, Table I style): by the closed form.
  const r = wilsonRef(81 / 263, 263, Z[0.95]);
  near(t, wilson(81 / 263, 263, Z[0.95]).low, r.low, 'low', 1e-12);
  t.same(wilson(0.3, 0, 1.96), { low: 0, high: 1 }, 'no information');
  t.throws(() => wilson(1.1, 10, 1.96), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => wilson(0.5, -1, 1.96), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => wilson(0.5, 10, NaN), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('weightedQuantile - equals the type 2 quantile of the sample with integer weights expanded', async (t) => {
  const rand = prng(11);
  for (let round = 0; round < 300; round++) {
    const N = 1 + Math.floor(rand() * 15);
    const values = [...Array(N)].map(() => Math.floor(rand() * 10));
    const weights = values.map(() => Math.floor(rand() * 4)); // zeros included
    if (!weights.some((w) => w > 0)) weights[0] = 1;
    const x = expand(values, weights);
    for (const q of [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1, rand()]) {
      const got = weightedQuantile(values, weights, q);
      const want = type2(x, q);
      if (got !== want) {
        t.fail(`values ${values} weights ${weights} q ${q}: ${got} vs ${want}`);
        return;
      }
    }
  }
  t.pass('300 random samples agree');
  t.equal(weightedQuantile([1, 2, 3, 4], [1, 1, 1, 1], 0.5), 2.5);
  t.equal(weightedQuantile([3, 1, 2], [5, 1, 1], 0.5), 3, 'unsorted input');
  t.equal(weightedQuantile([1, 2], [0.1, 0.1], 0.5), 1.5, 'fractional weights tie at the half');
  t.throws(() => weightedQuantile([1, 2], [1], 0.5), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => weightedQuantile([1, 2], [0, 0], 0.5), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => weightedQuantile([1, 2], [1, -1], 0.5), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => weightedQuantile([1, NaN], [1, 1], 0.5), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => weightedQuantile([1, 2], [1, 1], 1.5), { code: 'ERR_INVALID_ARGUMENT' });
});
