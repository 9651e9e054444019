/**
 * Enrolment bench: what a querier pays to read a 10k-node cohort with a trust list (PROTOCOL
 * §10) against the same cohort read without one, in the same run.
 *
 *   npm run build && node dist/bench/enrolment.js [--nodes=10000] [--rounds=5] [--json]
 *
 * Baseline: verifyPacket of N packets without enrolments. Measured: verifyPacket of the same
 * nodes' packets carrying an enrolment under label 13, then filterTrusted (enrolment signature,
 * key, time, scope, trust, revocation). "cold" empties the enrolment cache first (a first query);
 * "warm" is a repeated query, where each enrolment's signature check is a cache hit. Rounds are
 * interleaved and each ratio is the median of per-round ratios (the machine is shared).
 */
import { attachEnrolment, clearEnrolmentCache, compileTemplate, createEnrolment, createOutcomePacket, filterTrusted, keyFromSeed, verifyPacket } from '../src/index.js';
import { JSON_OUT, optNum } from './args.js';

const N = Math.round(optNum('nodes', 10_000));
const ROUNDS = Math.round(optNum('rounds', 5));
const NOW = 1_795_000_000_000;
const GOAL = 1.1;

const template = compileTemplate({
  name: 'valve-wear',
  version: 1,
  fields: [
    { name: 'valve', kind: 'category' },
    { name: 'dp_bar', kind: 'number', bins: [0, 2, 6, 16] },
  ],
  outcome: { kind: 'category', labels: ['sticks', 'fine'] },
});
const operator = keyFromSeed(new Uint8Array(32).fill(9));
const plain: Array<[string, Uint8Array]> = [];
const enrolled: Array<[string, Uint8Array]> = [];
for (let i = 0; i < N; i++) {
  const seed = new Uint8Array(32).fill(3);
  new DataView(seed.buffer).setUint32(0, i);
  const key = keyFromSeed(seed);
  const p = createOutcomePacket({ key, template, situation: { valve: 'V-12', dp_bar: 4.5 }, outcome: i % 3 ? 'fine' : 'sticks', seq: 1, ts: NOW });
  plain.push([p.topic, p.packet]);
  enrolled.push([p.topic, attachEnrolment(p.packet, createEnrolment(operator, { node: key.publicKey, exp: 4_102_444_800 }))]);
}

function time(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
const verifyAll = (list: Array<[string, Uint8Array]>) => list.map(([topic, bytes]) => verifyPacket(topic, bytes, { now: NOW }));
const trusted = (): void => {
  const r = filterTrusted(verifyAll(enrolled), { operators: [operator.nodeId], now: NOW });
  if (r.kept.length !== N) throw new Error(`kept ${r.kept.length} of ${N}`);
};

// Warm-up: JIT and the public-key cache of both paths.
verifyAll(plain);
trusted();
const rows: Array<{ base: number; cold: number; warm: number }> = [];
for (let r = 0; r < ROUNDS; r++) {
  const base = time(() => verifyAll(plain));
  clearEnrolmentCache();
  const cold = time(trusted);
  const warm = time(trusted);
  rows.push({ base, cold, warm });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const result = {
  nodes: N,
  baseMs: median(rows.map((x) => x.base)),
  coldMs: median(rows.map((x) => x.cold)),
  warmMs: median(rows.map((x) => x.warm)),
  coldRatio: median(rows.map((x) => x.cold / x.base)),
  warmRatio: median(rows.map((x) => x.warm / x.base)),
  goal: GOAL,
};
if (JSON_OUT) console.log(JSON.stringify(result));
else {
  console.log(`enrolment: ${N}-node cohort, verify (+ trust filter), median of ${ROUNDS} rounds`);
  console.log(`  without enrolment            ${result.baseMs.toFixed(1)} ms`);
  console.log(`  with trust, cold cache       ${result.coldMs.toFixed(1)} ms   ${result.coldRatio.toFixed(2)}×`);
  console.log(`  with trust, warm (repeated)  ${result.warmMs.toFixed(1)} ms   ${result.warmRatio.toFixed(2)}×   goal ≤ ${GOAL}× ${result.warmRatio <= GOAL ? 'met' : 'NOT met'}`);
}
