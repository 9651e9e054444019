// Pure parts of the firmware bridge: Modbus framing and register decoding (expected bytes written
// out from the Modbus Application Protocol spec and IEEE 754, not produced by the code), the
// config parser's errors, and the mapping's triggers.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isQisError } from '../src/index.js';
import {
  decodeRegisters,
  encodeReadRequest,
  isSkip,
  loadModbusConfig,
  MachineMapper,
  ModbusException,
  parseModbusConfig,
  parseReadResponse,
  parseSparkplugConfig,
  takeFrame,
  type Emission,
} from '../firmware-bridge/index.js';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-cfg-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
copyFileSync(join(examples, 'press-bearing.yaml'), join(dir, 'press-bearing.yaml'));
copyFileSync(join(examples, 'press-temperature.yaml'), join(dir, 'press-temperature.yaml'));
const file = join(dir, 'bridge.yaml');

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s/g, ''), 'hex');

t.test('modbus - request framing: MBAP header and PDU', async (t) => {
  // tx 0x0102, protocol 0, length 6, unit 17, function 3, address 0x006B, count 3 (the spec's example PDU)
  t.same(encodeReadRequest(0x0102, 17, 3, 0x006b, 3), hex('0102 0000 0006 11 03 006B 0003'));
  t.same(encodeReadRequest(1, 1, 1, 19, 19), hex('0001 0000 0006 01 01 0013 0013'));
});

t.test('modbus - response frames: split, whole, registers, bits, exceptions', async (t) => {
  const frame = hex('0102 0000 0009 11 03 06 022B 0000 0064');
  t.equal(takeFrame(frame.subarray(0, 8)), undefined, 'incomplete: wait for more');
  const two = Buffer.concat([frame, frame.subarray(0, 3)]);
  const f = takeFrame(two)!;
  t.equal(f.txId, 0x0102);
  t.equal(f.unitId, 17);
  t.same(f.rest, frame.subarray(0, 3));
  t.same(parseReadResponse(f.pdu, 3, 3), hex('022B 0000 0064'));
  // Coils 20..38 of the spec's example: CD 6B 05 → bits LSB first
  const bits = parseReadResponse(hex('01 03 CD 6B 05'), 1, 19) as boolean[];
  t.same(bits.map((b) => (b ? 1 : 0)).join(''), '1011001111010110101');
  const ex = (() => {
    try {
      parseReadResponse(hex('83 02'), 3, 1);
    } catch (e) {
      return e;
    }
  })();
  t.ok(ex instanceof ModbusException);
  t.equal((ex as ModbusException).code, 'ERR_MODBUS_EXCEPTION');
  t.equal((ex as ModbusException).exception, 2);
  t.match((ex as Error).message, /illegal data address/);
  t.throws(() => parseReadResponse(hex('03 04 0000'), 3, 2), { code: 'ERR_DEVICE_UNREACHABLE' }, 'byte count and data disagree');
  t.throws(() => takeFrame(hex('0001 0007 0003 01 03 00')), { code: 'ERR_DEVICE_UNREACHABLE' }, 'not protocol 0');
  t.throws(() => takeFrame(hex('0001 0000 0002 01 03')), { code: 'ERR_DEVICE_UNREACHABLE' }, 'MBAP length 2: no room for a function and its data');
  t.throws(() => parseReadResponse(hex('03'), 3, 1), { code: 'ERR_DEVICE_UNREACHABLE' }, 'a function code without a byte count');
  t.throws(() => parseReadResponse(hex(''), 3, 1), { code: 'ERR_DEVICE_UNREACHABLE' }, 'an empty PDU');
});

t.test('modbus - register types, word order, scale and offset', async (t) => {
  t.equal(decodeRegisters(hex('FFFE'), 'int16'), -2);
  t.equal(decodeRegisters(hex('FFFE'), 'uint16'), 65534);
  t.equal(decodeRegisters(hex('FFFF FFFE'), 'int32'), -2);
  t.equal(decodeRegisters(hex('0001 0000'), 'uint32'), 65536);
  t.equal(decodeRegisters(hex('0000 0001'), 'uint32', 'little'), 65536, 'low word first');
  t.equal(decodeRegisters(hex('3FC0 0000'), 'float32'), 1.5);
  t.equal(decodeRegisters(hex('0000 3FC0'), 'float32', 'little'), 1.5);
  t.equal(decodeRegisters(hex('00FA'), 'int16', 'big', 0.1, -5), 250 * 0.1 - 5);
});

const config = (machine: string, extra = ''): string => `
broker: mqtt://127.0.0.1:1883
dataDir: data
${extra}
machines:
  - name: press-7
    template: press-bearing.yaml
    device: { host: 127.0.0.1, port: 5020 }
    readings:
      fault: { table: holding, address: 0 }
      load: { table: holding, address: 2, type: float32 }
      hours: { table: input, address: 0, type: uint32, scale: 0.1 }
      temp: { table: input, address: 4, type: int16 }
      sealed: { table: coil, address: 0 }
${machine}`;
const mapping = `    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    context: { run_hours: { reading: hours }, temp_c: { reading: temp } }
    outcomes:
      - { when: { change: fault, from: 0 }, outcome: failure, conf: 0.9 }
      - { when: { threshold: temp, above: 90 }, outcome: failure, conf: 0.5 }
      - { when: { every: 10m }, template: press-temperature.yaml, outcome: { reading: temp } }`;

async function refusal(text: string, parse: (text: string, file: string) => Promise<unknown> = parseModbusConfig): Promise<string> {
  try {
    await parse(text, file);
  } catch (e) {
    if (isQisError(e) && e.code === 'ERR_CONFIG_INVALID') return e.message;
    throw e;
  }
  throw new Error('the config was accepted');
}

t.test('config - a valid modbus config resolves defaults and paths', async (t) => {
  writeFileSync(file, config(mapping));
  const c = await loadModbusConfig(file);
  t.equal(c.dataDir, join(dir, 'data'), 'relative to the config file');
  const m = c.machines[0]!;
  t.same(m.device, { protocol: 'tcp', host: '127.0.0.1', port: 5020, unitId: 1, pollMs: 1000, timeoutMs: 1000, maxGap: 10, maxBlock: 100 });
  t.same(m.readings.get('fault'), { table: 'holding', address: 0, type: 'uint16', byteOrder: 'ABCD', scale: 1, offset: 0, count: 1 });
  t.equal(m.rules.length, 3);
  t.same(m.rules[2]!.when, { kind: 'every', everyMs: 600_000 });
  t.equal(m.rules[2]!.template.doc.name, 'press-temperature');
});

t.test('config - the example config is valid', async (t) => {
  const c = await loadModbusConfig(join(examples, 'modbus-bridge.yaml'));
  t.equal(c.machines[0]!.name, 'press-7');
  t.equal(c.machines[0]!.rules.length, 3);
  t.same(c.machines[0]!.readings.get('run_hours'), { table: 'input', address: 2, type: 'uint32', byteOrder: 'CDAB', scale: 0.1, offset: 0, count: 2 });
});

t.test('config - the worked examples of firmware-bridge/README.md are valid', async (t) => {
  const meter = await loadModbusConfig(join(examples, 'modbus-rtu-energy-meter.yaml'));
  const mm = meter.machines[0]!;
  t.match(mm.device, { protocol: 'rtu', host: '', port: 0, unitId: 1, pollMs: 2000, serial: { path: '/dev/ttyUSB0', baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1 } });
  // "30001" is input register 0; "30053" input 52; "30343" input 342 (float32: two registers).
  t.same(mm.readings.get('voltage_l1_v'), { table: 'input', address: 0, type: 'float32', byteOrder: 'ABCD', scale: 1, offset: 0, count: 2 });
  t.same([mm.readings.get('power_w')!.address, mm.readings.get('energy_kwh')!.address], [52, 342]);
  t.same(mm.rules.map((r) => r.when), [{ kind: 'every', everyMs: 900_000 }, { kind: 'threshold', reading: 'power_w', above: 50_000, hysteresis: 5000, debounceMs: 10_000 }]);
  t.same(meter.http, { host: '127.0.0.1', port: 9101 });

  const plc = await loadModbusConfig(join(examples, 'modbus-tcp-plc-status-word.yaml'));
  const pm = plc.machines[0]!;
  t.match(pm.device, { protocol: 'tcp', host: '192.0.2.20', port: 502 });
  // "40101" is holding address 100: the status word, read as its bit 5.
  t.same(pm.readings.get('fault'), { table: 'holding', address: 100, type: 'uint16', byteOrder: 'ABCD', scale: 1, offset: 0, count: 1, bit: 5 });
  t.same(pm.readings.get('running'), { table: 'holding', address: 100, type: 'uint16', byteOrder: 'ABCD', scale: 1, offset: 0, count: 1, bit: 0 });
  t.same(pm.rules.map((r) => r.when), [{ kind: 'change', reading: 'fault', to: true }, { kind: 'change', reading: 'fault', to: false }]);
});

t.test('config - each error names the file, the key and what was expected', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['unknown top-level key', config(mapping, 'extra: 1'), /bridge\.yaml: \(top level\)\.extra: expected one of the keys/],
    ['bad port', config(mapping).replace('port: 5020', 'port: 70000'), /machines\[0\]\.device\.port: expected an integer ≥ 1 ≤ 65535, got 70000/],
    ['bad table', config(mapping).replace('table: holding, address: 0 }', 'table: holdings, address: 0 }'), /machines\[0\]\.readings\.fault\.table: expected one of holding, input, coil, discrete, got "holdings"/],
    ['type on a coil', config(mapping).replace('{ table: coil, address: 0 }', '{ table: coil, address: 0, type: int16 }'), /machines\[0\]\.readings\.sealed\.type: expected nothing: a coil reads as true\/false/],
    ['unknown reading', config(mapping).replace('{ reading: load }', '{ reading: lod }'), /machines\[0\]\.situation\.load_kn\.reading: expected the name of a reading of this machine/],
    ['missing field', config(mapping).replace('sealed: { reading: sealed } }', '}'), /machines\[0\]\.situation\.sealed: expected a value for the template's field "sealed"/],
    ['constant off the closed set', config(mapping).replace('bearing_type: roller', 'bearing_type: needle'), /machines\[0\]\.situation\.bearing_type: expected a value that fits the field/],
    ['unknown label', config(mapping).replace('outcome: failure, conf: 0.9', 'outcome: broken'), /machines\[0\]\.outcomes\[0\]\.outcome: expected one of the template's labels \(no_failure, failure\), got "broken"/],
    ['two triggers', config(mapping).replace('{ change: fault, from: 0 }', '{ change: fault, every: 10m }'), /machines\[0\]\.outcomes\[0\]\.when: expected exactly one trigger/],
    ['bad duration', config(mapping).replace('every: 10m', 'every: soon'), /machines\[0\]\.outcomes\[2\]\.when\.every: expected a duration/],
    ['context key not in template', config(mapping).replace('temp_c: { reading: temp }', 'rpm: 3'), /machines\[0\]\.context\.rpm: expected one of the keys run_hours, temp_c/],
    ['missing template file', config(mapping).replace('template: press-bearing.yaml', 'template: nope.yaml'), /machines\[0\]\.template: expected a loadable template/],
    ['conf out of range', config(mapping).replace('conf: 0.9', 'conf: 2'), /machines\[0\]\.outcomes\[0\]\.conf: expected a number ≥ 0 ≤ 1, got 2/],
    ['bad broker url', config(mapping).replace('mqtt://127.0.0.1:1883', 'http://x'), /broker: expected an mqtt:\/\//],
    ['duplicate machine', config(mapping + '\n' + `  - name: press-7
    template: press-bearing.yaml
    device: { host: h }
    readings: {}
    situation: { machine_model: A, bearing_type: ball, load_kn: 1, sealed: true }
    outcomes: [{ when: { every: 1h }, outcome: failure }]`), /machines\[1\]\.name: expected a name no other machine has/],
    ['not YAML', 'a: [1', /bridge\.yaml: not valid YAML/],
  ];
  for (const [name, text, re] of cases) t.match(await refusal(text), re, name);
  t.match(await refusal('broker: mqtt://h\ndataDir: d\nmachines: []', parseSparkplugConfig), /sparkplug: expected a mapping, got nothing/);
  t.match(
    await refusal(`broker: mqtt://h
dataDir: d
sparkplug: { url: mqtt://f, group: "a/b" }
machines: []`, parseSparkplugConfig),
    /sparkplug\.group: expected a Sparkplug group id/,
  );
  await t.rejects(loadModbusConfig(join(dir, 'missing.yaml')), { code: 'ERR_CONFIG_INVALID', message: /missing\.yaml: cannot read the config/ });
});

t.test('mapping - change, threshold and periodic triggers', async (t) => {
  writeFileSync(file, config(mapping));
  const m = (await loadModbusConfig(file)).machines[0]!;
  const mapper = new MachineMapper(m);
  const v = (o: Record<string, number | boolean>): Map<string, number | boolean> => new Map(Object.entries(o));
  t.same(mapper.update(v({ fault: 3, load: 42.5, hours: 100, temp: 95, sealed: true })), [], 'first values are a baseline, even a fault or a high temperature');
  t.same(mapper.update(v({ fault: 0, temp: 80 })), [], 'fault 3 → 0 is not "leaving 0"; temperature falling is not crossing above');
  const fired = mapper.update(v({ fault: 5, temp: 91, hours: 101.5 }));
  t.equal(fired.length, 2);
  const [a, b] = fired as Emission[];
  t.same(a, {
    machine: 'press-7',
    rule: 'machines[0].outcomes[0]',
    template: m.rules[0]!.template,
    situation: { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true },
    ctx: { run_hours: 101.5, temp_c: 91 },
    outcome: 'failure',
    conf: 0.9,
    ts: 0,
  });
  t.equal(b!.rule, 'machines[0].outcomes[1]');
  t.same(mapper.update(v({ fault: 6, temp: 92 })), [], 'fault 5 → 6 does not leave 0; still above 90 is no new crossing');
  const periodic = mapper.build(m.rules[2]!) as Emission;
  t.same(periodic.outcome, 92);
  t.same(periodic.ctx, { run_hours: 101.5 }, "only the periodic template's context");
  const fresh = new MachineMapper(m);
  fresh.update(v({ fault: 0, temp: 50 }));
  const skipped = fresh.update(v({ fault: 1 }));
  t.equal(skipped.length, 1);
  t.ok(isSkip(skipped[0]!));
  t.match(skipped[0], { reason: /no value yet for load, sealed/ });
});

t.test('mapping - threshold hysteresis and debounce (clock passed in)', async (t) => {
  const text = config(`    situation: { machine_model: KX-200, bearing_type: roller, load_kn: 1, sealed: true }
    outcomes:
      - { when: { threshold: temp, above: 90, hysteresis: 5, debounce: 2s }, outcome: failure }
      - { when: { threshold: temp, below: 10, hysteresis: 2 }, outcome: no_failure }`);
  const m = (await parseModbusConfig(text, file)).machines[0]!;
  t.match(m.rules[0]!.when, { kind: 'threshold', above: 90, hysteresis: 5, debounceMs: 2000 });
  const mapper = new MachineMapper(m);
  const at = (temp: number, now: number): string[] => mapper.update(new Map([['temp', temp]]), now).map((e) => (isSkip(e) ? `skip ${e.reason}` : `${e.outcome}@${(e as Emission).ts}`));
  t.same(at(80, 0), [], 'baseline');
  t.same(at(95, 1000), [], 'above, debouncing');
  t.same(at(89, 2000), [], 'back below before the debounce time: no fire');
  t.same(at(95, 3000), [], 'above again: the debounce starts anew');
  t.same(at(96, 4000), [], '1 s above');
  t.same(at(97, 5000), ['failure@5000'], '2 s above: fires, ts when observed');
  t.same(at(88, 6000), [], 'below 90 but not by the hysteresis of 5');
  t.same(at(95, 7000), [], 'no re-arm: no new debounce either');
  t.same(at(95, 10_000), [], 'still not re-armed');
  t.same(at(85, 11_000), [], 're-armed at 85');
  t.same(at(91, 12_000), [], 'debouncing again');
  t.same(at(91, 14_000), ['failure@14000']);
  t.same(at(9, 15_000), ['no_failure@15000'], 'below 10 fires at once (no debounce)');
  t.same(at(11, 16_000), [], 'within the hysteresis of 2');
  t.same(at(9, 17_000), [], 'not re-armed');
  t.same(at(12, 18_000), [], 're-armed at 12');
  t.same(at(9.5, 19_000), ['no_failure@19000']);
});

t.test('mapping - stale and bad readings publish nothing, each reason said once; state survives a restart', async (t) => {
  writeFileSync(file, config(mapping));
  const m = (await loadModbusConfig(file)).machines[0]!;
  const every = m.rules[2]!;
  const mapper = new MachineMapper(m);
  const v = (o: Record<string, number | boolean>): Map<string, number | boolean> => new Map(Object.entries(o));
  mapper.update(v({ fault: 0, load: 42.5, hours: 100, temp: 50, sealed: true }), 1000);
  t.match(mapper.periodic(every), [{ outcome: 50, ts: 1000 }], 'periodic: the value and when it was observed');
  mapper.markStale();
  t.match(mapper.periodic(every), [{ reason: /no current value for load \(stale\), sealed \(stale\), temp \(stale\)/ }], 'a stale reading: skipped, said once');
  t.same(mapper.periodic(every), [], 'not said again');
  t.same(mapper.periodic(every), []);
  // A fault appears while stale: the change fires on return (edges use the last value).
  t.match(mapper.update(v({ fault: 3, load: 42.5, hours: 100, temp: 51, sealed: true }), 5000), [{ outcome: 'failure', ts: 5000 }]);
  t.match(mapper.periodic(every), [{ outcome: 51, ts: 5000 }], 'periodic again once read');
  mapper.markBad(['temp']);
  t.match(mapper.periodic(every), [{ reason: /temp \(bad\)/ }]);
  t.same(mapper.periodic(every), []);
  // Restart: a new mapper from the snapshot (as JSON, as on disk).
  mapper.update(v({ temp: 95 }), 6000); // above 90: the threshold rule is active
  const saved = JSON.parse(JSON.stringify(mapper.snapshot())) as unknown;
  const next = new MachineMapper(m);
  next.restore(saved);
  t.equal(next.readings.get('fault')?.quality, 'stale', 'restored values are stale');
  t.match(next.periodic(every), [{ reason: /stale/ }], 'and never published');
  t.same(next.update(v({ temp: 96 }), 7000), [], 'the threshold stays fired across the restart (no second packet)');
  t.match(next.update(v({ fault: 0, load: 42.5, hours: 100, sealed: true }), 8000), [], 'fault 3 → 0 is not leaving 0');
  t.match(next.update(v({ fault: 4 }), 9000), [{ outcome: 'failure' }], 'edges continue from the restored values');
  const fresh = new MachineMapper(m);
  fresh.restore({ v: 1, readings: { fault: { value: 0, at: 1 }, nope: { value: 1, at: 1 }, load: { value: {}, at: 1 } }, thresholds: { junk: true } });
  t.same([...fresh.readings.keys()], ['fault'], 'unknown readings and bad values are not restored');
  fresh.restore('garbage');
  t.match(fresh.update(v({ fault: 2, load: 1, sealed: true }), 1), [{ outcome: 'failure' }], 'a restored 0 → 2 fires on the first poll');
});
