// Federation links and catch-up requests under hostile or broken conditions: a request that
// repeats ranges cannot blow up an answer, and a TLS file that vanishes between reconnects is
// logged and retried instead of crashing the broker.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { createBroker } from '../broker/server.js';
import { answerPayload } from '../broker/federation.js';
import { freePort, packetOf, peer, publishAll, startRegion, until } from './helpers/federation.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-fed-hard-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('catch-up requests: repeated ranges are answered once each; more ranges than exist is malformed', async (t) => {
  const a = await startRegion('a', await freePort(), []);
  t.teardown(() => a.close());
  const packets = Array.from({ length: 200 }, (_, i) => packetOf(i, 7, 1));
  await publishAll(a.url, packets);
  const keys = a.broker.store.keys?.() ?? [];
  t.equal(keys.length, 200, 'the store holds the 200 packets');
  const all = Array.from({ length: 256 }, (_, i) => i);
  const once = JSON.parse(answerPayload(a.broker.store, Buffer.from(JSON.stringify({ id: 'x', op: 'entries', scope: '*', ranges: all })))!.toString()) as { entries: unknown[] };
  t.equal(once.entries.length, 200, 'all ranges: every key once');
  const repeated = Array.from({ length: 256 }, () => 0);
  const r = answerPayload(a.broker.store, Buffer.from(JSON.stringify({ id: 'y', op: 'entries', scope: '*', ranges: repeated })));
  const inRange0 = (JSON.parse(r!.toString()) as { entries: unknown[] }).entries.length;
  const single = (JSON.parse(answerPayload(a.broker.store, Buffer.from(JSON.stringify({ id: 'z', op: 'entries', scope: '*', ranges: [0] })))!.toString()) as { entries: unknown[] }).entries.length;
  t.equal(inRange0, single, 'range 0 asked 256 times is answered once');
  const tooMany = Array.from({ length: 100_000 }, () => 0);
  t.equal(answerPayload(a.broker.store, Buffer.from(JSON.stringify({ id: 'w', op: 'entries', scope: '*', ranges: tooMany }))), undefined, '100,000 ranges: malformed, not answered');
});

t.test('a link whose CA file disappears logs ERR_FILE_IO at the next attempt and keeps retrying; the broker stays up', async (t) => {
  const ca = join(dir, 'ca.pem');
  writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const deadPort = await freePort(); // nobody listens there: every attempt fails and is retried
  const broker = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }], dataDir: mkdtempSync(join(dir, 'b-')), verifyWorkers: 0, fsync: 'never', federation: { region: 'x', peers: [peer(deadPort, { url: `mqtts://127.0.0.1:${deadPort}`, ca })], reconnect: { baseMs: 20, capMs: 50 } } },
    { logger: pino({ level: 'info' }, sink) },
  );
  t.teardown(() => broker.close());
  rmSync(ca);
  await until(() => lines.some((l) => l.includes('ERR_FILE_IO') && l.includes('cannot read its TLS')), 'the link to log the missing CA file', 20_000);
  const n = lines.filter((l) => l.includes('cannot read its TLS')).length;
  await until(() => lines.filter((l) => l.includes('cannot read its TLS')).length > n, 'another attempt', 20_000);
  const port = broker.addresses().find((x) => x.type === 'tcp')!.port;
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
  t.ok(c.connected, 'the broker still serves clients');
  await c.endAsync();
});
