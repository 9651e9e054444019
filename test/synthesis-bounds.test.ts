// Issue 7 §2, "The Math": how far colluding nodes can move each synthesis statistic, and the
// per-node weight cap. Pure logic over synthesize() (the wire is tested elsewhere).
//
// Every bound below is computed HERE from the honest nodes alone, by the formulas of
// docs/synthesis.md ("Collusion bounds"), with quantiles written out from their definition; the
// code under test only supplies the contaminated figures that are checked against them.
import t from 'tap';
import { compileTemplate } from '../src/protocol/template.js';
import { capWeights, synthesize, type CategorySummary, type NumberSummary, type Synthesis, type SynthPacket } from '../src/synthesis/index.js';
import { prng } from './helpers/prng.js';

const T0 = 1_700_000_000_000;
/** What a liar claims: "I saw this a trillion times". */
const HUGE_N = 1e12;
const HIGH = 1e12;
const LOW = -1e12;

const life = compileTemplate({
  name: 'pump-life',
  version: 1,
  fields: [{ name: 'model', kind: 'category' }],
  outcome: { kind: 'number', unit: 'h' },
});
const LABELS = ['wear', 'seal', 'electrical'] as const;
const mode = compileTemplate({
  name: 'pump-failure-mode',
  version: 1,
  fields: [{ name: 'model', kind: 'category' }],
  outcome: { kind: 'category', labels: [...LABELS] },
});

function asNumber(s: Synthesis): NumberSummary {
  if (s.kind !== 'number') throw new Error(`expected a number summary, got ${JSON.stringify(s)}`);
  return s;
}
function asCategory(s: Synthesis): CategorySummary {
  if (s.kind !== 'category') throw new Error(`expected a category summary, got ${JSON.stringify(s)}`);
  return s;
}

// ---- Reference quantiles of the honest data (weighted empirical distribution F) ----

/** Lower p-quantile inf{x : F(x) ≥ p}; −∞ for p ≤ 0. Slightly conservative (smaller) at float ties. */
function lowerQ(values: readonly number[], weights: readonly number[], p: number): number {
  if (p <= 0) return -Infinity;
  const idx = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
  const W = weights.reduce((s, w) => s + w, 0);
  let cum = 0;
  for (const i of idx) {
    cum += weights[i]!;
    if (cum >= p * W * (1 - 1e-12)) return values[i]!;
  }
  return values[idx[idx.length - 1]!]!;
}

/** Upper p-quantile inf{x : F(x) > p}; +∞ for p ≥ 1. Slightly conservative (larger) at float ties. */
function upperQ(values: readonly number[], weights: readonly number[], p: number): number {
  if (p >= 1) return Infinity;
  const idx = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
  const W = weights.reduce((s, w) => s + w, 0);
  let cum = 0;
  for (const i of idx) {
    cum += weights[i]!;
    if (cum > p * W * (1 + 1e-12)) return values[i]!;
  }
  return values[idx[idx.length - 1]!]!;
}

/** docs/synthesis.md: the median under a contamination share e lies in [q((½−e)/(1−e)), q(½/(1−e))]. */
function medianBound(values: readonly number[], weights: readonly number[], e: number): [number, number] {
  return [lowerQ(values, weights, (0.5 - e) / (1 - e)), upperQ(values, weights, 0.5 / (1 - e))];
}

/** docs/synthesis.md: the trimmed mean (trim α ≥ e) lies in [q((α−e)/(1−e)), q((1−α)/(1−e))]. */
function trimmedBound(values: readonly number[], weights: readonly number[], e: number, alpha: number): [number, number] {
  return [lowerQ(values, weights, (alpha - e) / (1 - e)), upperQ(values, weights, (1 - alpha) / (1 - e))];
}

const within = (x: number, [lo, hi]: readonly [number, number]): boolean => x >= lo && x <= hi;
const fmtB = ([lo, hi]: readonly [number, number]): string => `[${lo.toPrecision(6)}, ${hi.toPrecision(6)}]`;

/** Standard normal by Box–Muller from the seeded PRNG. */
function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

interface Honest {
  readonly packets: SynthPacket[];
  readonly values: number[];
  readonly weights: number[];
}

/** Honest pump lifetimes: log-normal around 1000 h; n and conf as given. */
function honestLives(rand: () => number, count: number, n: () => number, conf: () => number): Honest {
  const packets = [...Array(count).keys()].map((i): SynthPacket => ({ nodeId: `h${String(i).padStart(3, '0')}`, out: Math.round(1000 * Math.exp(0.5 * gauss(rand))), conf: conf(), n: n(), ts: T0 }));
  return { packets, values: packets.map((p) => p.out as number), weights: packets.map((p) => p.n * p.conf) };
}

type Strategy = 'high' | 'low' | 'split' | 'edge';
/** k colluders with valid keys, all claiming HUGE_N observations at full confidence. */
function liars(k: number, strategy: Strategy, honest: Honest): SynthPacket[] {
  const max = Math.max(...honest.values);
  return [...Array(k).keys()].map((i): SynthPacket => {
    const out = strategy === 'high' ? HIGH : strategy === 'low' ? LOW : strategy === 'split' ? (i % 2 === 0 ? HIGH : LOW) : max;
    return { nodeId: `l${String(i).padStart(3, '0')}`, out, conf: 1, n: HUGE_N, ts: T0 };
  });
}

const N = 100;
const EPSILONS = [0.1, 0.2, 0.3] as const;
const STRATEGIES: readonly Strategy[] = ['high', 'low', 'split', 'edge'];
const ROUNDS = 15;

t.test('bounds - by-node median and trimmed mean stay within the documented bounds for 10, 20, 30 % liars; the mean does not', async (t) => {
  const rand = prng(0x7a11);
  for (const eps of EPSILONS) {
    const k = Math.round(eps * N);
    const fails: string[] = [];
    let checked = 0;
    let meanEscapes = 0;
    let meanCases = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const strategy of STRATEGIES) {
        // Honest nodes with unequal n and conf: the by-node figures must ignore both.
        const h = honestLives(rand, N - k, () => 1 + Math.floor(rand() * 5), () => 0.5 + rand() / 2);
        const ones = h.values.map(() => 1);
        const alpha = eps + 0.05;
        const s = asNumber(synthesize(life, [...h.packets, ...liars(k, strategy, h)], { trim: alpha }));
        const mb = medianBound(h.values, ones, eps);
        const tb = trimmedBound(h.values, ones, eps, alpha);
        if (!within(s.byNode.median, mb)) fails.push(`${strategy} r${round}: median ${s.byNode.median} outside ${fmtB(mb)}`);
        if (!within(s.byNode.trimmedMean, tb)) fails.push(`${strategy} r${round}: trimmed mean ${s.byNode.trimmedMean} outside ${fmtB(tb)}`);
        checked++;
        if (strategy === 'high' || strategy === 'low') {
          // The plain mean (default cap): the liars hold at least their count share of the
          // weight, so it lands far outside every honest value, let alone the bound.
          meanCases++;
          const range: [number, number] = [Math.min(...h.values), Math.max(...h.values)];
          if (!within(s.mean, range) && Math.abs(s.mean) > 1e9) meanEscapes++;
        }
      }
    }
    t.same(fails, [], `ε ${eps}: ${checked} contaminated cohorts, by-node median and trimmed mean (trim ε + 0.05) within bounds`);
    t.equal(meanEscapes, meanCases, `ε ${eps}: the plain mean leaves the honest range by more than 1e9 h in all ${meanCases} one-sided cohorts`);
  }
});

t.test('bounds - the default trim 0.1 holds 10 % liars and, as documented, not 20 %', async (t) => {
  const rand = prng(0x10);
  const h = honestLives(rand, 80, () => 1, () => 1);
  const ones = h.values.map(() => 1);
  // 10 % of the cohort (9 liars among 90): ε < trim, bounded.
  const h9 = { ...h, packets: h.packets.slice(0, 81), values: h.values.slice(0, 81) };
  const nine = asNumber(synthesize(life, [...h9.packets, ...liars(9, 'high', h9)]));
  const tb = trimmedBound(h9.values, h9.values.map(() => 1), 0.1, 0.1);
  t.ok(within(nine.byNode.trimmedMean, tb), `ε 0.1, trim 0.1: ${nine.byNode.trimmedMean} within ${fmtB(tb)}`);
  // 20 % liars against trim 0.1: the liars' extreme values survive the trim.
  const twenty = asNumber(synthesize(life, [...h.packets, ...liars(20, 'high', h)]));
  t.ok(twenty.byNode.trimmedMean > Math.max(...h.values), `ε 0.2 > trim 0.1: trimmed mean ${twenty.byNode.trimmedMean} beyond every honest value`);
  t.ok(within(twenty.byNode.median, medianBound(h.values, ones, 0.2)), 'while the median holds');
});

t.test('bounds - label vote shares move by at most ε and the honest plurality wins whenever its margin exceeds the liars', async (t) => {
  const rand = prng(0xca7);
  const P = [0.8, 0.12, 0.08];
  for (const eps of EPSILONS) {
    const k = Math.round(eps * N);
    const fails: string[] = [];
    let decided = 0;
    let plainEscapes = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of ['seal', 'electrical', 'split'] as const) {
        const honest = [...Array(N - k).keys()].map((i): SynthPacket => {
          const u = rand();
          const label = u < P[0]! ? 'wear' : u < P[0]! + P[1]! ? 'seal' : 'electrical';
          return { nodeId: `h${String(i).padStart(3, '0')}`, out: label, conf: 0.5 + rand() / 2, n: 1 + Math.floor(rand() * 5), ts: T0 };
        });
        const lying = [...Array(k).keys()].map((i): SynthPacket => ({
          nodeId: `l${String(i).padStart(3, '0')}`,
          out: target === 'split' ? (i % 2 === 0 ? 'seal' : 'electrical') : target,
          conf: 1,
          n: HUGE_N,
          ts: T0,
        }));
        const s = asCategory(synthesize(mode, [...honest, ...lying]));
        const counts = LABELS.map((l) => honest.filter((p) => p.out === l).length);
        const ph = counts.map((c) => c / (N - k));
        LABELS.forEach((l, i) => {
          const lo = (1 - eps) * ph[i]!;
          const hi = (1 - eps) * ph[i]! + eps;
          const v = s.labels[l]!.voteShare;
          if (!(v >= lo - 1e-12 && v <= hi + 1e-12)) fails.push(`${target} r${round}: ${l} vote share ${v} outside [${lo}, ${hi}]`);
        });
        // The documented condition: honest margin (in nodes) greater than the number of liars.
        const sorted = [...counts].sort((a, b) => b - a);
        const honestTop = LABELS[counts.indexOf(sorted[0]!)]!;
        if (sorted[0]! - sorted[1]! > k) {
          decided++;
          if (s.vote.top !== honestTop) fails.push(`${target} r${round}: vote ${s.vote.top}, honest plurality ${honestTop} by ${sorted[0]! - sorted[1]!} > ${k}`);
        }
        // Plain weighting (cap off): the liars' label takes nearly all the weight.
        if (target !== 'split') {
          const plain = asCategory(synthesize(mode, [...honest, ...lying], { maxNodeShare: 1 }));
          const i = LABELS.indexOf(target);
          const hwShare = honest.filter((p) => p.out === target).reduce((a, p) => a + p.n * p.conf, 0) / honest.reduce((a, p) => a + p.n * p.conf, 0);
          if (plain.labels[target]!.proportion > (1 - eps) * hwShare + eps + 0.1 && plain.top === target && ph[i]! < 0.5) plainEscapes++;
        }
      }
    }
    t.same(fails, [], `ε ${eps}: vote shares within [(1−ε)p, (1−ε)p + ε] in ${ROUNDS * 3} cohorts`);
    t.equal(decided, ROUNDS * 3, `ε ${eps}: the honest margin exceeded the liars in all ${decided} cohorts, and the vote kept the honest plurality in each`);
    t.equal(plainEscapes, ROUNDS * 2, `ε ${eps}: uncapped weighted shares hand the liars' label the top, beyond the bound, in every one-label cohort`);
  }
});

t.test('bounds - the vote bound is tight: liars as many as the margin can flip it, fewer cannot', async (t) => {
  const honest = [...Array(10).keys()].map((i): SynthPacket => ({ nodeId: `h${i}`, out: i < 6 ? 'wear' : 'seal', conf: 1, n: 1, ts: T0 }));
  const liar = (i: number): SynthPacket => ({ nodeId: `l${i}`, out: 'seal', conf: 1, n: HUGE_N, ts: T0 });
  const one = asCategory(synthesize(mode, [...honest, liar(0)]));
  t.equal(one.vote.top, 'wear', 'margin 2, one liar: the honest plurality stands');
  t.equal(one.vote.margin, 1);
  const two = asCategory(synthesize(mode, [...honest, liar(0), liar(1)]));
  t.equal(two.vote.margin, 0, 'margin 2, two liars: a tie');
  t.equal(two.vote.top, 'seal', 'broken by weight, which the liars hold');
  t.same(two.vote.rule, 'one-node-one-vote');
});

t.test('bounds - weighted median and trimmed mean under an explicit cap: bounded by ε_w ≤ k·s, unbounded once k·s ≥ ½', async (t) => {
  const rand = prng(0xcab);
  const s = 0.02;
  for (const eps of EPSILONS) {
    const k = Math.round(eps * N);
    const ew = k * s;
    const fails: string[] = [];
    let escapes = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const h = honestLives(rand, N - k, () => 1, () => 0.5 + rand() / 2);
      const r = asNumber(synthesize(life, [...h.packets, ...liars(k, 'high', h)], { maxNodeShare: s, trim: Math.min(0.45, ew + 0.05) }));
      if (ew < 0.5) {
        // Precondition (honest data only): no honest node is above s of the honest weight, so
        // the cap leaves every honest weight as it is (docs/synthesis.md) and cuts each liar to s.
        const Wh = h.weights.reduce((a, b) => a + b, 0);
        if (Math.max(...h.weights) > s * Wh) {
          fails.push(`r${round}: precondition, an honest node holds ${Math.max(...h.weights) / Wh}`);
          continue;
        }
        if (r.capped !== k) fails.push(`r${round}: capped ${r.capped}, expected the ${k} liars`);
        const mb = medianBound(h.values, h.weights, ew);
        const tb = trimmedBound(h.values, h.weights, ew, ew + 0.05);
        if (!within(r.median, mb)) fails.push(`r${round}: weighted median ${r.median} outside ${fmtB(mb)}`);
        if (!within(r.trimmedMean, tb)) fails.push(`r${round}: weighted trimmed mean ${r.trimmedMean} outside ${fmtB(tb)}`);
      } else if (r.median > Math.max(...h.values)) escapes++;
    }
    t.same(fails, [], `ε ${eps}, s ${s}: ε_w ≤ ${ew.toFixed(2)}${ew < 0.5 ? ', weighted median and trimmed mean within bounds' : ''}`);
    if (ew >= 0.5) t.equal(escapes, ROUNDS, `ε ${eps}, s ${s}: k·s = ${ew.toFixed(2)} ≥ ½, the weighted median goes to the liars as documented`);
  }
});

t.test('bounds - the default cap 2/N: k colluders hold at most 2k/N of the weight', async (t) => {
  const rand = prng(0xdef);
  const h = honestLives(rand, 90, () => 1 + Math.floor(rand() * 3), () => 1);
  const Wh = h.weights.reduce((a, b) => a + b, 0);
  t.ok(Math.max(...h.weights) <= 0.02 * Wh, 'precondition: no honest node above 2 % of the honest weight, so none is capped');
  const ten = asNumber(synthesize(life, [...h.packets, ...liars(10, 'high', h)]));
  t.equal(ten.maxNodeShare, 0.02, 'default in a cohort of 100: 2/100');
  t.equal(ten.capped, 10, 'every liar cut to the cap');
  t.ok(within(ten.median, medianBound(h.values, h.weights, 0.2)), `10 % liars hold ≤ 20 % of the weight: weighted median ${ten.median} within the ε_w = 0.2 bound`);
  const h70 = honestLives(rand, 70, () => 1 + Math.floor(rand() * 3), () => 1);
  const thirty = asNumber(synthesize(life, [...h70.packets, ...liars(30, 'high', h70)]));
  t.ok(thirty.median > Math.max(...h70.values), `30 % liars hold 60 % of the weight: the weighted median (${thirty.median}) leaves the honest range`);
  t.ok(within(thirty.byNode.median, medianBound(h70.values, h70.values.map(() => 1), 0.3)), 'the by-node median does not');
});

// ---- The weight cap itself ----

const near = (a: number | undefined, b: number, rel = 1e-12): boolean => a !== undefined && Math.abs(a - b) <= rel * Math.max(1, Math.abs(b));

t.test('cap - water-filling on hand-computed cases', async (t) => {
  // [10, 1, 1, 1, 1] at 0.4: k = 0 gives T = 0.4·14 = 5.6 < 10; k = 1 gives T = 0.4·4/0.6 = 8/3 ≥ 1.
  const a = capWeights([10, 1, 1, 1, 1], 0.4);
  t.ok(near(a.level, 8 / 3), `level ${a.level} = 8/3`);
  t.ok(near(a.weights[0], 8 / 3), 'the heavy node is cut to the level');
  t.same(a.weights.slice(1), [1, 1, 1, 1], 'the rest untouched');
  t.equal(a.capped, 1);
  t.ok(near(a.weights[0]! / a.weights.reduce((x, y) => x + y, 0), 0.4), 'its share is exactly 0.4');
  // [1, 10, 8, 1] at 0.3: k = 1 gives T = 0.3·10/0.7 ≈ 4.29 < 8, so k = 2: T = 0.3·2/0.4 = 1.5.
  const b = capWeights([1, 10, 8, 1], 0.3);
  t.ok(near(b.level, 1.5), `level ${b.level} = 1.5`);
  t.ok([1, 1.5, 1.5, 1].every((x, i) => near(b.weights[i], x)), `order kept, both heavy nodes at the level: ${b.weights.join(', ')}`);
  t.equal(b.capped, 2);
  // The level falls exactly on a weight ([10, 2, 1, 1] at 1/3: T = 2 whether 1 or 2 nodes count as capped).
  const g = capWeights([10, 2, 1, 1], 1 / 3);
  t.ok([2, 2, 1, 1].every((x, i) => near(g.weights[i], x)), `level on a weight: ${g.weights.join(', ')}`);
  // Nothing above the cap: unchanged.
  const c = capWeights([1, 1, 1, 1, 1], 0.25);
  t.same(c.weights, [1, 1, 1, 1, 1]);
  t.equal(c.capped, 0);
  t.ok(near(c.level, 1.25), 'level s·W when nothing binds');
  // N·s < 1: no level keeps everyone under s; every weight becomes the smallest (one node, one weight).
  const d = capWeights([5, 3, 2], 0.2);
  t.same(d.weights, [2, 2, 2], 'every weight the smallest');
  t.equal(d.capped, 2);
  // N·s = 1 exactly: the rule reaches the same point from above.
  const e = capWeights([5, 3, 2, 1, 1], 0.2);
  t.ok(e.weights.every((x) => near(x, 1)), `N·s = 1: all equal ${e.weights.join(', ')}`);
  // Zero weights stay zero and do not count.
  const f = capWeights([0, 10, 1, 1, 1, 1], 0.4);
  t.same(f.weights.map((w) => Math.round(w * 3)), [0, 8, 3, 3, 3, 3]);
  t.same(capWeights([], 0.5), { level: 0, weights: [], capped: 0 });
  for (const bad of [0, -0.1, 1.5, NaN, Infinity]) t.throws(() => capWeights([1, 2], bad), { code: 'ERR_INVALID_ARGUMENT' }, `maxShare ${bad}`);
  t.throws(() => capWeights([1, -2], 0.5), { code: 'ERR_INVALID_ARGUMENT' }, 'negative weight');
});

t.test('cap - on random weights no node exceeds its share and the level is the fixed point', async (t) => {
  const rand = prng(0x5ca1e);
  const fails: string[] = [];
  for (let round = 0; round < 500; round++) {
    const count = 1 + Math.floor(rand() * 60);
    // Heavy tails: a few nodes claim thousands of observations.
    const w = [...Array(count)].map(() => (rand() < 0.1 ? 1000 * rand() : rand() * 5) + 1e-3);
    const s = rand() < 0.2 ? rand() / count : 1 / count + rand() * (1 - 1 / count);
    const r = capWeights(w, s);
    const W = r.weights.reduce((a, b) => a + b, 0);
    const min = Math.min(...w);
    if (count * s <= 1) {
      if (!r.weights.every((x) => x === min)) fails.push(`r${round}: N·s ≤ 1 but weights not all ${min}`);
      continue;
    }
    if (Math.max(...r.weights) > s * W * (1 + 1e-9)) fails.push(`r${round}: a share ${Math.max(...r.weights) / W} > ${s}`);
    r.weights.forEach((x, i) => {
      if (x !== Math.min(w[i]!, r.level)) fails.push(`r${round}: weight ${i} is ${x}, not min(w, T)`);
    });
    if (r.capped > 0 && !near(r.level, s * W, 1e-9)) fails.push(`r${round}: level ${r.level} ≠ s·Σmin(w, T) = ${s * W}`);
    if (r.capped !== w.filter((x) => x > r.level).length) fails.push(`r${round}: capped count`);
  }
  t.same(fails, [], '500 random cohorts');
});

t.test('cap - synthesize reports the cap, applies it before every figure, and takes the option', async (t) => {
  const p = (i: number, out: string, n: number): SynthPacket => ({ nodeId: `n${i}`, out, conf: 1, n, ts: T0 });
  const packets = [p(0, 'seal', 10), p(1, 'wear', 1), p(2, 'wear', 1), p(3, 'wear', 1), p(4, 'wear', 1)];
  const s = asCategory(synthesize(mode, packets));
  t.equal(s.maxNodeShare, 0.4, 'default in a cohort of 5: 2/5');
  t.equal(s.capped, 1);
  t.ok(near(s.labels.seal!.weight, 8 / 3), 'n = 10 weighs 8/3, not 10');
  t.ok(near(s.labels.seal!.proportion, 0.4), 'its share is the cap');
  t.ok(near(s.weight, 4 + 8 / 3));
  // n_eff over the capped weights: the heavy node's per-observation weight is (8/3)/10.
  t.ok(near(s.effectiveN, (4 + 8 / 3) ** 2 / ((8 / 3) * (8 / 30) + 4)), `n_eff ${s.effectiveN}`);
  t.equal(s.top, 'wear');
  const off = asCategory(synthesize(mode, packets, { maxNodeShare: 1 }));
  t.equal(off.capped, 0);
  t.equal(off.top, 'seal', 'uncapped, one node with n = 10 outweighs four');
  t.equal(off.vote.top, 'wear', 'while the vote does not follow it');
  const big = asCategory(synthesize(mode, [...Array(60).keys()].map((i) => p(i, i < 59 ? 'wear' : 'seal', i < 59 ? 1 : 3))));
  t.equal(big.maxNodeShare, 2 / 60, 'default in a cohort of 60: 2/60');
  t.equal(big.capped, 1, 'n = 3 is above twice the average');
  t.ok(near(big.labels.seal!.weight, (2 / 60) * 59 / (1 - 2 / 60)), 'cut to s·R/(1 − s)');
  t.ok(near(big.labels.seal!.proportion, 2 / 60), 'its share is the cap');
  // A number outcome with excludeOutliers: the cap is worked out again over the kept nodes.
  const nums = [1, 2, 3, 4, 5, 6, 1000].map((v, i): SynthPacket => ({ nodeId: `m${i}`, out: v, conf: 1, n: i === 0 ? 50 : 1, ts: T0 }));
  const ex = asNumber(synthesize(life, nums, { excludeOutliers: true }));
  t.equal(ex.excluded, 1);
  t.equal(ex.maxNodeShare, 2 / 6, 'the default follows the kept count');
  t.ok(near(ex.weight, 5 / (1 - 2 / 6)), `the n = 50 node cut to s·R/(1 − s) = 2.5: total 7.5 (${ex.weight})`);
  for (const bad of [0, 1.01, -1, NaN, '0.1']) {
    t.throws(() => synthesize(mode, packets, { maxNodeShare: bad as never }), { code: 'ERR_INVALID_ARGUMENT' }, `maxNodeShare ${String(bad)}`);
  }
});
