// The Modbus bridge against real peers: a pymodbus TCP server (Debian's python3-pymodbus) whose
// registers the test changes, and the qis broker on loopback. Packets are read back from the
// broker and verified.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { address, loadTemplate, outcomeTopic, verifyPacket, type NodeId, type VerifiedPacket } from '../src/index.js';
import { parseModbusConfig, startModbusBridge, type BridgeEvent } from '../firmware-bridge/index.js';
import { freePort } from './helpers/mosquitto.js';
import { startModbusServer } from './helpers/modbus-server.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { waitFor } from './helpers/wait.js';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-modbus-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));


/** Every packet published on qis/1/o/# at `url`, verified. */
async function collect(url: string): Promise<{ packets: (VerifiedPacket & { topic: string })[]; close(): Promise<void> }> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, clean: true });
  const packets: (VerifiedPacket & { topic: string })[] = [];
  c.on('message', (topic, payload) => packets.push({ ...verifyPacket(topic, new Uint8Array(payload)), topic }));
  await c.subscribeAsync('qis/1/o/#', { qos: 1 });
  return { packets, close: () => c.endAsync(true) };
}

const machine = (name: string, port: number, readings: string, rules: string): string => `
  - name: ${name}
    template: ${join(examples, 'press-bearing.yaml')}
    device: { host: 127.0.0.1, port: ${port}, unitId: 1, pollMs: 100, timeoutMs: 400 }
    readings:
${readings}
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    context: { run_hours: { reading: hours } }
    outcomes:
${rules}`;
const READINGS = `      fault: { table: holding, address: 0 }
      load: { table: holding, address: 2, type: float32 }
      hours: { table: input, address: 0, type: uint32, wordOrder: little, scale: 0.1 }
      sealed: { table: coil, address: 0 }`;
const RULES = `      - { when: { change: fault, from: 0 }, outcome: failure, conf: 0.9 }
      - { when: { change: fault, to: 0 }, outcome: no_failure, conf: 0.6 }`;
// load 42.5 as float32 (0x422A0000, high word first); 1234.5 h as uint32 12345 low word first.
const INITIAL = ['hr 2 16938 0', 'ir 0 12345 0', 'co 0 1'];
const header = (url: string, data: string): string => `broker: ${url}\ndataDir: ${data}\nreconnect: { baseMs: 50, capMs: 300 }\nmachines:`;

t.test('modbus bridge - a fault code leaving 0 reaches the broker as a verified failure; a dead server is reported and recovered', async (t) => {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const sub = await collect(broker.url);
  t.teardown(() => sub.close());
  const port = await freePort();
  let server = await startModbusServer(port, INITIAL);
  t.teardown(() => server.kill());
  const text = header(broker.url, join(dir, 'a')) + machine('press-7', port, `${READINGS}\n      bad: { table: holding, address: 150 }`, RULES);
  const config = await parseModbusConfig(text, join(dir, 'a.yaml'));
  const events: BridgeEvent[] = [];
  const bridge = await startModbusBridge(config, { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  const nodeId = bridge.nodes.get('press-7')!.nodeId as NodeId;
  const of = <T extends BridgeEvent['type']>(type: T): Extract<BridgeEvent, { type: T }>[] => events.filter((e): e is Extract<BridgeEvent, { type: T }> => e.type === type);

  await waitFor(() => (bridge.status()[0]?.polls ?? 0) >= 2, 'two polls');
  t.equal(of('device-up').length, 1, 'device-up reported');
  await waitFor(() => of('modbus-exception').length > 0, 'the exception of the unmapped address');
  const ex = of('modbus-exception')[0]!;
  t.match(ex, { machine: 'press-7', device: `127.0.0.1:${port}/1`, reading: 'bad', exception: 2 }, 'logged with device, reading and code');
  t.match(ex.message, /illegal data address/);
  t.equal(sub.packets.length, 0, 'baseline values publish nothing');

  await server.set('hr', 0, 7);
  await waitFor(() => sub.packets.length >= 1, 'the failure packet at the broker');
  const template = await loadTemplate(join(examples, 'press-bearing.yaml'));
  const situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
  const p = sub.packets[0]!;
  t.equal(p.topic, outcomeTopic(address(template, situation), nodeId), "the machine's own node, on its situation's topic");
  t.equal(p.out, 'failure');
  t.equal(p.conf, 0.9);
  t.same(p.ctx, { run_hours: 1234.5 }, 'run_hours from the input registers');
  t.match(of('published')[0], { machine: 'press-7', rule: 'machines[0].outcomes[0]', outcome: 'failure' });

  // The PLC dies: reported (event and status), then polled again once it is back.
  await server.kill();
  await waitFor(() => of('device-down').length > 0, 'device-down');
  t.match(of('device-down')[0], { machine: 'press-7', code: 'ERR_DEVICE_UNREACHABLE' });
  await waitFor(() => bridge.status()[0]!.state !== 'up', 'status leaves up');
  t.equal(bridge.status()[0]!.lastError?.code, 'ERR_DEVICE_UNREACHABLE', 'status carries the last error');
  const pollsWhileDown = bridge.status()[0]!.polls;
  // It comes back with the fault cleared (a fresh server: fault 0).
  server = await startModbusServer(port, INITIAL);
  await waitFor(() => of('device-up').length >= 2, 'device-up after the restart');
  await waitFor(() => bridge.status()[0]!.polls > pollsWhileDown && bridge.status()[0]!.state === 'up', 'polling again');
  await waitFor(() => sub.packets.length >= 2, 'the no_failure packet');
  const q = sub.packets[1]!;
  t.equal(q.topic, p.topic);
  t.equal(q.out, 'no_failure');
  t.ok(q.seq > p.seq, 'seq increases');
  t.equal(of('publish-failed').length, 0);
});

t.test('modbus bridge - a dead and a silent device never stall a live one', async (t) => {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const sub = await collect(broker.url);
  t.teardown(() => sub.close());
  const livePort = await freePort();
  const server = await startModbusServer(livePort, INITIAL);
  t.teardown(() => server.kill());
  const deadPort = await freePort(); // nothing listens there
  // A "slow" device: accepts the connection and never answers.
  const sockets = new Set<Socket>();
  const silent = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });
  const silentPort = (silent.address() as { port: number }).port;
  const rule = '      - { when: { change: fault, from: 0 }, outcome: failure }';
  const text = header(broker.url, join(dir, 'b')) + machine('dead', deadPort, READINGS, rule) + machine('silent', silentPort, READINGS, rule) + machine('live', livePort, READINGS, rule);
  const events: BridgeEvent[] = [];
  const bridge = await startModbusBridge(await parseModbusConfig(text, join(dir, 'b.yaml')), { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  const downs = (m: string): number => events.filter((e) => e.type === 'device-down' && e.machine === m).length;
  const st = (m: string) => bridge.status().find((s) => s.machine === m)!;

  await waitFor(() => st('live').polls >= 1 && downs('silent') >= 1, 'a first live poll and a first silent timeout');
  const before = st('live').polls;
  await waitFor(() => downs('silent') >= 4 && downs('dead') >= 4, 'four failures of each bad device');
  // The silent device spent ≥ 3 × 400 ms timing out meanwhile; a loop shared with it would have
  // polled the live device at most once per timeout. Its own loop polls every 100 ms.
  t.ok(st('live').polls - before >= 6, `live device polled ${st('live').polls - before} times while the others failed`);
  t.match(events.find((e) => e.type === 'device-down' && e.machine === 'silent'), { code: 'ERR_TIMEOUT' });
  t.match(events.find((e) => e.type === 'device-down' && e.machine === 'dead'), { code: 'ERR_DEVICE_UNREACHABLE' });
  t.equal(st('dead').state === 'up', false);
  await server.set('hr', 0, 1);
  await waitFor(() => sub.packets.length >= 1, 'the live machine publishes');
  t.equal(sub.packets[0]!.out, 'failure');
  t.equal(sub.packets[0]!.topic.split('/').pop(), bridge.nodes.get('live')!.nodeId, 'from the live machine');
  t.not(bridge.nodes.get('live')!.nodeId, bridge.nodes.get('dead')!.nodeId, 'each machine is its own node');
});

/** A broker, a subscriber, a pymodbus server with a temperature at input 4, and a bridge with one periodic rule. */
async function periodicBridge(t: Test, name: string, every: string, pollMs: number) {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const sub = await collect(broker.url);
  t.teardown(() => sub.close());
  const port = await freePort();
  const server = await startModbusServer(port, [...INITIAL, 'ir 4 215']);
  t.teardown(() => server.kill());
  const rules = `      - { when: { every: ${every} }, template: ${join(examples, 'press-temperature.yaml')}, outcome: { reading: temp } }`;
  const text = (header(broker.url, join(dir, name)) + machine(name, port, `${READINGS}\n      temp: { table: input, address: 4, type: int16, scale: 0.1 }`, rules)).replace('pollMs: 100', `pollMs: ${pollMs}`);
  const events: BridgeEvent[] = [];
  const bridge = await startModbusBridge(await parseModbusConfig(text, join(dir, `${name}.yaml`)), { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  return { sub, server, bridge, events };
}

t.test('modbus bridge - a periodic rule publishes the current numeric reading under its own template', async (t) => {
  const { sub, server } = await periodicBridge(t, 'press-9', '300ms', 100);
  await waitFor(() => sub.packets.length >= 1, 'a periodic packet');
  const template = await loadTemplate(join(examples, 'press-temperature.yaml'));
  t.equal(sub.packets[0]!.topic.split('/')[3], template.tplId, 'under the rule’s template');
  t.equal(sub.packets[0]!.out, 21.5);
  t.same(sub.packets[0]!.ctx, { run_hours: 1234.5 });
  await server.set('ir', 4, 65526); // -1.0 °C as int16
  await waitFor(() => sub.packets.some((p) => p.out === -1), 'a periodic packet with the new value');
  t.pass('the next period carries the new reading');
});

t.test('modbus bridge - a stale PLC produces no packets; periodic packets carry when the readings were observed', async (t) => {
  const { sub, server, bridge, events } = await periodicBridge(t, 'press-5', '100ms', 600);
  await waitFor(() => sub.packets.length >= 6, 'six periodic packets');
  // Polled every 600 ms, published every 100 ms: several packets share one observation time.
  const stamps = new Set(sub.packets.map((p) => p.ts));
  t.ok(stamps.size < sub.packets.length, `${sub.packets.length} packets carry ${stamps.size} observation times`);
  await server.kill();
  await waitFor(() => events.some((e) => e.type === 'device-down'), 'device-down');
  await waitFor(() => events.some((e) => e.type === 'skipped'), 'the periodic rule skipped');
  const count = sub.packets.length;
  const before = bridge.status()[0]!.published;
  await new Promise((r) => setTimeout(r, 1000)); // ten periods, and reconnect attempts meanwhile
  t.equal(bridge.status()[0]!.published, before, 'nothing published while the PLC is down');
  t.equal(sub.packets.length, count, 'no packet reached the broker');
  const skips = events.filter((e) => e.type === 'skipped');
  t.equal(skips.length, 1, 'the skip is said once');
  t.match(skips[0], { machine: 'press-5', reason: /stale/ });
});

t.test('modbus bridge - trigger state survives a restart; a failing register is reported once per state change', async (t) => {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const sub = await collect(broker.url);
  t.teardown(() => sub.close());
  const port = await freePort();
  const server = await startModbusServer(port, INITIAL);
  t.teardown(() => server.kill());
  const text = header(broker.url, join(dir, 'e')) + machine('press-3', port, `${READINGS}\n      extra: { table: holding, address: 99, type: uint32 }`, RULES);
  const config = await parseModbusConfig(text, join(dir, 'e.yaml'));
  const events: BridgeEvent[] = [];
  const onEvent = (e: BridgeEvent): void => void events.push(e);
  let bridge = await startModbusBridge(config, { onEvent, nodeReconnect: { baseMs: 50, capMs: 300 } });
  await waitFor(() => bridge.status()[0]!.polls >= 8, 'eight polls');
  // holding 99..100 reaches past the server's 100 registers: refused on every poll, said once.
  t.equal(events.filter((e) => e.type === 'modbus-exception').length, 1, 'one exception event for eight failing polls');
  t.ok(bridge.status()[0]!.exceptions >= 8, 'every failure counted');
  await bridge.close();
  // While the bridge is down the fault appears: the first poll after the restart reports it.
  await server.set('hr', 0, 9);
  events.length = 0;
  bridge = await startModbusBridge(config, { onEvent, nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await waitFor(() => events.some((e) => e.type === 'state-restored'), 'the saved trigger state restored');
  t.match(events.find((e) => e.type === 'state-restored'), { machine: 'press-3' });
  await waitFor(() => sub.packets.length >= 1, 'the failure that happened during the restart');
  t.equal(sub.packets[0]!.out, 'failure');
  await waitFor(() => events.some((e) => e.type === 'modbus-exception'), 'the failing register, said again by the new run');
  await waitFor(() => bridge.status()[0]!.polls >= 5, 'five polls');
  t.equal(events.filter((e) => e.type === 'modbus-exception').length, 1);
});
