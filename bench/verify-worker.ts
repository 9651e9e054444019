/**
 * Verify worker bench (issue 15): the CPU a verify worker thread spends per packet beyond the raw
 * Ed25519 verification, on both of its paths, against raw node:crypto verification of the very
 * same packets measured in the same run:
 *
 *   raw      crypto.verify(null, Sig_structure, KeyObject, signature), inputs built beforehand
 *   broker   verifyPacked() of packed batches (broker/verifier.ts's worker side: packed results)
 *   query    checkPackedBatch() of packed batches (src/node/cohort-verify.ts's worker side), plus
 *            the postMessage of its results (the structured clone's serialization, in the worker),
 *            and, apart, their receipt (deserialization, on the query's main thread)
 *
 *   node dist/bench/verify-worker.js [--nodes=2000] [--rounds=5] [--json]
 *
 * Everything runs on this thread, in rounds over every packet that interleave the operations batch
 * by batch (raw, broker, query on batch 1, then on batch 2, …); CPU time is process.cpuUsage() (user + system, so the GC's
 * threads count too), which on a shared machine is steadier than wall time. Keys are warm, as in a
 * query read again or a broker's known nodes: one untimed round comes first. Ratios are medians of
 * the per-round ratios to raw.
 */
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import {
  address,
  createOutcomePacket,
  decodeSign1,
  keyFromSeed,
  loadTemplate,
  outcomeTopic,
  sigStructure,
  utf8Bytes,
} from '../src/index.js';
import { PackedBatch, checkPackedBatch, verifyPacked, type CheckBatch } from '../src/protocol/verify-wire.js';
import { JSON_OUT, optNum } from './args.js';
import { benchKey, benchPacket, benchSeed } from './bench-keys.js';
import { median, r1, r3 } from './proc.js';

const NODES = Math.round(optNum('nodes', 2000));
const ROUNDS = Math.round(optNum('rounds', 5));
/** As the broker's pool and a query's cohort batch them. */
const BATCH = 128;
const TEMPLATE_FILE = fileURLToPath(new URL('../../examples/bearing-failure.yaml', import.meta.url));
const SITUATION = { machine_model: 'BENCH-VW', bearing_type: 'roller', load_kn: 20, sealed: true };
const NOW = 1795000000000;
const MAX_SKEW_MS = 30_000;

const log = (s: string): void => {
  if (!JSON_OUT) process.stderr.write(s + '\n');
};
function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`bench fixture check failed: ${what}`);
}

// ------------------------------------------------------------------------------ fixture

const template = await loadTemplate(TEMPLATE_FILE);
const addr = address(template, SITUATION);
const depth = addr.levels.length;
const fieldsOf = (i: number) => ({
  out: i % 5 === 0 ? 'failure' : 'no_failure',
  conf: 0.9,
  ctx: { ambient_c: 15 + (i % 20), rpm: 1400 + (i % 200) },
  seq: 1 + (i % 7),
  ts: NOW - i * 1000,
});
const keys = Array.from({ length: NODES }, (_, i) => benchKey(benchSeed(i)));
const packets = keys.map((k, i) => {
  const topic = outcomeTopic(addr, k.key.nodeId);
  return { topic, bytes: benchPacket(k, topic, { fp: addr.fp, ...fieldsOf(i) }) };
});
{
  const ref = createOutcomePacket({ key: keyFromSeed(benchSeed(0)), template, situation: SITUATION, outcome: 'failure', ...fieldsOf(0) });
  const p0 = packets[0] as (typeof packets)[number];
  check(ref.topic === p0.topic && Buffer.from(ref.packet).equals(p0.bytes), 'bench packet 0 equals createOutcomePacket');
}

// Raw inputs, outside any timing.
const raw = packets.map((p, i) => {
  const s = decodeSign1(p.bytes);
  const x = Buffer.from((keys[i] as (typeof keys)[number]).key.publicKey).toString('base64url');
  return {
    msg: sigStructure(s.protectedBytes, utf8Bytes(p.topic), s.payload),
    sig: s.signature,
    ko: crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }),
  };
});

/** The packets in sealed batches (fresh buffers: a query's are transferred away). */
function batches(maxSkewMs: number): { buf: ArrayBuffer; count: number }[] {
  const out: { buf: ArrayBuffer; count: number }[] = [];
  for (let i = 0; i < NODES; i += BATCH) {
    const b = new PackedBatch(BATCH * 1024);
    for (const p of packets.slice(i, i + BATCH)) check(b.add(p.topic, p.bytes, { now: NOW, maxSkewMs, depth }), 'a job fits its batch');
    out.push(b.seal());
  }
  return out;
}

// ------------------------------------------------------------------------------ operations

const cpu = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

const brokerBatches = batches(MAX_SKEW_MS);
const { port1, port2 } = new MessageChannel();

interface Round {
  raw: number;
  broker: number;
  check: number;
  post: number;
  receive: number;
}

/**
 * One round: for each batch in turn, raw verification of its packets, verifyPacked() of it, then
 * checkPackedBatch() of it with the post and receipt of its results; so that each path and its
 * raw baseline are measured within milliseconds of each other. CPU µs, summed over the batches.
 */
function round(): Round {
  const queryBatches: CheckBatch[] = batches(Number.NaN).map((b) => ({ ...b, check: { expectFp: addr.fp } }));
  const r: Round = { raw: 0, broker: 0, check: 0, post: 0, receive: 0 };
  let ok = 0;
  for (let k = 0; k < brokerBatches.length; k++) {
    const from = k * BATCH;
    const to = Math.min(NODES, from + BATCH);
    let t0 = cpu();
    for (let i = from; i < to; i++) {
      const x = raw[i] as (typeof raw)[number];
      if (crypto.verify(null, x.msg, x.ko, x.sig)) ok++;
    }
    let t1 = cpu();
    r.raw += t1 - t0;
    const refused = verifyPacked(brokerBatches[k] as (typeof brokerBatches)[number]).refusals.length;
    t0 = cpu();
    r.broker += t0 - t1;
    check(refused === 0, 'verifyPacked accepts every packet');
    const b = queryBatches[k] as CheckBatch;
    t0 = cpu();
    const rs = checkPackedBatch(b);
    t1 = cpu();
    port1.postMessage(rs, [b.buf]);
    const t2 = cpu();
    const got = receiveMessageOnPort(port2)?.message as typeof rs;
    const t3 = cpu();
    r.check += t1 - t0;
    r.post += t2 - t1;
    r.receive += t3 - t2;
    for (const x of got) if (x.ok && x.packet.seq >= 1) ok++;
  }
  check(ok === 2 * NODES, 'every raw verification and every query check succeeds, and the results arrive');
  return r;
}

// ------------------------------------------------------------------------------ run

log(`verify worker bench: ${NODES} nodes, batches of ${BATCH}, ${ROUNDS} rounds (CPU time, µs per packet)`);
round(); // warm-up: the code compiled, every key in the cache
const rows: Round[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const x = round();
  rows.push({ raw: x.raw / NODES, broker: x.broker / NODES, check: x.check / NODES, post: x.post / NODES, receive: x.receive / NODES });
}
const med = (f: (x: (typeof rows)[number]) => number): number => median(rows.map(f));
const result = {
  nodes: NODES,
  rounds: ROUNDS,
  usPerPacket: {
    raw: r1(med((x) => x.raw)),
    broker: r1(med((x) => x.broker)),
    queryCheck: r1(med((x) => x.check)),
    queryPost: r1(med((x) => x.post)),
    queryReceive: r1(med((x) => x.receive)),
  },
  overUs: {
    broker: r1(med((x) => x.broker - x.raw)),
    queryWorker: r1(med((x) => x.check + x.post - x.raw)),
    queryReceive: r1(med((x) => x.receive)),
  },
  ratio: {
    broker: r3(med((x) => x.broker / x.raw)),
    queryWorker: r3(med((x) => (x.check + x.post) / x.raw)),
    queryAll: r3(med((x) => (x.check + x.post + x.receive) / x.raw)),
  },
};
if (JSON_OUT) {
  process.stdout.write(JSON.stringify(result) + '\n');
} else {
  const u = result.usPerPacket;
  const o = result.overUs;
  const q = result.ratio;
  console.log(`raw node:crypto verify            ${u.raw} µs`);
  console.log(`broker  verifyPacked              ${u.broker} µs  (+${o.broker} over raw, ${q.broker}× raw)`);
  console.log(`query   checkPackedBatch          ${u.queryCheck} µs`);
  console.log(`query   postMessage (serialize)   ${u.queryPost} µs  (worker: +${o.queryWorker} over raw, ${q.queryWorker}× raw)`);
  console.log(`query   receipt (deserialize)     ${u.queryReceive} µs  (main thread; worker + main ${q.queryAll}× raw)`);
}
port1.close();
