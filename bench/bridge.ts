/**
 * Firmware-bridge benchmark: decoding a Sparkplug B DDATA payload with the bridge's own reader
 * (`decodeSparkplugPayload` + `metricValue` for every metric) against Eclipse Tahu's
 * `sparkplug-payload` (protobufjs) decoding the same bytes in the same run, and the edge-node
 * state step (seq check, alias lookup) on top.
 *
 *   npm run build && node dist/bench/bridge.js [--json] [--ms=600] [--rounds=5]
 *
 * Rounds are interleaved (ours, then the baseline, then the next round); the table shows the
 * median round and the ratio is the median of the per-round ratios.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import { decodeSparkplugPayload, EdgeNodeState, metricValue } from '../firmware-bridge/index.js';
import { JSON_OUT, optNum } from './args.js';

const require = createRequire(import.meta.url);
const sp = (require('sparkplug-payload') as { get(ns: string): { encodePayload(p: object): Uint8Array; decodePayload(b: Uint8Array): unknown } }).get('spBv1.0');

const ROUND_MS = optNum('ms', 600);
const ROUNDS = Math.round(optNum('rounds', 5));

// A typical DDATA: 10 metrics by alias (ints, floats, booleans), as an edge node sends them.
const types = ['UInt16', 'Float', 'Int32', 'Boolean', 'Double'];
const metrics = Array.from({ length: 10 }, (_, i) => {
  const type = types[i % types.length]!;
  return { alias: i + 1, type, value: type === 'Boolean' ? i % 2 === 0 : type === 'Int32' ? -1000 * i : i * 1.25 };
});
const birth = sp.encodePayload({ timestamp: Date.now(), seq: 1, metrics: metrics.map((m, i) => ({ ...m, name: `Line/Metric ${i}` })) });
const data = sp.encodePayload({ timestamp: Date.now(), seq: 2, metrics });

function rate(fn: () => void): number {
  const end = performance.now() + ROUND_MS;
  let n = 0;
  let now = performance.now();
  while (now < end) {
    for (let i = 0; i < 200; i++) fn();
    n += 200;
    now = performance.now();
  }
  return n / (ROUND_MS / 1000);
}

let sink = 0;
const ours = (): void => {
  const p = decodeSparkplugPayload(data);
  for (const m of p.metrics) if (metricValue(m, undefined) !== undefined) sink++;
};
const theirs = (): void => {
  if (sp.decodePayload(data)) sink++;
};
// The state step: a fresh node born once, then each DDATA continues its seq.
const state = new EdgeNodeState();
state.handle('NBIRTH', undefined, decodeSparkplugPayload(sp.encodePayload({ timestamp: 0, seq: 0, metrics: [] })));
state.handle('DBIRTH', 'd', decodeSparkplugPayload(birth));
let seq = 2;
const payloads = Array.from({ length: 256 }, (_, s) => decodeSparkplugPayload(sp.encodePayload({ timestamp: 0, seq: s, metrics })));
const step = (): void => {
  const r = state.handle('DDATA', 'd', payloads[seq]!);
  if (r.kind === 'update') sink += r.values.size;
  seq = (seq + 1) % 256;
};

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const f of [ours, theirs, step]) rate(f); // warm-up
const r: { ours: number[]; theirs: number[]; step: number[]; ratio: number[] } = { ours: [], theirs: [], step: [], ratio: [] };
for (let i = 0; i < ROUNDS; i++) {
  const a = rate(ours);
  const b = rate(theirs);
  r.ours.push(a);
  r.theirs.push(b);
  r.ratio.push(a / b);
  r.step.push(rate(step));
}
const spread = (xs: number[]): number => (Math.max(...xs) - Math.min(...xs)) / median(xs);
const result = {
  bytes: data.length,
  metrics: metrics.length,
  oursPerS: Math.round(median(r.ours)),
  sparkplugPayloadPerS: Math.round(median(r.theirs)),
  ratio: Number(median(r.ratio).toFixed(2)),
  stateStepPerS: Math.round(median(r.step)),
  noisy: spread(r.ours) > 0.2 || spread(r.theirs) > 0.2,
  loadavg: os.loadavg().map((x) => Number(x.toFixed(2))),
};
if (sink < 0) console.log(sink);
if (JSON_OUT) console.log(JSON.stringify(result));
else {
  console.log(`Sparkplug B DDATA decode (${result.bytes} bytes, ${result.metrics} metrics), median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms:`);
  console.log(`  bridge reader + metric values   ${result.oursPerS.toLocaleString('en')} /s`);
  console.log(`  sparkplug-payload decodePayload ${result.sparkplugPayloadPerS.toLocaleString('en')} /s (baseline, same run)`);
  console.log(`  ratio                           ${result.ratio}×`);
  console.log(`  edge-node state step (seq, aliases) on decoded payloads ${result.stateStepPerS.toLocaleString('en')} /s`);
  console.log(`  load average ${result.loadavg.join(' ')}${result.noisy ? '  (rounds varied by more than ±10 %)' : ''}`);
}
