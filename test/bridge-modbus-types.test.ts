// Data types, byte orders, register notation and block reads against a real pymodbus server. The
// register words the server holds were computed outside this code (Python's struct.pack of each
// value, then the order's word and byte swaps), so every expected value is independent of the
// decoder under test. Request counts are the server's own.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModbusException, ModbusTcpClient, openTransport, parseModbusConfig, readMachine, startModbusBridge, type ModbusMachine } from '../firmware-bridge/index.js';
import { freePort } from './helpers/mosquitto.js';
import { countingProxy, startModbusRtuServer, startModbusServer, type ModbusServer } from './helpers/modbus-server.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { waitFor } from './helpers/wait.js';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-types-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const ORDERS = ['ABCD', 'DCBA', 'BADC', 'CDAB'] as const;
// int32 -123456789, uint32 3000000000, float32 3.14159, int64 -1234567890123, uint64 2^53-1,
// float64 -0.0025, in each order, at holding 10, 30, 50, 70.
const WORDS: Record<(typeof ORDERS)[number], string> = {
  ABCD: '63652 13035 45776 24064 16457 4048 65535 65248 36356 64309 31 65535 65535 65535 48996 31457 18350 5243',
  DCBA: '60210 42232 94 53426 53263 18752 13819 1166 57598 65535 65535 65535 65535 7936 31508 44615 57722 25791',
  BADC: '42232 60210 53426 94 18752 53263 65535 57598 1166 13819 7936 65535 65535 65535 25791 57722 44615 31508',
  CDAB: '13035 63652 24064 45776 4048 16457 64309 36356 65248 65535 65535 65535 65535 31 5243 18350 31457 48996',
};
const INITIAL = [
  ...ORDERS.map((o, k) => `hr ${10 + k * 20} ${WORDS[o]}`),
  'hr 0 65236 32', // int16 -300; a status word with only bit 5 set
  'hr 2 20809 21293 20556 17184 14080', // "QIS-PLC 7" NUL-padded, first character in the high byte
  'hr 92 18769 11603 19536 8259 55', // the same string, bytes swapped within each word (BADC)
  'ir 0 4', // an input register: bit 2 set
];
const EXPECTED = { int32: -123456789, uint32: 3000000000, float32: Math.fround(3.14159), int64: -1234567890123, uint64: 2 ** 53 - 1, float64: -0.0025 };
const OFFSETS = { int32: 0, uint32: 2, float32: 4, int64: 6, uint64: 10, float64: 14 };

function readingsYaml(): string {
  const lines = ['      temp: { address: "40001", type: int16 }', '      fault: { table: holding, address: 1, bit: 5 }', '      ok: { table: holding, address: 1, bit: 4 }', '      name: { table: holding, address: 2, type: string, length: 5 }', '      nameSwapped: { address: "400093", type: string, length: 5, byteOrder: BADC }', '      ready: { address: "30001", bit: 2 }'];
  ORDERS.forEach((o, k) => {
    for (const [type, off] of Object.entries(OFFSETS)) lines.push(`      ${type}_${o}: { table: holding, address: ${10 + k * 20 + off}, type: ${type}, byteOrder: ${o} }`);
  });
  return lines.join('\n');
}

const config = (port: number, device = '', extra = ''): string => `broker: mqtt://127.0.0.1:1
dataDir: ${join(dir, 'data')}
machines:
  - name: press-7
    template: ${join(examples, 'press-bearing.yaml')}
    device: { host: 127.0.0.1, port: ${port}, timeoutMs: 2000${device} }
    readings:
${readingsYaml()}${extra}
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: float32_ABCD }, sealed: { reading: fault } }
    outcomes:
      - { when: { change: temp }, outcome: failure }
`;

async function machineAt(port: number, device = '', extra = ''): Promise<ModbusMachine> {
  return (await parseModbusConfig(config(port, device, extra), join(dir, 'bridge.yaml'))).machines[0]!;
}

/** One poll of `m` and the read requests the server served for it. */
async function poll(server: ModbusServer, m: ModbusMachine): Promise<{ values: Map<string, unknown>; requests: number }> {
  const client = await ModbusTcpClient.connect('127.0.0.1', server.port, 2000);
  try {
    const before = await server.requests();
    const values = await readMachine(client, m, (reading, e) => {
      throw new Error(`${reading}: ${e.message}`);
    });
    return { values, requests: (await server.requests()) - before };
  } finally {
    client.close();
  }
}

t.test('modbus types - every type and byte order, strings, bits and register notation, decoded from the server', async (t) => {
  const server = await startModbusServer(await freePort(), INITIAL);
  t.teardown(() => server.kill());
  const m = await machineAt(server.port);
  t.match(m.readings.get('temp'), { table: 'holding', address: 0 }, '"40001" is holding address 0');
  t.match(m.readings.get('nameSwapped'), { table: 'holding', address: 92 }, '"400093" is holding address 92');
  t.match(m.readings.get('ready'), { table: 'input', address: 0 }, '"30001" is input address 0');
  const { values } = await poll(server, m);
  for (const o of ORDERS) for (const [type, want] of Object.entries(EXPECTED)) t.equal(values.get(`${type}_${o}`), want, `${type} ${o}`);
  t.equal(values.get('temp'), -300);
  t.equal(values.get('fault'), true, 'bit 5 of the status word');
  t.equal(values.get('ok'), false, 'bit 4 of the status word');
  t.equal(values.get('name'), 'QIS-PLC 7');
  t.equal(values.get('nameSwapped'), 'QIS-PLC 7');
  t.equal(values.get('ready'), true, 'bit 2 of an input register');
});

t.test('modbus types - notation and type errors name the key', async (t) => {
  const refused = async (extra: string, re: RegExp): Promise<void> => {
    await t.rejects(machineAt(1, '', `\n      x: ${extra}`), { code: 'ERR_CONFIG_INVALID', message: re }, extra);
  };
  await refused('{ address: "50001" }', /readings\.x\.address: expected a 0-based protocol address, or register notation/);
  await refused('{ address: "40001", table: input }', /readings\.x\.table: expected holding \(the address "40001" names that table\)/);
  await refused('{ table: holding, address: 3, type: float32, bit: 2 }', /readings\.x\.bit: expected a bit only on a 16-bit register/);
  await refused('{ table: holding, address: 3, type: string }', /readings\.x\.length: expected an integer ≥ 1 ≤ 125/);
  await refused('{ table: holding, address: 65533, type: float64 }', /readings\.x\.address: expected an address whose 4 registers end by 65535/);
  await refused('{ table: holding, address: 3, byteOrder: ABDC }', /readings\.x\.byteOrder: expected one of ABCD, DCBA, BADC, CDAB/);
});

t.test('modbus block reads - requests per poll counted at the server', async (t) => {
  const server = await startModbusServer(await freePort(), INITIAL);
  t.teardown(() => server.kill());
  const m = await machineAt(server.port);
  const readings = m.readings.size;
  // Holding 0..96 with gaps of at most 5: one block of 97 registers; the input register: another.
  t.equal((await poll(server, m)).requests, 2, 'default maxGap 10, maxBlock 100: two requests');
  // fault and ok are two bits of one register: read once.
  t.equal((await poll(server, await machineAt(server.port, ', maxBlock: 1'))).requests, readings - 1, 'maxBlock 1: one request per register read');
  // maxGap 0: only touching readings join. Runs: 0..6 (temp, status, name), 10..87 (the four
  // orders back to back, each 18 registers, 2 apart: separate), 92..96, input 0.
  t.equal((await poll(server, await machineAt(server.port, ', maxGap: 0'))).requests, 1 + 4 + 1 + 1, 'maxGap 0');
  // maxBlock 40: a block ends where the next reading would end beyond 40 registers from its start:
  // 0..39 (uint64_DCBA at 40..43 does not fit), 40..79 (uint64_CDAB at 80..83 does not), 80..96.
  t.equal((await poll(server, await machineAt(server.port, ', maxBlock: 40'))).requests, 3 + 1, 'maxBlock 40');
  const same = await poll(server, await machineAt(server.port, ', maxBlock: 1'));
  const block = await poll(server, m);
  t.same(Object.fromEntries(block.values), Object.fromEntries(same.values), 'block and single reads decode the same values');
});

t.test('modbus block reads - an exception in a block falls back to single reads for that block only', async (t) => {
  const server = await startModbusServer(await freePort(), INITIAL);
  t.teardown(() => server.kill());
  // maxBlock 40: blocks 0..39, 40..79 and 80..101; holding 100.. does not exist, so the last
  // block is refused and its four readings (uint64_CDAB, float64_CDAB, nameSwapped, beyond) are
  // read alone, one of them refused again.
  const m = await machineAt(server.port, ', maxBlock: 40', '\n      beyond: { table: holding, address: 101 }');
  const client = await ModbusTcpClient.connect('127.0.0.1', server.port, 2000);
  t.teardown(() => client.close());
  const bad: string[] = [];
  const before = await server.requests();
  const values = await readMachine(client, m, (reading) => bad.push(reading));
  t.equal((await server.requests()) - before, 3 + 1 + 4, 'three holding blocks, the input block, four single reads');
  t.same(bad, ['beyond'], 'the exception reported for the reading that has it');
  t.equal(values.get('nameSwapped'), 'QIS-PLC 7', 'its neighbours in the refused block still read');
  t.equal(values.get('float64_CDAB'), -0.0025);
  t.equal(values.get('int32_ABCD'), -123456789, 'other blocks unaffected');
});

t.test('modbus shared endpoint - machines at two unit ids of one gateway share one connection', async (t) => {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const server = await startModbusServer(await freePort(), ['hr 0 7', 'hr 2 16938 0']);
  t.teardown(() => server.kill());
  const proxy = await countingProxy(server.port);
  t.teardown(() => proxy.close());
  const machine = (name: string, unit: number): string => `
  - name: ${name}
    template: ${join(examples, 'press-bearing.yaml')}
    device: { host: 127.0.0.1, port: ${proxy.port}, unitId: ${unit}, pollMs: 100, timeoutMs: 1000 }
    readings: { fault: { table: holding, address: 0 }, load: { table: holding, address: 2, type: float32 }, sealed: { table: coil, address: 0 } }
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    outcomes: [{ when: { change: fault }, outcome: failure }]`;
  const text = `broker: ${broker.url}\ndataDir: ${join(dir, 'shared')}\nmachines:${machine('a', 1)}${machine('b', 2)}${machine('c', 3)}`;
  const bridge = await startModbusBridge(await parseModbusConfig(text, join(dir, 'shared.yaml')), { nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await waitFor(() => bridge.status().every((s) => s.polls >= 5 && s.state === 'up'), 'five polls of each machine');
  t.equal(proxy.connections, 1, 'one connection for three unit ids');
  t.same(proxy.units, new Set([1, 2, 3]), 'requests for all three unit ids on it');
  t.equal(proxy.maxInFlight, 1, 'one request at a time on the shared connection');
});

// RTU over TCP: pymodbus 3.0's TCP server with its RTU framer (a serial gateway's TCP port),
// raw RTU frames with CRC on the socket, no MBAP header.
for (const kind of ['rtu over a serial line (socat pty pair)', 'rtu over tcp (pymodbus RTU-framed TCP server)'] as const) {
  t.test(`modbus ${kind} - every type and byte order decoded, block reads counted at the server`, async (t) => {
    const serial = kind.startsWith('rtu over a serial');
    const server: ModbusServer & { path?: string } = serial ? await startModbusRtuServer(mkdtempSync(join(dir, 'tty-')), INITIAL) : await startModbusServer(await freePort(), INITIAL, 'rtu');
    t.teardown(() => server.kill());
    const device = serial ? `{ protocol: rtu, serial: { path: ${server.path}, baudRate: 9600 }, timeoutMs: 1000 }` : `{ protocol: rtu-over-tcp, host: 127.0.0.1, port: ${server.port}, timeoutMs: 1000 }`;
    const m = (await parseModbusConfig(config(1).replace(/device: \{[^}]*\}/, `device: ${device}`), join(dir, 'rtu.yaml'))).machines[0]!;
    t.equal(m.device.protocol, serial ? 'rtu' : 'rtu-over-tcp');
    const client = await openTransport(m);
    t.teardown(() => client.close());
    // The serial server may start listening a moment after the pty exists: the first read may time out.
    let values: Map<string, unknown> | undefined;
    for (let i = 0; i < 5 && !values; i++) values = await readMachine(client, m, () => undefined).catch(() => undefined);
    t.ok(values, 'read');
    for (const o of ORDERS) for (const [type, want] of Object.entries(EXPECTED)) t.equal(values!.get(`${type}_${o}`), want, `${type} ${o}`);
    t.equal(values!.get('name'), 'QIS-PLC 7');
    t.equal(values!.get('fault'), true);
    const before = await server.requests();
    await readMachine(client, m, () => undefined);
    t.equal((await server.requests()) - before, 2, 'two block reads per poll');
    const refused: unknown = await client.read(1, 'holding', 150, 2, 1000).catch((e: unknown) => e);
    t.ok(refused instanceof ModbusException && refused.exception === 2, 'an address the server lacks: exception 2 (illegal data address), framed as RTU');
    t.same(await client.read(1, 'holding', 0, 1, 1000), Buffer.from([0xfe, 0xd4]), 'the connection serves the next request (holding 0 = 65236)');
  });
}
