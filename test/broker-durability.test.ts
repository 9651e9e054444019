// The regional broker as a real process: no acknowledged packet lost when it is killed with
// SIGKILL. (The 10,000-packet cohort queries are in broker-cohort-10k.test.ts.)
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { toHex } from '../src/index.js';
import { cohort } from './helpers/cohort-load.js';

const BROKER_PROC = fileURLToPath(new URL('./fixtures/broker-proc.mjs', import.meta.url));

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
