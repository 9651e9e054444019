/**
 * Core benchmark: ops/s of addressing, payload encoding, packet decoding, sign+encode and
 * verify (both Ed25519 backends), against the raw Ed25519 limit of node:crypto and
 * @noble/ed25519 on the very same Sig_structure bytes.
 *
 *   npm run bench                      (build, then a table)
 *   node dist/bench/core.js --json     (one JSON object)
 *   node dist/bench/core.js --ms=500   (shorter rounds)
 *
 * Method: each operation is warmed up, then measured for a fixed time in 5 rounds of 600 ms.
 * Rounds are interleaved (round 1 of every operation, then round 2, …), and each packet
 * operation runs right after its raw baseline, so a packet rate and its baseline are always
 * measured within about a second of each other. The table shows the median round; a ratio is
 * the median of the per-round ratios (packet rate / baseline rate of the same round), which
 * cancels most of the drift of a shared 2-core machine. `--rounds=N --ms=M` change the plan.
 *
 * The data is the bearing-failure vector (test/vectors/protocol-v1.json `packet[0]`): the template
 * from examples/bearing-failure.yaml, the seed and fields written here; the packet built from it is
 * checked byte for byte against the vector before anything is timed.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import {
  address,
  parseTemplate,
  decodePacket,
  decodeSign1,
  encodePayload,
  keyFromSeed,
  outcomeTopic,
  sigStructure,
  signPacket,
  utf8Bytes,
  verifyPacket,
  type PacketFields,
} from '../src/index.js';
import { JSON_OUT, optNum } from './args.js';

ed.hashes.sha512 = sha512;

// ------------------------------------------------------------------------------ options

/** Measured time of one round of one operation. */
const ROUND_MS = optNum('ms', 600);
const ROUNDS = Math.round(optNum('rounds', 5));
const WARMUP_MS = optNum('warmup', 300);
/** Wanted duration of one timed batch (the clock is read once per batch). */
const BATCH_MS = 5;
const GOAL = 0.8;

// ------------------------------------------------------------------------------ fixture

const SEED_HEX = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
// The example template every user sees first; its id and topic are checked against the vector below.
const TEMPLATE_FILE = fileURLToPath(new URL('../../examples/bearing-failure.yaml', import.meta.url));
const SITUATION = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
const EXPECTED_TOPIC =
  'qis/1/o/oot5cp3icuyzffz454i2beg6a4/a4i3z7jtki/uors66gee5/bubsegg34p/smotwpfig7/eh7ddx5bksrgcytl7bkai36se4';
const EXPECTED_PACKET_HEX =
  'd28443a10132a1045820d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a5852a801010250931d3b3c' +
  'a837cbd2cffdb9386315b3bf0307041b000001a1ee565e0005676661696c75726506fb3fee147ae147ae14070308a26372706d1905' +
  'c869616d6269656e745f63fb40358000000000005840a70c1946a917633cb6142a5217eecc8f05f354328d7dc19b7b23e183d8abef' +
  '4e64753300dc4d69c44eab38406968efb4ae3c1ecd46509085c1f62ced6f6c0604';
const NOW = 1795000000000;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const b64url = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');

const key = keyFromSeed(new Uint8Array(Buffer.from(SEED_HEX, 'hex')));
const tpl = parseTemplate(readFileSync(TEMPLATE_FILE, 'utf8'), TEMPLATE_FILE);
const addr = address(tpl, SITUATION);
const topic = outcomeTopic(addr, key.nodeId);
const fields: PacketFields = {
  fp: addr.fp,
  seq: 7,
  ts: 1795000000000,
  out: 'failure',
  conf: 0.94,
  n: 3,
  ctx: { ambient_c: 21.5, rpm: 1480 },
};
const packet = signPacket(key, topic, fields, { backend: 'node' });

// The exact bytes the packet signs, and the raw Ed25519 inputs built once, outside any loop.
const sign1 = decodeSign1(packet);
const toSign = sigStructure(sign1.protectedBytes, utf8Bytes(topic), sign1.payload);
const signature = sign1.signature;
const jwk = { kty: 'OKP', crv: 'Ed25519', d: b64url(key.secretKey), x: b64url(key.publicKey) };
const privateKeyObject = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
const publicKeyObject = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
const publicKey = key.publicKey;

// ------------------------------------------------------------------------------ sanity checks

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`bench fixture check failed: ${what}`);
}
check(topic === EXPECTED_TOPIC, 'topic equals the protocol-v1 vector');
check(hex(packet) === EXPECTED_PACKET_HEX, 'packet (node) equals the protocol-v1 vector');
check(hex(signPacket(key, topic, fields, { backend: 'noble' })) === EXPECTED_PACKET_HEX, 'packet (noble) equals the vector');
check(hex(encodePayload(fields)) === hex(sign1.payload), 'encodePayload equals the packet payload');
check(verifyPacket(topic, packet, { now: NOW, backend: 'node' }).seq === 7, 'verifyPacket (node)');
check(verifyPacket(topic, packet, { now: NOW, backend: 'noble' }).seq === 7, 'verifyPacket (noble)');
check(decodePacket(packet).nodeId === key.nodeId, 'decodePacket');
check(hex(crypto.sign(null, toSign, privateKeyObject)) === hex(signature), 'raw node:crypto sign gives the packet signature');
check(crypto.verify(null, toSign, publicKeyObject, signature), 'raw node:crypto verify');
check(ed.verify(signature, toSign, publicKey, { zip215: false }), 'raw noble verify');

// ------------------------------------------------------------------------------ operations

interface Op {
  readonly id: string;
  readonly label: string;
  readonly fn: () => number;
}

// Every operation returns a number folded into `sink`, so no result is dead code.
const ops: readonly Op[] = [
  { id: 'address', label: 'address(template, situation)', fn: () => address(tpl, SITUATION).fp[0] as number },
  { id: 'encodePayload', label: 'encodePayload(fields)  [CBOR only]', fn: () => encodePayload(fields).length },
  { id: 'decodePacket', label: 'decodePacket(bytes)  [no sig check]', fn: () => decodePacket(packet).seq },
  { id: 'signPacket.node', label: 'signPacket  node   [sign+encode]', fn: () => signPacket(key, topic, fields, { backend: 'node' }).length },
  { id: 'signPacket.noble', label: 'signPacket  noble  [sign+encode]', fn: () => signPacket(key, topic, fields, { backend: 'noble' }).length },
  { id: 'verifyPacket.node', label: 'verifyPacket  node', fn: () => verifyPacket(topic, packet, { now: NOW, backend: 'node' }).seq },
  { id: 'verifyPacket.noble', label: 'verifyPacket  noble', fn: () => verifyPacket(topic, packet, { now: NOW, backend: 'noble' }).seq },
  { id: 'raw.node.sign', label: 'raw node:crypto.sign(Sig_structure)', fn: () => crypto.sign(null, toSign, privateKeyObject).length },
  { id: 'raw.node.verify', label: 'raw node:crypto.verify(Sig_structure)', fn: () => (crypto.verify(null, toSign, publicKeyObject, signature) ? 1 : 0) },
  { id: 'raw.noble.verify', label: 'raw noble ed.verify(Sig_structure)', fn: () => (ed.verify(signature, toSign, publicKey, { zip215: false }) ? 1 : 0) },
];

let sink = 0;

/** Runs `fn` `n` times; returns elapsed nanoseconds. */
function runBatch(fn: () => number, n: number): number {
  const t0 = process.hrtime.bigint();
  let s = 0;
  for (let i = 0; i < n; i++) s += fn();
  const dt = Number(process.hrtime.bigint() - t0);
  sink = (sink + s) | 0;
  return dt;
}

/** Warm-up for `ms`, growing the batch until one batch takes about BATCH_MS. */
function warmUp(fn: () => number, ms: number): number {
  let batch = 1;
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const dt = runBatch(fn, batch);
    if (dt < BATCH_MS * 1e6 && batch < 1 << 20) batch = Math.max(1, Math.min(batch * 2, Math.ceil((batch * BATCH_MS * 1e6) / Math.max(dt, 1))));
  }
  return batch;
}

/** Runs whole batches for at least `ms`; returns ops/s. */
function measure(fn: () => number, batch: number, ms: number): number {
  const limit = ms * 1e6;
  let ns = 0;
  let n = 0;
  while (ns < limit) {
    ns += runBatch(fn, batch);
    n += batch;
  }
  return n / (ns / 1e9);
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

// ------------------------------------------------------------------------------ run

if (!JSON_OUT) {
  const total = (ops.length * (WARMUP_MS + ROUNDS * ROUND_MS)) / 1000;
  process.stderr.write(`benchmarking ${ops.length} operations, ${ROUNDS} × ${ROUND_MS} ms each (about ${total.toFixed(0)} s) …\n`);
}

// Run order: each packet operation straight after its raw baseline (pairs for the ratios).
const RUN_ORDER = [
  'address',
  'encodePayload',
  'decodePacket',
  'raw.node.sign',
  'signPacket.node',
  'signPacket.noble',
  'raw.node.verify',
  'verifyPacket.node',
  'raw.noble.verify',
  'verifyPacket.noble',
].map((id) => {
  const i = ops.findIndex((o) => o.id === id);
  if (i < 0) throw new Error(`unknown op ${id}`);
  return i;
});
if (RUN_ORDER.length !== ops.length) throw new Error('RUN_ORDER must list every operation once');

const loadBefore = os.loadavg()[0] ?? 0;
const batches: number[] = ops.map(() => 1);
for (const i of RUN_ORDER) batches[i] = warmUp((ops[i] as Op).fn, WARMUP_MS);
const samples: number[][] = ops.map(() => []);
for (let r = 0; r < ROUNDS; r++) {
  for (const i of RUN_ORDER) (samples[i] as number[]).push(measure((ops[i] as Op).fn, batches[i] as number, ROUND_MS));
}
const loadAfter = os.loadavg()[0] ?? 0;

interface Result {
  readonly opsPerSec: number;
  readonly usPerOp: number;
  readonly rounds: readonly number[];
  /** (max - min) / median of the rounds. */
  readonly spread: number;
}
const results: Record<string, Result> = {};
ops.forEach((op, i) => {
  const rs = samples[i] as number[];
  const med = median(rs);
  results[op.id] = {
    opsPerSec: Math.round(med),
    usPerOp: Number((1e6 / med).toFixed(3)),
    rounds: rs.map((x) => Math.round(x)),
    spread: Number(((Math.max(...rs) - Math.min(...rs)) / med).toFixed(4)),
  };
});
const roundsOf = (id: string): readonly number[] => samples[ops.findIndex((o) => o.id === id)] as number[];

interface Ratio {
  readonly label: string;
  /** Median over rounds of (numerator rate / denominator rate in the same round). */
  readonly value: number;
  /** The per-round ratios. */
  readonly rounds: readonly number[];
  readonly goal?: number;
  readonly pass?: boolean;
}
const ratio = (label: string, num: string, den: string, goal?: number): Ratio => {
  const n = roundsOf(num);
  const d = roundsOf(den);
  const perRound = n.map((x, r) => x / (d[r] as number));
  const value = median(perRound);
  return {
    label,
    value: Number(value.toFixed(4)),
    rounds: perRound.map((x) => Number(x.toFixed(4))),
    ...(goal !== undefined ? { goal, pass: value >= goal } : {}),
  };
};
const ratios: Record<string, Ratio> = {
  verifyNode: ratio('packet verify (node) / raw node:crypto verify', 'verifyPacket.node', 'raw.node.verify', GOAL),
  signNode: ratio('sign+encode (node) / raw node:crypto sign', 'signPacket.node', 'raw.node.sign', GOAL),
  verifyNoble: ratio('packet verify (noble) / raw noble verify', 'verifyPacket.noble', 'raw.noble.verify'),
};

const env = {
  node: process.version,
  platform: `${process.platform} ${process.arch}`,
  cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
  cpus: os.cpus().length,
  openssl: process.versions.openssl ?? 'unknown',
};

if (JSON_OUT) {
  process.stdout.write(
    JSON.stringify({
      ...env,
      packetBytes: packet.length,
      sigStructureBytes: toSign.length,
      payloadBytes: sign1.payload.length,
      topicBytes: utf8Bytes(topic).length,
      roundMs: ROUND_MS,
      rounds: ROUNDS,
      warmupMs: WARMUP_MS,
      loadavg1m: { before: loadBefore, after: loadAfter },
      results,
      ratios,
    }) + '\n',
  );
} else {
  const fmtInt = (x: number): string => Math.round(x).toLocaleString('en-US');
  const lines: string[] = [];
  lines.push(`qis-mqtt core benchmark — node ${env.node} (${env.platform}, OpenSSL ${env.openssl}), ${env.cpus} × ${env.cpu}`);
  lines.push(
    `packet: ${packet.length} bytes (protocol-v1 packet[0], bearing-failure, 4 fields); payload ${sign1.payload.length} B, ` +
      `Sig_structure ${toSign.length} B, topic ${utf8Bytes(topic).length} B`,
  );
  lines.push(`method: warm-up ${WARMUP_MS} ms, then ${ROUNDS} interleaved rounds of ${ROUND_MS} ms per operation; median round shown`);
  lines.push(`load average (1 min): ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after (other work on the ${env.cpus} CPUs makes every figure noisier)`);
  lines.push('');
  const W = 40;
  lines.push(`${'operation'.padEnd(W)}${'ops/s'.padStart(12)}${'µs/op'.padStart(11)}${'spread'.padStart(9)}`);
  lines.push('-'.repeat(W + 32));
  for (const op of ops) {
    const r = results[op.id] as Result;
    lines.push(
      `${op.label.padEnd(W)}${fmtInt(r.opsPerSec).padStart(12)}${r.usPerOp.toFixed(2).padStart(11)}${`±${((r.spread * 100) / 2).toFixed(1)}%`.padStart(9)}`,
    );
  }
  lines.push('');
  lines.push('ratios (median of per-round ratios, range in brackets; goal: ≥ 80 % of the raw rate)');
  for (const r of Object.values(ratios)) {
    const verdict = r.goal === undefined ? '(no goal)' : `${r.pass ? 'PASS' : 'MISS'} (goal ≥ ${(r.goal * 100).toFixed(0)} %)`;
    const range = `[${(Math.min(...r.rounds) * 100).toFixed(0)}–${(Math.max(...r.rounds) * 100).toFixed(0)}]`;
    lines.push(`  ${r.label.padEnd(48)}${`${(r.value * 100).toFixed(1)} %`.padStart(8)} ${range.padEnd(10)} ${verdict}`);
  }
  const noisy = ops.filter((op) => (results[op.id] as Result).spread / 2 > 0.1).map((op) => op.id);
  if (noisy.length > 0) {
    lines.push('');
    lines.push(`note: rounds varied by more than ±10 % (${noisy.join(', ')}): the machine was busy; run again before trusting a ratio`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
if (sink === 0.5) process.stderr.write('\n'); // keeps `sink` observable
