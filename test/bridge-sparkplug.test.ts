// The Sparkplug bridge against real peers: an edge node simulated with an independent encoder
// (Eclipse Tahu's `sparkplug-payload`) publishing to a real factory broker (Aedes), and the qis
// broker receiving the outcome packets, which are read back and verified.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { address, loadTemplate, outcomeTopic, verifyPacket, type NodeId, type VerifiedPacket } from '../src/index.js';
import { parseSparkplugConfig, startSparkplugBridge, type BridgeEvent } from '../firmware-bridge/index.js';
import { startAedes } from './helpers/aedes.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { sp, sparkplugYaml, type SpMetric } from './helpers/sparkplug.js';
import { waitFor } from './helpers/wait.js';


const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-sp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));


/** The factory broker (Aedes), the qis broker, and the outcome packets at the qis broker, verified. */
async function peers(t: Test) {
  const factory = await startAedes();
  t.teardown(() => factory.close());
  const qis = await startQisBroker();
  t.teardown(() => qis.close());
  const sub = await mqtt.connectAsync(qis.url, { reconnectPeriod: 0 });
  t.teardown(() => sub.endAsync(true));
  const packets: (VerifiedPacket & { topic: string })[] = [];
  sub.on('message', (topic, payload) => packets.push({ ...verifyPacket(topic, new Uint8Array(payload)), topic }));
  await sub.subscribeAsync('qis/1/o/#', { qos: 1 });
  return { factory, qis, packets };
}

t.test('sparkplug bridge - births, data, historical data, a seq gap and an unknown alias', async (t) => {
  const { factory, qis, packets } = await peers(t);

  // The simulated edge node, which also watches for rebirth requests.
  const edge = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => edge.endAsync(true));
  const ncmds: { name: string; type: string; value: unknown }[][] = [];
  edge.on('message', (topic, payload) => {
    if (topic === 'spBv1.0/plant1/NCMD/line-1') ncmds.push(sp.decodePayload(new Uint8Array(payload)).metrics);
  });
  await edge.subscribeAsync('spBv1.0/plant1/NCMD/line-1', { qos: 0 });
  const send = async (type: string, seq: number, metrics: SpMetric[], device = 'press-7'): Promise<void> => {
    const topic = type.startsWith('N') ? `spBv1.0/plant1/${type}/line-1` : `spBv1.0/plant1/${type}/line-1/${device}`;
    await edge.publishAsync(topic, Buffer.from(sp.encodePayload({ timestamp: Date.now(), seq, metrics })), { qos: 0 });
  };
  const births = async (fault: number): Promise<void> => {
    await send('NBIRTH', 0, [{ name: 'bdSeq', type: 'UInt64', value: 0 }, { name: 'Node Control/Rebirth', type: 'Boolean', value: false }]);
    await send('DBIRTH', 1, [
      { name: 'Faults/Code', alias: 1, type: 'UInt16', value: fault },
      { name: 'Load/kN', alias: 2, type: 'Float', value: 42.5 },
      { name: 'Counters/RunMinutes', alias: 3, type: 'UInt32', value: 60_000 },
      { name: 'Sealed', alias: 4, type: 'Boolean', value: true },
    ]);
  };

  const mapping = `    readings:
      fault: Faults/Code
      load: Load/kN
      hours: { metric: Counters/RunMinutes, scale: ${1 / 60} }
      sealed: Sealed
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    context: { run_hours: { reading: hours } }
    outcomes:
      - { when: { change: fault, from: 0 }, outcome: failure, conf: 0.9 }
      - { when: { change: fault, to: 0 }, outcome: no_failure }
`;
  const config = await parseSparkplugConfig(sparkplugYaml({ broker: qis.url, dataDir: join(dir, 'data'), sparkplug: `url: ${factory.url}, group: plant1, rebirthIntervalMs: 0`, mapping }), join(dir, 'sp.yaml'));
  const events: BridgeEvent[] = [];
  const bridge = await startSparkplugBridge(config, { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await bridge.connected;
  const rebirths = (): Extract<BridgeEvent, { type: 'rebirth-requested' }>[] => events.filter((e): e is Extract<BridgeEvent, { type: 'rebirth-requested' }> => e.type === 'rebirth-requested');

  // Data from a node whose birth the bridge never saw: it asks instead of guessing.
  await send('DDATA', 17, [{ alias: 1, type: 'UInt16', value: 3 }]);
  await waitFor(() => ncmds.length >= 1, 'a rebirth request for data before any birth');
  t.same(ncmds[0], [{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }], 'NCMD Node Control/Rebirth = true, decoded by sparkplug-payload');
  t.match(rebirths()[0], { edgeNode: 'line-1', reason: /before an NBIRTH/, topic: 'spBv1.0/plant1/NCMD/line-1' });

  await births(0);
  await send('DDATA', 2, [{ alias: 1, type: 'UInt16', value: 4 }]);
  await waitFor(() => packets.length >= 1, 'the failure packet');
  const template = await loadTemplate(join(examples, 'press-bearing.yaml'));
  const nodeId = bridge.nodes.get('press-7')!.nodeId as NodeId;
  t.equal(packets[0]!.topic, outcomeTopic(address(template, { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true }), nodeId));
  t.equal(packets[0]!.out, 'failure');
  t.same(packets[0]!.ctx, { run_hours: 1000 }, 'run minutes from the DBIRTH, scaled');

  // Historical data (a stored fault code of 0) must not count as the present; a malformed
  // payload is dropped and reported.
  await send('DDATA', 3, [{ alias: 1, type: 'UInt16', value: 0, isHistorical: true }]);
  await edge.publishAsync('spBv1.0/plant1/DDATA/line-1/press-7', Buffer.from([0x12, 0x7f]), { qos: 0 });
  await send('DDATA', 4, [{ alias: 1, type: 'UInt16', value: 4 }]);
  await send('DDATA', 5, [{ alias: 1, type: 'UInt16', value: 0 }]);
  await waitFor(() => packets.length >= 2, 'the no_failure packet');
  t.equal(packets[1]!.out, 'no_failure');
  t.match(events.find((e) => e.type === 'historical'), { edgeNode: 'line-1', device: 'press-7', count: 1 });
  t.match(events.find((e) => e.type === 'sparkplug-dropped'), { code: 'ERR_SPARKPLUG_PAYLOAD' });

  // A seq gap (6 is missing): a rebirth request, and the gap message's data is not used.
  await send('DDATA', 7, [{ alias: 1, type: 'UInt16', value: 9 }]);
  await waitFor(() => ncmds.length >= 2, 'a rebirth request after the seq gap');
  t.match(rebirths()[1], { reason: /seq gap: expected 6, got 7/ });
  await send('DDATA', 8, [{ alias: 1, type: 'UInt16', value: 0 }]);
  await waitFor(() => ncmds.length >= 3, 'still no birth: another request');

  // The node is born again; then an alias its birth did not declare.
  await births(0);
  await send('DDATA', 2, [{ alias: 99, type: 'UInt16', value: 1 }]);
  await waitFor(() => ncmds.length >= 4, 'a rebirth request for the unknown alias');
  t.match(rebirths()[3], { reason: /unknown alias 99/ });

  // Born again with the fault already set: a change from the last live value 0, so a failure.
  await births(5);
  await send('DDATA', 2, [{ alias: 2, type: 'Float', value: 42.5 }]);
  await waitFor(() => packets.length >= 3, 'the failure seen in the new birth');
  t.equal(packets[2]!.out, 'failure');
  // Let anything wrongly triggered arrive, then check the whole sequence.
  await send('DDATA', 3, [{ alias: 1, type: 'UInt16', value: 0 }]);
  await waitFor(() => packets.length >= 4, 'the last no_failure');
  t.same(packets.map((p) => p.out), ['failure', 'no_failure', 'failure', 'no_failure'], 'exactly the outcomes of live values, none from historical, gap or unknown-alias data');
  t.ok(packets.every((p, i) => i === 0 || p.seq > packets[i - 1]!.seq), 'seq increases');
  t.equal(bridge.status()[0]!.state, 'up');
});

t.test('sparkplug bridge - Template members and DataSet cells drive rules; a Bytes metric is reported once', async (t) => {
  const { factory, qis, packets } = await peers(t);
  const edge = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => edge.endAsync(true));
  const send = (type: string, seq: number, metrics: SpMetric[]): Promise<unknown> =>
    edge.publishAsync(type.startsWith('N') ? `spBv1.0/plant1/${type}/line-1` : `spBv1.0/plant1/${type}/line-1/press-7`, Buffer.from(sp.encodePayload({ timestamp: Date.now(), seq, metrics })), { qos: 0 });
  const motor = (fault: number): SpMetric => ({ name: 'Motor', alias: 1, type: 'Template', value: { isDefinition: false, templateRef: 'Press', metrics: [{ name: 'Fault', type: 'UInt16', value: fault }, { name: 'Load', type: 'Float', value: 42.5 }, { name: 'Sealed', type: 'Boolean', value: true }] } });
  const recipe = (minutes: number): SpMetric => ({ name: 'Recipe', alias: 2, type: 'DataSet', value: { numOfColumns: 2, columns: ['Step', 'RunMinutes'], types: ['String', 'UInt32'], rows: [['heat', minutes]] } });
  const mapping = `    readings: { fault: Motor/Fault, load: Motor/Load, sealed: Motor/Sealed, hours: { metric: Recipe/0/RunMinutes, scale: ${1 / 60} }, blob: Blob }
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    context: { run_hours: { reading: hours } }
    outcomes: [{ when: { change: fault, from: 0 }, outcome: failure }, { when: { change: blob }, outcome: no_failure }]
`;
  const config = await parseSparkplugConfig(sparkplugYaml({ broker: qis.url, dataDir: join(dir, 'types'), sparkplug: `url: ${factory.url}, group: plant1, rebirthIntervalMs: 0`, mapping }), join(dir, 'types.yaml'));
  const events: BridgeEvent[] = [];
  const bridge = await startSparkplugBridge(config, { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await bridge.connected;
  await send('NBIRTH', 0, [{ name: 'bdSeq', type: 'UInt64', value: 0 }]);
  await send('DBIRTH', 1, [motor(0), recipe(60_000), { name: 'Blob', alias: 3, type: 'Bytes', value: Uint8Array.of(1, 2) }]);
  await send('DDATA', 2, [{ name: 'Blob', alias: 3, type: 'Bytes', value: Uint8Array.of(3) }, recipe(120_000)]);
  await send('DDATA', 3, [motor(7)]);
  await waitFor(() => packets.length >= 1, 'the failure from the template member');
  t.equal(packets[0]!.out, 'failure');
  t.same(packets[0]!.ctx, { run_hours: 2000 }, 'run minutes from the DataSet cell of the last DDATA, scaled');
  const unusable = events.filter((e) => e.type === 'metric-unusable');
  t.equal(unusable.length, 1, 'the Bytes metric is reported once, not per message');
  t.match(unusable[0], { machine: 'press-7', reading: 'blob', metric: 'Blob', reason: 'Blob: Bytes cannot drive a rule' });
  t.same(packets.map((p) => p.out), ['failure'], 'no packet from the Bytes metric');
});

t.test('sparkplug bridge - primary host STATE: online retained, offline as the will and at close; an edge node that waits for it', async (t) => {
  const { factory, qis, packets } = await peers(t);
  // A subscriber watching the host's STATE.
  const watcher = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => watcher.endAsync(true));
  const states: { online: boolean; timestamp: number; retain: boolean }[] = [];
  watcher.on('message', (_topic, payload, p) => states.push({ ...(JSON.parse(payload.toString()) as { online: boolean; timestamp: number }), retain: p.retain }));
  await watcher.subscribeAsync('spBv1.0/STATE/qis-host', { qos: 1 });
  // An edge node configured to wait for its primary host: it publishes its births only once STATE is online.
  const edge = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => edge.endAsync(true));
  let born = false;
  const send = (type: string, seq: number, metrics: SpMetric[]): Promise<unknown> =>
    edge.publishAsync(type.startsWith('N') ? `spBv1.0/plant1/${type}/line-1` : `spBv1.0/plant1/${type}/line-1/press-7`, Buffer.from(sp.encodePayload({ timestamp: Date.now(), seq, metrics })), { qos: 0 });
  edge.on('message', (_topic, payload) => {
    if ((JSON.parse(payload.toString()) as { online: boolean }).online && !born) {
      born = true;
      void send('NBIRTH', 0, [{ name: 'bdSeq', type: 'UInt64', value: 0 }])
        .then(() => send('DBIRTH', 1, [{ name: 'Faults/Code', alias: 1, type: 'UInt16', value: 0 }, { name: 'Load/kN', alias: 2, type: 'Float', value: 42.5 }, { name: 'Sealed', alias: 4, type: 'Boolean', value: true }]))
        .then(() => send('DDATA', 2, [{ alias: 1, type: 'UInt16', value: 5 }]));
    }
  });
  await edge.subscribeAsync('spBv1.0/STATE/qis-host', { qos: 1 });
  const config = await parseSparkplugConfig(sparkplugYaml({ broker: qis.url, dataDir: join(dir, 'state'), sparkplug: `url: ${factory.url}, group: plant1, hostId: qis-host, rebirthIntervalMs: 0` }), join(dir, 'state.yaml'));
  t.equal(born, false, 'the edge node waits');
  const bridge = await startSparkplugBridge(config, { nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await waitFor(() => states.length >= 1, 'STATE online');
  t.match(states[0], { online: true, retain: false });
  t.type(states[0]!.timestamp, 'number');
  await waitFor(() => packets.length >= 1, 'the edge node, once the host is online, sends data that becomes a packet');
  t.equal(packets[0]!.out, 'failure');
  const late = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => late.endAsync(true));
  const retained = new Promise<string>((r) => late.once('message', (_t, p) => r(p.toString())));
  await late.subscribeAsync('spBv1.0/STATE/qis-host', { qos: 1 });
  t.match(JSON.parse(await retained), { online: true }, 'STATE is retained for a late subscriber');
  // The connection drops without DISCONNECT: the broker publishes the will.
  // Aedes keeps its connected clients by id (not in its typings).
  const clients = (factory.broker as unknown as { clients: Record<string, { id: string; close(): void }> }).clients;
  for (const c of Object.values(clients)) if (c.id !== watcher.options.clientId && c.id !== edge.options.clientId && c.id !== late.options.clientId) c.close();
  await waitFor(() => states.some((s) => !s.online), 'the will: STATE offline');
  t.equal(states.find((s) => !s.online)!.timestamp, states[0]!.timestamp, 'the death certificate carries the birth timestamp');
  await waitFor(() => states.filter((s) => s.online).length >= 2, 'online again after the reconnect');
  await bridge.close();
  await waitFor(() => states[states.length - 1]!.online === false, 'offline at a clean close');
});
