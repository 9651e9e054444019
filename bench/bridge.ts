/**
 * Firmware-bridge benchmark. First part, Sparkplug B: what one DDATA costs the bridge, decoded
 * with Eclipse Tahu's schema-level decoder (`decodeSparkplugPayload`) and taken by the edge-node
 * state (seq check, alias lookup, birth datatypes, Template and DataSet spreading), against
 * Tahu's host-level `decodePayload` alone on the same bytes, in the same run: the cost of the
 * bridge's step over what any Tahu-based host application pays to decode. Two payloads: 10 scalar
 * metrics by alias, and a UDT (Template of 10 members) with a 10×3 DataSet.
 *
 *   npm run build && node dist/bench/bridge.js [--json] [--ms=600] [--rounds=5]
 *
 * Rounds are interleaved (the bridge, then the baseline, then the next round); the table shows the
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
import { decodeSparkplugPayload, EdgeNodeState, ModbusTcpClient, parseModbusConfig, readMachine, type ModbusMachine } from '../firmware-bridge/index.js';
import { JSON_OUT, optNum } from './args.js';
import { freePort, waitForPort } from './net.js';

const require = createRequire(import.meta.url);
const sp = (require('sparkplug-payload') as { get(ns: string): { encodePayload(p: object): Uint8Array; decodePayload(b: Uint8Array): unknown } }).get('spBv1.0');

const ROUND_MS = optNum('ms', 600);
const ROUNDS = Math.round(optNum('rounds', 5));

interface Case {
  readonly label: string;
  readonly birth: object[];
  readonly data: object[];
}
// A typical DDATA: 10 metrics by alias (ints, floats, booleans), as an edge node sends them.
const types = ['UInt16', 'Float', 'Int32', 'Boolean', 'Double'];
const scalars = Array.from({ length: 10 }, (_, i) => {
  const type = types[i % types.length]!;
  return { alias: i + 1, type, value: type === 'Boolean' ? i % 2 === 0 : type === 'Int32' ? -1000 * i : i * 1.25 };
});
// A UDT instance of 10 members and a 10-row DataSet of 3 columns (UInt32, not Int32: Tahu's
// decodePayload throws on an Int8/16/32 DataSet column, getDataSetValue has no case for intValue).
const udt = { alias: 1, type: 'Template', value: { isDefinition: false, templateRef: 'Press', metrics: scalars.map(({ alias, ...m }) => ({ ...m, name: `Member ${alias}` })) } };
const table = { alias: 2, type: 'DataSet', value: { numOfColumns: 3, columns: ['Step', 'Temp', 'Done'], types: ['UInt32', 'Double', 'Boolean'], rows: Array.from({ length: 10 }, (_, i) => [i, 20 + i * 0.5, i % 2 === 0]) } };
const CASES: Case[] = [
  { label: '10 scalar metrics', birth: scalars.map((m, i) => ({ ...m, name: `Line/Metric ${i}` })), data: scalars },
  { label: 'Template (10 members) + DataSet (10×3)', birth: [{ ...udt, name: 'Press' }, { ...table, name: 'Recipe' }], data: [udt, table] },
];

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
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const spread = (xs: number[]): number => (Math.max(...xs) - Math.min(...xs)) / median(xs);

let sink = 0;
function measure(c: Case): { label: string; bytes: number; bridgePerS: number; tahuDecodePerS: number; ratio: number; values: number; noisy: boolean } {
  // A node born once; each DDATA continues its seq (the 256 seq values encoded up front).
  const state = new EdgeNodeState();
  state.handle('NBIRTH', undefined, decodeSparkplugPayload(sp.encodePayload({ timestamp: 0, seq: 0, metrics: [] })));
  state.handle('DBIRTH', 'd', decodeSparkplugPayload(sp.encodePayload({ timestamp: 0, seq: 1, metrics: c.birth })));
  const payloads = Array.from({ length: 256 }, (_, s) => sp.encodePayload({ timestamp: 0, seq: s, metrics: c.data }));
  let seq = 2;
  let values = 0;
  const bridge = (): void => {
    const r = state.handle('DDATA', 'd', decodeSparkplugPayload(payloads[seq]!));
    if (r.kind === 'update') values = r.values.size;
    seq = (seq + 1) % 256;
  };
  const tahu = (): void => {
    if (sp.decodePayload(payloads[seq]!)) sink++;
  };
  for (const f of [bridge, tahu]) rate(f); // warm-up
  const a: number[] = [];
  const b: number[] = [];
  const ratio: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    a.push(rate(bridge));
    b.push(rate(tahu));
    ratio.push(a[i]! / b[i]!);
  }
  return { label: c.label, bytes: payloads[2]!.length, bridgePerS: Math.round(median(a)), tahuDecodePerS: Math.round(median(b)), ratio: Number(median(ratio).toFixed(2)), values, noisy: spread(a) > 0.2 || spread(b) > 0.2 };
}

const sparkplug = CASES.map(measure);
const loadavg = os.loadavg().map((x) => Number(x.toFixed(2)));
if (sink < 0) console.log(sink);
const modbus = await modbusReads().catch((e: unknown) => ({ skipped: (e as Error).message }));
if (JSON_OUT) console.log(JSON.stringify({ sparkplug, loadavg, modbus }));
else {
  console.log(`Sparkplug B DDATA, median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms:`);
  for (const c of sparkplug) {
    console.log(`  ${c.label} (${c.bytes} bytes, ${c.values} values)${c.noisy ? '  (rounds varied by more than ±10 %)' : ''}`);
    console.log(`    bridge: Tahu schema decode + edge-node state step  ${c.bridgePerS.toLocaleString('en')} /s`);
    console.log(`    Tahu sparkplug-payload decodePayload alone          ${c.tahuDecodePerS.toLocaleString('en')} /s (baseline, same run)`);
    console.log(`    ratio                                               ${c.ratio}×`);
  }
  console.log(`  load average ${loadavg.join(' ')}`);
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
