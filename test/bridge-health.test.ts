// The bridge's connections and health against real peers: TLS to both the factory broker (Aedes
// behind a node:tls server) and the qis broker (its TLS listener), with certificates made by
// openssl now; /healthz and /metrics over HTTP; `published` lines that say the qis broker acked.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { verifyPacket } from '../src/index.js';
import { parseSparkplugConfig, startSparkplugBridge, type BridgeEvent } from '../firmware-bridge/index.js';
import { startAedes } from './helpers/aedes.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { sp } from './helpers/sparkplug.js';
import { certificates } from './helpers/tls.js';
import { waitFor } from './helpers/wait.js';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-health-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Aedes behind a TLS listener on a free loopback port. */
async function tlsAedes(cert: string, key: string): Promise<{ port: number; close(): Promise<void> }> {
  const broker = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server: TlsServer = createTlsServer({ cert: await readFile(cert), key: await readFile(key) }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    broker.handle(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  if (typeof a !== 'object' || a === null) throw new Error('no address');
  return {
    port: a.port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}

const get = async (port: number, path: string): Promise<{ status: number; body: string }> => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
};

/** A metric's value from Prometheus text, by name and exact label set. */
function metric(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** A one-machine Sparkplug bridge config: fault code leaving 0 → failure. */
const spYaml = (broker: string, sparkplug: string, name: string, extra = ''): string => `broker: ${broker}
dataDir: ${join(dir, name)}
${extra}
sparkplug: ${sparkplug}
machines:
  - name: press-7
    template: ${join(examples, 'press-bearing.yaml')}
    source: { edgeNode: line-1 }
    readings: { fault: Faults/Code }
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: 40, sealed: true }
    outcomes:
      - { when: { change: fault, from: 0 }, outcome: failure }
`;

t.test('sparkplug bridge over TLS to both brokers, with /healthz, /metrics and acknowledged publishes', async (t) => {
  const f = await certificates(t, dir);
  const factory = await tlsAedes(f.cert, f.key);
  t.teardown(() => factory.close());
  const qis = await startQisBroker({
    listeners: [
      { type: 'tcp', host: '127.0.0.1', port: 0 },
      { type: 'tls', host: '127.0.0.1', port: 0, cert: f.cert, key: f.key },
    ],
  });
  t.teardown(() => qis.close());
  const qisTls = qis.broker.addresses().find((a) => a.type === 'tls')!;
  const sub = await mqtt.connectAsync(qis.url, { reconnectPeriod: 0 });
  t.teardown(() => sub.endAsync(true));
  const outs: unknown[] = [];
  sub.on('message', (topic, payload) => outs.push(verifyPacket(topic, new Uint8Array(payload)).out));
  await sub.subscribeAsync('qis/1/o/#', { qos: 1 });

  const yaml = (withCa: boolean, name: string): string =>
    spYaml(`{ url: mqtts://127.0.0.1:${qisTls.port}${withCa ? `, ca: ${f.cert}` : ''} }`, `{ url: mqtts://localhost:${factory.port}, group: plant1, hostId: qis${withCa ? `, ca: ${f.cert}` : ''} }`, name, 'http: { port: 0 }');
  const config = await parseSparkplugConfig(yaml(true, 'data'), join(dir, 'sp.yaml'));
  t.ok(String(config.broker.tls?.ca).includes('BEGIN CERTIFICATE') && String(config.sparkplug.tls?.ca).includes('BEGIN CERTIFICATE'), 'ca files are read relative to the config');
  t.same(config.http, { host: '127.0.0.1', port: 0 }, 'http listens on loopback unless told otherwise');

  const events: BridgeEvent[] = [];
  const bridge = await startSparkplugBridge(config, { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => bridge.close());
  await bridge.connected;
  const port = bridge.health.address()!.port;
  await waitFor(() => bridge.nodes.get('press-7')!.connected, 'the node connected to the qis broker over mqtts');
  const hz = await get(port, '/healthz');
  t.equal(hz.status, 200, '/healthz: 200 with both broker connections up');
  t.match(JSON.parse(hz.body), { ok: true, connections: [{ connection: 'qis', machine: 'press-7', up: true }, { connection: 'sparkplug', up: true }] });

  // The edge node, over TLS to the factory broker, trusting the same self-signed certificate.
  const edge = await mqtt.connectAsync(`mqtts://localhost:${factory.port}`, { reconnectPeriod: 0, ca: await readFile(f.cert) });
  t.teardown(() => edge.endAsync(true));
  const send = (type: string, seq: number, value: number): Promise<unknown> =>
    edge.publishAsync(`spBv1.0/plant1/${type}/line-1`, Buffer.from(sp.encodePayload({ timestamp: 1_700_000_000_000, seq, metrics: [{ name: 'Faults/Code', type: 'UInt16', value }] })), { qos: 0 });
  await send('NBIRTH', 0, 0);
  await send('NDATA', 1, 7);
  await waitFor(() => outs.length >= 1, 'the failure packet at the qis broker');
  t.same(outs, ['failure'], 'the packet crossed both TLS connections');
  await waitFor(() => events.some((e) => e.type === 'published'), 'the published event');
  t.match(events.find((e) => e.type === 'published'), { machine: 'press-7', acked: true }, 'the published line says the qis broker acknowledged');

  const m = (await get(port, '/metrics')).body;
  t.equal(metric(m, 'qis_bridge_connection_up', 'connection="sparkplug",machine=""'), 1, 'factory broker connection up');
  t.equal(metric(m, 'qis_bridge_connection_up', 'connection="qis",machine="press-7"'), 1, 'qis broker connection up');
  t.equal(metric(m, 'qis_bridge_device_up', 'machine="press-7",device="plant1/line-1"'), 1, 'the edge node is up (born)');
  t.equal(metric(m, 'qis_bridge_reads_total', 'machine="press-7"'), 2, 'two messages read: the birth and the data');
  t.equal(metric(m, 'qis_bridge_rule_fires_total', 'machine="press-7",rule="machines[0].outcomes[0]",result="published"'), 1, 'one rule fire');
  t.equal(metric(m, 'qis_bridge_packets_queued_total', 'machine="press-7"'), 1);
  t.equal(metric(m, 'qis_bridge_packets_acknowledged_total', 'machine="press-7"'), 1);
  t.equal((await get(port, '/nothing')).status, 404);

  // Without the CA, neither broker's certificate is trusted: /healthz says so.
  const untrusting = await startSparkplugBridge(await parseSparkplugConfig(yaml(false, 'data2'), join(dir, 'sp2.yaml')), { nodeReconnect: { baseMs: 50, capMs: 300 } });
  t.teardown(() => untrusting.close());
  const node = untrusting.nodes.get('press-7')!;
  for await (const s of node.status()) if (s.type === 'reconnecting') break; // the TLS handshake failed
  const bad = await get(untrusting.health.address()!.port, '/healthz');
  t.equal(bad.status, 503, '/healthz: 503 while a broker connection is down');
  t.match(JSON.parse(bad.body), { ok: false, connections: [{ connection: 'qis', up: false }, { connection: 'sparkplug', up: false }] });
});

t.test('a packet published while the qis broker is down is logged queued, then acknowledged once it is back', async (t) => {
  const factory = await startAedes();
  t.teardown(() => factory.close());
  let qis = await startQisBroker();
  const port = qis.port;
  t.teardown(() => qis.close());
  const config = await parseSparkplugConfig(spYaml(qis.url, `{ url: ${factory.url}, group: plant1 }`, 'outage'), join(dir, 'outage.yaml'));
  const events: BridgeEvent[] = [];
  const bridge = await startSparkplugBridge(config, { onEvent: (e) => events.push(e), nodeReconnect: { baseMs: 50, capMs: 200 } });
  t.teardown(() => bridge.close());
  await bridge.connected;
  const node = bridge.nodes.get('press-7')!;
  await waitFor(() => node.connected, 'the node connected');
  await qis.close(true);
  await waitFor(() => !node.connected, 'the node saw the broker go');

  const edge = await mqtt.connectAsync(factory.url, { reconnectPeriod: 0 });
  t.teardown(() => edge.endAsync(true));
  const send = (type: string, seq: number, value: number): Promise<unknown> =>
    edge.publishAsync(`spBv1.0/plant1/${type}/line-1`, Buffer.from(sp.encodePayload({ timestamp: 1_700_000_000_000, seq, metrics: [{ name: 'Faults/Code', type: 'UInt16', value }] })), { qos: 0 });
  await send('NBIRTH', 0, 0);
  await send('NDATA', 1, 7);
  await waitFor(() => events.some((e) => e.type === 'published'), 'the published event');
  t.match(events.find((e) => e.type === 'published'), { acked: false }, 'queued: the broker is down');
  t.notOk(events.some((e) => e.type === 'acknowledged'), 'nothing acknowledged yet');

  qis = await startQisBroker({ listeners: [{ type: 'tcp', host: '127.0.0.1', port }] }, qis.dataDir);
  await waitFor(() => events.some((e) => e.type === 'acknowledged'), 'the acknowledged event');
  t.match(events.find((e) => e.type === 'acknowledged'), { machine: 'press-7', packets: 1 });
  t.match(bridge.status()[0], { published: 1, acknowledged: 1 });
});
