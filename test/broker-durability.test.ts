// The regional broker with real processes: complete 10,000-packet cohort queries (PROTOCOL §7)
// and no acknowledged packet lost when the broker process is killed with SIGKILL.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { createNode, createOutcomePacket, keyFromSeed, toHex, type Situation } from '../src/index.js';
import { startAedes } from './helpers/aedes.js';
import { bearing } from './helpers/fixtures.js';
import { startQisBroker } from './helpers/qis-broker.js';

const SIT: Situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
const BROKER_PROC = fileURLToPath(new URL('./fixtures/broker-proc.mjs', import.meta.url));

function seed(i: number, salt: number): Uint8Array {
  const s = new Uint8Array(32);
  const v = new DataView(s.buffer);
  v.setUint32(0, salt);
  v.setUint32(4, i);
  return s;
}

/** n packets of n distinct nodes in one exact cohort. */
function cohort(n: number, salt: number): { topic: string; packet: Uint8Array }[] {
  const ts = Date.now();
  return Array.from({ length: n }, (_, i) => {
    const { topic, packet } = createOutcomePacket({ key: keyFromSeed(seed(i, salt)), template: bearing, situation: SIT, outcome: i % 3 ? 'no_failure' : 'failure', seq: 1, ts });
    return { topic, packet };
  });
}

/** Publishes all, pipelined at QoS 1, and resolves when every PUBACK arrived. */
async function publishAll(url: string, packets: readonly { topic: string; packet: Uint8Array }[]): Promise<void> {
  const c = await mqtt.connectAsync(url, { clientId: `loader-${process.pid}-${Date.now()}`, reconnectPeriod: 0 });
  try {
    await Promise.all(packets.map((p) => c.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })));
  } finally {
    await c.endAsync();
  }
}

t.test('broker - a 10,000-packet cohort query is complete every time (sync marker held)', async (t) => {
  const b = await startQisBroker();
  const dir = mkdtempSync(join(tmpdir(), 'qis-10k-'));
  t.teardown(async () => {
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const packets = cohort(10_000, 1);
  await publishAll(b.url, packets);
  t.equal(b.broker.store.size, 10_000, 'all stored');
  const node = await createNode({ url: b.url, dataDir: join(dir, 'q') });
  t.teardown(() => node.close());
  for (let i = 0; i < 3; i++) {
    const r = await node.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
    t.equal(r.completeness, 'sync', 'ended by the sync marker, not a quiet period');
    t.equal(r.broker, 'qis');
    t.equal(r.packets.length, 10_000, `query ${i + 1}: all 10,000 packets`);
    t.same(r.dropped, {});
  }
});

t.test('broker - negative control: on plain Aedes the sync marker overtakes the retained packets', async (t) => {
  const a = await startAedes();
  const dir = mkdtempSync(join(tmpdir(), 'qis-10k-aedes-'));
  t.teardown(async () => {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await publishAll(a.url, cohort(10_000, 2));
  // Told (wrongly) that this broker keeps the order, the query trusts the marker and ends early.
  const node = await createNode({ url: a.url, dataDir: join(dir, 'q'), brokerKind: 'mosquitto' });
  t.teardown(() => node.close());
  const r = await node.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
  t.ok(r.packets.length < 10_000, `incomplete: ${r.packets.length} of 10,000 (PROTOCOL §7 measurement)`);
  // Asked (auto), the node recognises an unknown broker and waits for a quiet period instead.
  const auto = await createNode({ url: a.url, dataDir: join(dir, 'q2') });
  t.teardown(() => auto.close());
  const r2 = await auto.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
  t.equal(r2.completeness, 'quiet-period');
  t.equal(r2.packets.length, 10_000, 'the quiet period gets them all');
});

interface Proc {
  child: ChildProcess;
  port: number;
  exited: Promise<void>;
}

function startBrokerProc(dataDir: string): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BROKER_PROC, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve({ child, port: (JSON.parse(line) as { port: number }).port, exited });
    });
    child.once('exit', (code) => reject(new Error(`broker process exited (${code}): ${err}`)));
  });
}

t.test('broker - kill -9 during 5,000 QoS 1 publishes from several clients loses no acknowledged packet', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qis-kill-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const packets = cohort(5_000, 3);
  let proc = await startBrokerProc(dir);
  const acked = new Map<string, string>(); // topic → hex of the acknowledged packet
  const clients: MqttClient[] = [];
  const CLIENTS = 4;
  for (let c = 0; c < CLIENTS; c++) clients.push(await mqtt.connectAsync(`mqtt://127.0.0.1:${proc.port}`, { clientId: `pub-${c}`, reconnectPeriod: 0 }));
  let killed = false;
  const killAt = 1_500 + Math.floor(Math.random() * 2_000);
  const sends = packets.map(
    (p, i) =>
      new Promise<void>((resolve) => {
        const client = clients[i % CLIENTS] as MqttClient;
        client.publish(p.topic, Buffer.from(p.packet), { qos: 1, retain: true }, (err) => {
          if (!err && !killed) {
            acked.set(p.topic, toHex(p.packet));
            if (acked.size >= killAt) {
              killed = true;
              proc.child.kill('SIGKILL');
            }
          }
          resolve();
        });
        client.once('close', () => resolve());
      }),
  );
  await Promise.race([Promise.all(sends), proc.exited.then(() => new Promise((r) => setTimeout(r, 200)))]);
  await proc.exited;
  t.ok(killed, `killed after ${acked.size} acknowledgements`);
  for (const c of clients) c.end(true);
  t.ok(acked.size >= killAt && acked.size < 5_000, `${acked.size} acknowledged before the kill`);

  proc = await startBrokerProc(dir);
  t.teardown(() => {
    proc.child.kill('SIGKILL');
  });
  const reader = await mqtt.connectAsync(`mqtt://127.0.0.1:${proc.port}`, { clientId: 'reader', reconnectPeriod: 0 });
  const present = new Map<string, string>();
  const sync = `qis/1/sync/reader/x`;
  await new Promise<void>((resolve, reject) => {
    reader.on('message', (topic, payload) => {
      if (topic === sync) resolve();
      else present.set(topic, payload.toString('hex'));
    });
    reader.subscribeAsync({ [sync]: { qos: 1 }, 'qis/1/o/#': { qos: 1 } }).then(() => reader.publishAsync(sync, 'x', { qos: 1 }), reject);
  });
  await reader.endAsync();
  let missing = 0;
  let differ = 0;
  for (const [topic, hex] of acked) {
    const got = present.get(topic);
    if (got === undefined) missing++;
    else if (got !== hex) differ++;
  }
  t.equal(missing, 0, `every one of the ${acked.size} acknowledged packets is present after restart (${present.size} stored)`);
  t.equal(differ, 0, 'byte for byte');
});
