/**
 * Enrolment bench: what a querier pays to read a 10k-node cohort with a trust list (PROTOCOL
 * §10) against the same cohort read without one, in the same run; and what a broker in
 * `admission.enrolment: required` mode pays to ingest enrolled packets against a broker in `off`
 * mode ingesting the same nodes' packets without enrolments.
 *
 *   npm run build && node dist/bench/enrolment.js [--nodes=10000] [--rounds=5] [--ingest-nodes=2000] [--json]
 *
 * Baseline: verifyPacket of N packets without enrolments. Measured: verifyPacket of the same
 * nodes' packets carrying an enrolment under label 13, then filterTrusted (enrolment signature,
 * key, time, scope, trust, revocation). "cold" empties the enrolment cache first (a first query);
 * "warm" is a repeated query, where each enrolment's signature check is a cache hit. Rounds are
 * interleaved and each ratio is the median of per-round ratios (the machine is shared).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { createBroker } from '../broker/server.js';
import { attachEnrolment, clearEnrolmentCache, compileTemplate, createEnrolment, createOutcomePacket, filterTrusted, keyFromSeed, verifyPacket, type NodeKey } from '../src/index.js';
import { JSON_OUT, optNum } from './args.js';

const N = Math.round(optNum('nodes', 10_000));
const INGEST_N = Math.round(optNum('ingest-nodes', 2_000));
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
const keys: NodeKey[] = [];
for (let i = 0; i < N; i++) {
  const seed = new Uint8Array(32).fill(3);
  new DataView(seed.buffer).setUint32(0, i);
  const key = keyFromSeed(seed);
  keys.push(key);
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

// ---- broker ingest: required mode with enrolled packets vs off mode without, same nodes, same run.
// Each broker first takes every node's seq 1 (keys imported, enrolments checked and cached), then the
// timed part is every node's seq 2 (what a running plant sends), QoS 1, 64 in flight, one client.
type Batch = Array<[string, Uint8Array]>;
function ingestBatches(n: number, seq: number): { plain: Batch; enrolled: Batch } {
  const out = { plain: [] as Batch, enrolled: [] as Batch };
  for (let i = 0; i < n; i++) {
    const key = keys[i % keys.length]!;
    const p = createOutcomePacket({ key, template, situation: { valve: 'V-12', dp_bar: 4.5 }, outcome: 'fine', seq, ts: NOW + seq });
    out.plain.push([p.topic, p.packet]);
    out.enrolled.push([p.topic, attachEnrolment(p.packet, createEnrolment(operator, { node: key.publicKey, exp: 4_102_444_800 }))]);
  }
  return out;
}
async function ingestMs(mode: 'off' | 'required', prime: Batch, timed: Batch): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'qis-bench-enrol-'));
  const broker = await createBroker(
    {
      listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }],
      dataDir: dir,
      fsync: 'never',
      verifyWorkers: 1,
      admission: { ratePerSecond: 0, enrolment: mode, operators: mode === 'required' ? [operator.nodeId] : [] },
    },
    { logger: pino({ level: 'silent' }), now: () => NOW + 60_000 },
  );
  const port = broker.addresses().find((a) => a.type === 'tcp')?.port;
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
  const send = async (list: Batch): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < list.length) {
        const [topic, bytes] = list[next++]!;
        await client.publishAsync(topic, Buffer.from(bytes), { qos: 1, retain: true });
      }
    }));
  };
  try {
    await send(prime);
    const t0 = process.hrtime.bigint();
    await send(timed);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (broker.store.size !== Math.min(INGEST_N, keys.length)) throw new Error(`${mode}: the broker holds ${broker.store.size} packets, not ${INGEST_N}`);
    return ms;
  } finally {
    await client.endAsync();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
const ingestRows: Array<{ off: number; required: number }> = [];
if (INGEST_N > 0) {
  const seq1 = ingestBatches(Math.min(INGEST_N, keys.length), 1);
  const seq2 = ingestBatches(Math.min(INGEST_N, keys.length), 2);
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which mode goes first, so drift on a shared machine does not favour one.
    const first = r % 2 === 0;
    const a = first ? await ingestMs('off', seq1.plain, seq2.plain) : await ingestMs('required', seq1.enrolled, seq2.enrolled);
    const b = first ? await ingestMs('required', seq1.enrolled, seq2.enrolled) : await ingestMs('off', seq1.plain, seq2.plain);
    ingestRows.push(first ? { off: a, required: b } : { off: b, required: a });
  }
}
const result = {
  nodes: N,
  baseMs: median(rows.map((x) => x.base)),
  coldMs: median(rows.map((x) => x.cold)),
  warmMs: median(rows.map((x) => x.warm)),
  coldRatio: median(rows.map((x) => x.cold / x.base)),
  warmRatio: median(rows.map((x) => x.warm / x.base)),
  goal: GOAL,
  ...(ingestRows.length > 0
    ? {
        ingestNodes: Math.min(INGEST_N, keys.length),
        ingestOffMs: median(ingestRows.map((x) => x.off)),
        ingestRequiredMs: median(ingestRows.map((x) => x.required)),
        ingestRatio: median(ingestRows.map((x) => x.required / x.off)),
      }
    : {}),
};
if (JSON_OUT) console.log(JSON.stringify(result));
else {
  console.log(`enrolment: ${N}-node cohort, verify (+ trust filter), median of ${ROUNDS} rounds`);
  console.log(`  without enrolment            ${result.baseMs.toFixed(1)} ms`);
  console.log(`  with trust, cold cache       ${result.coldMs.toFixed(1)} ms   ${result.coldRatio.toFixed(2)}×`);
  console.log(`  with trust, warm (repeated)  ${result.warmMs.toFixed(1)} ms   ${result.warmRatio.toFixed(2)}×   goal ≤ ${GOAL}× ${result.warmRatio <= GOAL ? 'met' : 'NOT met'}`);
  if (result.ingestRatio !== undefined) {
    console.log(`broker ingest: ${result.ingestNodes} nodes' second packets, QoS 1, one verify thread, median of ${ROUNDS} rounds`);
    console.log(`  enrolment off, no enrolments   ${result.ingestOffMs?.toFixed(1)} ms`);
    console.log(`  enrolment required, enrolled   ${result.ingestRequiredMs?.toFixed(1)} ms   ${result.ingestRatio.toFixed(2)}×   goal ≤ ${GOAL}× ${result.ingestRatio <= GOAL ? 'met' : 'NOT met'}`);
  }
}
