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
 *
 * Second part: Modbus reads per second against a real pymodbus server (Debian python3-pymodbus,
 * test/fixtures/modbus-server.py) over loopback TCP, for a machine of 20 readings polled back to
 * back, each reading its own request (maxBlock 1) against block reads (default maxGap and
 * maxBlock), interleaved in the same run. Skipped (said so) when pymodbus is missing.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { decodeSparkplugPayload, EdgeNodeState, metricValue, ModbusTcpClient, parseModbusConfig, readMachine, type ModbusMachine } from '../firmware-bridge/index.js';
import { JSON_OUT, optNum } from './args.js';
import { freePort, waitForPort } from './net.js';

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
const modbus = await modbusReads().catch((e: unknown) => ({ skipped: (e as Error).message }));
if (JSON_OUT) console.log(JSON.stringify({ ...result, modbus }));
else {
  console.log(`Sparkplug B DDATA decode (${result.bytes} bytes, ${result.metrics} metrics), median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms:`);
  console.log(`  bridge reader + metric values   ${result.oursPerS.toLocaleString('en')} /s`);
  console.log(`  sparkplug-payload decodePayload ${result.sparkplugPayloadPerS.toLocaleString('en')} /s (baseline, same run)`);
  console.log(`  ratio                           ${result.ratio}×`);
  console.log(`  edge-node state step (seq, aliases) on decoded payloads ${result.stateStepPerS.toLocaleString('en')} /s`);
  console.log(`  load average ${result.loadavg.join(' ')}${result.noisy ? '  (rounds varied by more than ±10 %)' : ''}`);
  if ('skipped' in modbus) console.log(`Modbus reads against pymodbus: skipped (${modbus.skipped})`);
  else {
    console.log(`Modbus reads against a pymodbus server (loopback TCP, ${modbus.readings} readings a poll, 10 uint16 + 10 float32), median of ${ROUNDS} interleaved rounds:`);
    console.log(`  one request per reading (maxBlock 1)  ${modbus.perRequestReadsPerS.toLocaleString('en')} readings/s (baseline, same run)`);
    console.log(`  block reads (maxGap 10, maxBlock 100) ${modbus.blockReadsPerS.toLocaleString('en')} readings/s`);
    console.log(`  ratio                                 ${modbus.ratio}×`);
  }
}

/** Reads per second, per-request against block reads, against a pymodbus server (same run). */
async function modbusReads(): Promise<{ readings: number; perRequestReadsPerS: number; blockReadsPerS: number; ratio: number } | { skipped: string }> {
  const port = await freePort();
  const script = fileURLToPath(new URL('../../test/fixtures/modbus-server.py', import.meta.url));
  const child = spawn('/usr/bin/python3', [script, String(port), 'hr 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await Promise.race([waitForPort(port, Date.now() + 15_000), exited.then(() => Promise.reject(new Error(`pymodbus server did not start: ${stderr.trim().split('\n').pop() ?? ''}`)))]);
    const readings = Array.from({ length: 20 }, (_, i) => `      r${i}: { table: holding, address: ${i < 10 ? i : 10 + (i - 10) * 2}, type: ${i < 10 ? 'uint16' : 'float32'} }`).join('\n');
    const template = fileURLToPath(new URL('../../examples/press-bearing.yaml', import.meta.url));
    const machine = async (device: string): Promise<ModbusMachine> =>
      (await parseModbusConfig(`broker: mqtt://127.0.0.1:1
dataDir: /nonexistent
machines:
  - name: m
    template: ${template}
    device: { host: 127.0.0.1, port: ${port}${device} }
    readings:
${readings}
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: 1, sealed: true }
    outcomes: [{ when: { change: r0 }, outcome: failure }]
`, 'bench.yaml')).machines[0]!;
    const single = await machine(', maxBlock: 1');
    const block = await machine('');
    const client = await ModbusTcpClient.connect('127.0.0.1', port, 2000);
    try {
      const rateOf = async (m: ModbusMachine): Promise<number> => {
        const end = performance.now() + ROUND_MS;
        let n = 0;
        while (performance.now() < end) {
          await readMachine(client, m, () => undefined);
          n += m.readings.size;
        }
        return n / (ROUND_MS / 1000);
      };
      await rateOf(single);
      await rateOf(block); // warm-up
      const a: number[] = [];
      const b: number[] = [];
      const ratio: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        a.push(await rateOf(single));
        b.push(await rateOf(block));
        ratio.push(b[i]! / a[i]!);
      }
      return { readings: 20, perRequestReadsPerS: Math.round(median(a)), blockReadsPerS: Math.round(median(b)), ratio: Number(median(ratio).toFixed(2)) };
    } finally {
      client.close();
    }
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}
