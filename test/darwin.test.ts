// Pure logic of PROTOCOL §9: score packet codec, prediction scoring, Beta posterior, ranking,
// Thompson sampling, the reliability chart, the outbox's score entries, and the simulation.
import t from 'tap';
import {
  CborTag,
  betaCdf,
  betaQuantile,
  calibrationSvg,
  decodeScorePayload,
  encodeCbor,
  encodeScorePayload,
  isQisError,
  predictionOf,
  rankTemplates,
  sampleBeta,
  scorePrediction,
  scoreTopic,
  sigStructure,
  signEd25519,
  signPacket,
  signScorePacket,
  synthesize,
  poolRecord,
  thompsonChoose,
  utf8Bytes,
  verifyScorePacket,
  address,
  outcomeTopic,
  type ScoreFields,
} from '../src/index.js';
import { supersededBy, type OutboxEntry } from '../src/node/outbox.js';
import { bearing, fixedKey, situation } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';
import { BY_REGION, BY_SOIL, renderSim, simulate, simulateReal } from '../examples/darwinism-sim.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (e) {
    return isQisError(e) ? e.code : `not a QisError: ${String(e)}`;
  }
  return undefined;
};

t.test('score payload: deterministic CBOR written by hand, keys 1, 3, 4, 20..24', async (t) => {
  const bytes = encodeScorePayload({ seq: 1, ts: 2, k: 3, brier: 0.5, hits: 2, since: 4 });
  // a7: map of 7; 01 01 v; 03 01 seq; 04 02 ts; 14 03 k; 15 fb… brier 0.5 as float64; 16 02 hits; 18 18 04 since.
  t.equal(hex(bytes), 'a7' + '0101' + '0301' + '0402' + '1403' + '15fb3fe0000000000000' + '1602' + '181804');
  t.same(decodeScorePayload(bytes), { seq: 1, ts: 2, k: 3, brier: 0.5, hits: 2, since: 4, extra: new Map() });
  t.equal(hex(encodeScorePayload({ seq: 7, ts: 8, k: 2, mae: 1.25 })), 'a5' + '0101' + '0307' + '0408' + '1402' + '17fb3ff4000000000000', 'a numeric record: mae (23)');
  const unknown = encodeCbor(new Map<number | string, number>([[1, 1], [3, 1], [4, 1], [20, 0], [99, 5], ['x', 1]]));
  t.same([...decodeScorePayload(unknown).extra], [[99, 5], ['x', 1]], 'unknown keys are kept (PROTOCOL §5)');
});

t.test('score payload: refusals', async (t) => {
  t.equal(code(() => encodeScorePayload({ seq: 1, ts: 1, k: 3, brier: 2.5 })), 'ERR_PACKET_FIELD', 'brier above 2');
  t.equal(code(() => encodeScorePayload({ seq: 1, ts: 1, k: 3, hits: 4 })), 'ERR_PACKET_FIELD', 'hits above k');
  t.equal(code(() => encodeScorePayload({ seq: -1, ts: 1, k: 3 })), 'ERR_PACKET_FIELD', 'negative seq');
  t.equal(code(() => encodeScorePayload({ seq: 1, ts: 1, k: 1, rel: [1, 2] })), 'ERR_PACKET_FIELD', 'rel of the wrong length');
  const m = (entries: [number, unknown][]): Uint8Array => encodeCbor(new Map(entries) as never);
  t.equal(code(() => decodeScorePayload(m([[1, 1], [3, 1], [4, 1]]))), 'ERR_PAYLOAD_INVALID', 'no k');
  t.equal(code(() => decodeScorePayload(m([[1, 2], [3, 1], [4, 1], [20, 1]]))), 'ERR_UNSUPPORTED_VERSION', 'v 2');
  t.equal(code(() => decodeScorePayload(m([[1, 1], [3, 1], [4, 1], [20, 1], [22, 2]]))), 'ERR_PAYLOAD_INVALID', 'hits above k');
  t.equal(code(() => decodeScorePayload(m([[1, 1], [3, 1], [4, 1], [20, 1], [21, 'low']]))), 'ERR_PAYLOAD_INVALID', 'brier not a number');
  t.equal(code(() => decodeScorePayload(m([[1, 1], [3, 1], [4, 1], [20, 1.5]]))), 'ERR_PAYLOAD_INVALID', 'k not an integer');
});

t.test('score packets: signed on their topic, verified with the shared envelope checks', async (t) => {
  const key = fixedKey(0x21);
  const f: ScoreFields = { seq: 5, ts: 1_800_000_000_000, k: 4, brier: 0.25, hits: 3, since: 1_790_000_000 };
  const { topic, bytes } = signScorePacket(key, bearing.tplId, f);
  t.equal(topic, `qis/1/s/${bearing.tplId}/${key.nodeId}`);
  const v = verifyScorePacket(topic, bytes);
  t.same({ seq: v.seq, ts: v.ts, k: v.k, brier: v.brier, hits: v.hits, since: v.since, nodeId: v.nodeId }, { ...f, nodeId: key.nodeId });
  t.ok(bytes.length < 200, `small: ${bytes.length} bytes`);
  const other = scoreTopic(BY_SOIL.tplId, key.nodeId);
  t.equal(code(() => verifyScorePacket(other, bytes)), 'ERR_BAD_SIGNATURE', "replayed onto another template's score topic: the topic is in the signature");
  t.equal(code(() => verifyScorePacket(scoreTopic(bearing.tplId, fixedKey(0x22).nodeId), bytes)), 'ERR_NODE_MISMATCH', "on another node's topic");
  t.equal(code(() => verifyScorePacket(`qis/1/s/${bearing.tplId}`, bytes)), 'ERR_TOPIC_INVALID');
  t.equal(code(() => verifyScorePacket(topic, bytes, { now: f.ts - 10 * 60_000, maxSkewMs: 300_000 })), 'ERR_TS_FUTURE');
  // An outcome packet signed for a score topic is not a score packet.
  const prot = encodeCbor(new Map([[1, -19]]));
  const outcomePayload = encodeCbor(new Map<number, unknown>([[1, 1], [2, address(bearing, situation).fp], [3, 1], [4, 1], [5, 'failure']]) as never);
  const disguised = encodeCbor(new CborTag(18, [prot, new Map([[4, key.publicKey]]), outcomePayload, signEd25519(key, sigStructure(prot, utf8Bytes(topic), outcomePayload))]));
  t.equal(code(() => verifyScorePacket(topic, disguised)), 'ERR_PAYLOAD_INVALID', 'an outcome payload on a score topic');
  // And a score topic is not an outcome topic.
  t.equal(code(() => signPacket(key, topic, { fp: address(bearing, situation).fp, seq: 1, ts: 1, out: 'failure' })), 'ERR_TOPIC_INVALID');
  t.ok(outcomeTopic(address(bearing, situation), key.nodeId).startsWith('qis/1/o/'));
});

t.test('scoring one prediction, by hand', async (t) => {
  const labels = ['good', 'poor'];
  const s = scorePrediction({ kind: 'category', probs: { good: 0.7, poor: 0.3 } }, 'good', labels);
  t.ok(Math.abs((s.brier as number) - (0.09 + 0.09)) < 1e-12, 'Brier (0.7 − 1)² + (0.3 − 0)² = 0.18');
  t.equal(s.hit, true);
  const miss = scorePrediction({ kind: 'category', probs: { good: 0.7, poor: 0.3 } }, 'poor', labels);
  t.ok(Math.abs((miss.brier as number) - (0.49 + 0.49)) < 1e-12, 'Brier 0.98 for the miss');
  t.equal(miss.hit, false);
  const tie = scorePrediction({ kind: 'category', probs: { good: 0.5, poor: 0.5 } }, 'good', labels);
  t.equal(tie.hit, false, 'a tie names no label: not a hit');
  t.equal(tie.brier, 0.5);
  t.same(scorePrediction({ kind: 'number', value: 7.5 }, 5), { absError: 2.5 });
  t.equal(code(() => scorePrediction({ kind: 'number', value: 1 }, 'good')), 'ERR_OUTCOME_INVALID');
  // The prediction of a synthesis: label proportions; a cohort too small to answer is uniform.
  const syn = synthesize(BY_SOIL, [
    { nodeId: 'a', out: 'good', conf: 1, n: 1, ts: 1 },
    { nodeId: 'b', out: 'good', conf: 1, n: 1, ts: 1 },
    { nodeId: 'c', out: 'poor', conf: 1, n: 1, ts: 1 },
    { nodeId: 'd', out: 'good', conf: 1, n: 1, ts: 1 },
  ], { minCohort: 1 });
  t.same(predictionOf(BY_SOIL, syn), { kind: 'category', probs: { good: 0.75, poor: 0.25 } });
  t.same(predictionOf(BY_SOIL, synthesize(BY_SOIL, [], { minCohort: 1 })), { kind: 'category', probs: { good: 0.5, poor: 0.5 } });
});

t.test('Beta posterior: CDF against numerical integration, quantiles in closed form', async (t) => {
  // Simpson's rule over the pdf x^(a−1)(1−x)^(b−1)/B(a, b), B from the same rule.
  const simpson = (f: (x: number) => number, lo: number, hi: number, n = 20_000): number => {
    const h = (hi - lo) / n;
    let s = f(lo) + f(hi);
    for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * f(lo + i * h);
    return (s * h) / 3;
  };
  for (const [a, b] of [
    [3, 5],
    [27, 5],
    [2, 9],
  ] as const) {
    const pdf = (x: number): number => x ** (a - 1) * (1 - x) ** (b - 1);
    const B = simpson(pdf, 0, 1);
    for (const x of [0.1, 0.35, 0.6, 0.85]) {
      const want = simpson(pdf, 0, x) / B;
      t.ok(Math.abs(betaCdf(x, a, b) - want) < 1e-7, `I_${x}(${a}, ${b}) = ${want.toFixed(8)} (got ${betaCdf(x, a, b).toFixed(8)})`);
    }
  }
  for (const q of [0.025, 0.5, 0.975]) {
    t.ok(Math.abs(betaQuantile(q, 1, 1) - q) < 1e-9, `Beta(1, 1) is uniform: quantile ${q}`);
    t.ok(Math.abs(betaQuantile(q, 2, 1) - Math.sqrt(q)) < 1e-9, `Beta(2, 1): CDF x², quantile √${q}`);
  }
  const rng = prng(11);
  let sum = 0;
  const N = 20_000;
  for (let i = 0; i < N; i++) sum += sampleBeta(3, 7, rng);
  t.ok(Math.abs(sum / N - 0.3) < 0.01, `Beta(3, 7) draws average 0.3 (${(sum / N).toFixed(4)})`);
  let small = 0;
  for (let i = 0; i < N; i++) small += sampleBeta(0.5, 0.5, rng) < 0.25 ? 1 : 0;
  // P(X < 1/4) for the arcsine distribution Beta(½, ½) = (2/π) asin(√¼) = 1/3.
  t.ok(Math.abs(small / N - 1 / 3) < 0.015, `shape < 1 too: P(X < 0.25) ≈ 1/3 (${(small / N).toFixed(4)})`);
});

t.test('ranking and Thompson sampling', async (t) => {
  const rows = rankTemplates([
    { tplId: 'unscored', scores: [] },
    { tplId: 'weak', scores: [{ seq: 1, ts: 1, k: 10, hits: 5, brier: 0.45 }] },
    { tplId: 'strong', scores: [{ seq: 1, ts: 1, k: 10, hits: 9, brier: 0.1 }, { seq: 1, ts: 1, k: 30, hits: 24, brier: 0.2 }] },
  ]);
  t.same(rows.map((r) => r.tplId), ['strong', 'weak', 'unscored'], 'by posterior hit rate; the unscored last');
  const s = rows[0] as (typeof rows)[number];
  t.equal(s.k, 40);
  t.equal(s.hits, 33);
  t.ok(Math.abs(s.hitRate - 34 / 42) < 1e-12, 'posterior mean (1 + 33) / (2 + 40)');
  t.ok(Math.abs((s.brier as number) - (10 * 0.1 + 30 * 0.2) / 40) < 1e-12, 'Brier weighted by k');
  // σ² = (10·(0.1 − 0.175)² + 30·(0.2 − 0.175)²) / 1; half-width 1.96 σ / √40.
  const sd = Math.sqrt(10 * 0.075 ** 2 + 30 * 0.025 ** 2);
  t.ok(Math.abs(((s.brierInterval as readonly number[])[1] as number) - (0.175 + (1.96 * sd) / Math.sqrt(40))) < 1e-12, 'Brier interval from the spread between nodes');
  t.same(rows[2]?.hitInterval.map((x) => Math.round(x * 1000) / 1000), [0.025, 0.975], 'no evidence: the uniform prior interval');
  const numeric = rankTemplates([
    { tplId: 'far', scores: [{ seq: 1, ts: 1, k: 4, mae: 3 }] },
    { tplId: 'near', scores: [{ seq: 1, ts: 1, k: 4, mae: 1 }] },
  ]);
  t.same(numeric.map((r) => r.tplId), ['near', 'far'], 'numeric outcomes: by lower mean absolute error');

  const rng = prng(5);
  let strong = 0;
  let fresh = 0;
  for (let i = 0; i < 2000; i++) {
    if (thompsonChoose([{ tplId: 'weak', scores: [{ seq: 1, ts: 1, k: 100, hits: 10 }] }, { tplId: 'strong', scores: [{ seq: 1, ts: 1, k: 100, hits: 90 }] }], rng)[0]?.tplId === 'strong') strong++;
    if (thompsonChoose([{ tplId: 'even', scores: [{ seq: 1, ts: 1, k: 100, hits: 50 }] }, { tplId: 'new', scores: [] }], rng)[0]?.tplId === 'new') fresh++;
  }
  t.equal(strong, 2000, 'a clearly better record always wins the draw');
  t.ok(fresh > 600 && fresh < 1400, `a new template still gets explored against an even record (${fresh} of 2000)`);
});

t.test('one node claiming a huge record cannot carry a ranking or a Thompson draw (per-node cap on k)', async (t) => {
  const node = (k: number, hits: number) => ({ seq: 1, ts: 1, k, hits });
  const bad = { tplId: 'bad', scores: [node(1e12, 1e12), node(10, 2), node(10, 2), node(10, 2)] };
  const good = { tplId: 'good', scores: [node(10, 8), node(10, 8), node(10, 8), node(10, 8)] };
  // By hand: cap 2/N = 0.5 of the pooled k. bad: T = 0.5 (T + 30) gives T = 30, so the liar counts
  // 30 predictions with 30 hits: hits 30 + 6 = 36 of 60, posterior mean 37/62. good: nobody
  // above 0.5 × 40 = 20, so 32 of 40, posterior mean 33/42.
  const [pb, pg] = [poolRecord(bad), poolRecord(good)];
  t.equal(pb.capped, 1, 'the liar is capped');
  t.ok(Math.abs(pb.hitRate - 37 / 62) < 1e-9, `bad: posterior mean 37/62 (got ${pb.hitRate})`);
  t.equal(pg.capped, 0);
  t.ok(Math.abs(pg.hitRate - 33 / 42) < 1e-9, `good: posterior mean 33/42 (got ${pg.hitRate})`);
  t.same(rankTemplates([bad, good]).map((r) => r.tplId), ['good', 'bad'], 'the honest record ranks first');
  const rng = prng(11);
  let wins = 0;
  for (let i = 0; i < 1000; i++) if (thompsonChoose([bad, good], rng)[0]?.tplId === 'good') wins++;
  t.ok(wins > 900, `Thompson prefers the honest record (${wins} of 1000)`);
});

t.test('Thompson sampling between numeric templates follows their mean absolute errors', async (t) => {
  const rec = (tplId: string, mae: number) => ({ tplId, scores: [1, 2, 3].map((i) => ({ seq: i, ts: 1, k: 50, mae: mae * (1 + 0.1 * (i - 2)) })) });
  const rng = prng(12);
  let near = 0;
  let fresh = 0;
  for (let i = 0; i < 1000; i++) {
    if (thompsonChoose([rec('far', 100), rec('near', 1)], rng)[0]?.tplId === 'near') near++;
    if (thompsonChoose([rec('known', 10), { tplId: 'new', scores: [] }], rng)[0]?.tplId === 'new') fresh++;
  }
  t.ok(near > 990, `the template with the lower error wins the draw (${near} of 1000)`);
  t.ok(fresh > 200 && fresh < 800, `a new numeric template is still explored (${fresh} of 1000)`);
});

t.test('reliability chart: an SVG with a dot per non-empty bin, names escaped', async (t) => {
  const rel = new Array<number>(20).fill(0);
  rel[2 * 8] = 10;
  rel[2 * 8 + 1] = 8;
  rel[2 * 2] = 5;
  rel[2 * 2 + 1] = 1;
  const svg = calibrationSvg([
    { tplId: 'a', name: 'soil <v1> & co', rel, brier: 0.2, k: 10 },
    { tplId: 'b', k: 0 },
  ]);
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(svg, /<\/svg>\n$/);
  t.match(svg, /soil &#60;v1&#62; &#38; co \(Brier 0\.200, k 10\)/, 'the legend, escaped');
  t.match(svg, /b \(no scores\)/);
  t.equal((svg.match(/<circle /g) ?? []).length, 2, 'two non-empty bins');
  t.match(svg, /bin 0\.8–0\.9: 8 of 10 came true/);
  t.equal((svg.match(/<polyline /g) ?? []).length, 1, 'one line, for the template with data');
});

t.test('outbox: a score entry replaces only older score entries of its template', async (t) => {
  const e = (order: number, kind: OutboxEntry['kind'], tplId = 'T', topic = `qis/1/o/${kind}`): OutboxEntry => ({ name: `${order}`, order, kind, tplId, topic, seq: order, packet: new Uint8Array() });
  const queued = [e(1, 'packet'), e(2, 'score', 'T', 'qis/1/s/T/n'), e(3, 'tombstone'), e(4, 'score', 'U', 'qis/1/s/U/n')];
  t.same(supersededBy(queued, e(5, 'score', 'T', 'qis/1/s/T/n')).map((x) => x.order), [2], 'the older score of T only');
  t.same(supersededBy(queued, e(5, 'packet')).map((x) => x.order), [1], 'an outcome packet leaves the score entry alone');
});

t.test('simulation (in memory): the template that routes on the true driver wins ≥ 90 % of the consultations and has the lower Brier', async (t) => {
  const r = await simulate({ nodes: 20, rounds: 300, seed: 1 });
  t.comment(renderSim(r));
  t.ok(r.finalShareSoil >= 0.9, `by-soil got ${(100 * r.finalShareSoil).toFixed(1)} % of the consultations in the last fifth`);
  t.ok(r.convergenceRound !== undefined && r.convergenceRound < 150, `converged at round ${r.convergenceRound}`);
  const [first, second] = r.ranking;
  t.equal(first?.tplId, BY_SOIL.tplId, 'by-soil ranks first');
  t.equal(second?.tplId, BY_REGION.tplId);
  t.ok((first?.brier as number) < (second?.brier as number), `and has the lower Brier (${first?.brier?.toFixed(3)} < ${second?.brier?.toFixed(3)})`);
  t.equal(r.ranking.reduce((s, x) => s + x.k, 0), 20 * 300, 'every consultation was scored once');
  // Other seeds agree.
  for (const seed of [2, 3]) {
    const o = await simulate({ nodes: 20, rounds: 300, seed });
    t.ok(o.finalShareSoil >= 0.9 && o.ranking[0]?.tplId === BY_SOIL.tplId, `seed ${seed}: ${(100 * o.finalShareSoil).toFixed(1)} %`);
  }
});

t.test('simulation (real qis broker over loopback, real nodes): the loop scores every consultation through score packets', async (t) => {
  const r = await simulateReal({ nodes: 4, rounds: 12, seed: 1 });
  t.comment(renderSim(r));
  t.equal(r.ranking.length, 2, 'both track records read back from the broker');
  t.equal(r.ranking.reduce((s, x) => s + x.k, 0), 4 * 12, 'k over both templates = every consultation, reported through node.report()');
  t.equal(r.ranking.reduce((s, x) => s + x.nodes, 0) >= 4, true, 'each node published at least one score packet');
});
