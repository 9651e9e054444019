// Issue 16 item 3: network errors said at once, over real sockets on loopback (the built `qis`
// spawned): a closed port, an unknown host (under the reserved .invalid TLD: at most a query to
// the local resolver, never a non-loopback connection), TLS to a plain port, plain to a TLS port,
// an untrusted certificate. Each has its own code; none ends as ERR_TIMEOUT.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { qis, tempDir } from './helpers/cli.js';
import { certificates } from './helpers/tls.js';
import { freePort } from './helpers/mosquitto.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { situation } from './helpers/fixtures.js';

const TPL = 'examples/bearing-failure.yaml';
const SIT = JSON.stringify(situation);


async function failsWith(t: Test, args: string[], code: string, message: RegExp): Promise<void> {
  const r = await qis([...args, '--json']);
  t.equal(r.status, 1, `${args[0]} ${args[2]}: exit 1 (${r.stdout}${r.stderr})`);
  const j = JSON.parse(r.stdout) as { code?: string; message?: string };
  t.equal(j.code, code, `${args[0]} ${args[2]}: ${code}`);
  t.match(j.message ?? '', message, 'the message says what happened');
}

t.test('cli network - each connection failure has its own code on the first failure', async (t) => {
  const dir = tempDir(t, 'qis-cli-network-');
  const f = await certificates(t, dir);
  const b = await startQisBroker({
    listeners: [
      { type: 'tcp', host: '127.0.0.1', port: 0 },
      { type: 'tls', host: '127.0.0.1', port: 0, cert: f.cert, key: f.key },
    ],
  });
  t.teardown(() => b.close());
  const tlsPort = b.broker.addresses().find((a) => a.type === 'tls')?.port;
  const closed = await freePort();
  const query = (url: string, ...more: string[]): string[] => ['query', '--url', url, ...more, '--template', TPL, '--situation', SIT];

  await failsWith(t, query(`mqtt://127.0.0.1:${closed}`), 'ERR_CONNECTION_REFUSED', new RegExp(`connection refused by 127\\.0\\.0\\.1:${closed}`));
  await failsWith(t, query('mqtt://qis-test.invalid:1883'), 'ERR_HOST_NOT_FOUND', /host qis-test\.invalid not found/);
  await failsWith(t, query(`mqtts://127.0.0.1:${b.port}`, '--ca', f.cert), 'ERR_TLS', /TLS .*plain MQTT port/);
  await failsWith(t, query(`mqtt://127.0.0.1:${tlsPort}`), 'ERR_TLS', /speaks TLS.*use mqtts:\/\//);
  await failsWith(t, query(`mqtts://127.0.0.1:${tlsPort}`), 'ERR_TLS', /not trusted: self-signed certificate/);
  // With the CA it trusts, the same TLS port answers: the codes above were not a broken listener.
  const ok = await qis([...query(`mqtts://127.0.0.1:${tlsPort}`, '--ca', f.cert), '--json']);
  t.equal(ok.status, 0, ok.stdout + ok.stderr);
});

t.test('cli network - publish queues and says why; flush and watch fail with the reason', async (t) => {
  const dir = join(tempDir(t, 'qis-cli-network-'), 'node');
  const url = `mqtt://127.0.0.1:${await freePort()}`;
  const pub = await qis(['publish', '--url', url, '--data-dir', dir, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--json']);
  t.equal(pub.status, 0, 'store-and-forward: publish succeeds offline');
  const pj = JSON.parse(pub.stdout) as { acked: boolean; queued: number; connectionError?: { code: string } };
  t.equal(pj.acked, false);
  t.equal(pj.queued, 1);
  t.equal(pj.connectionError?.code, 'ERR_CONNECTION_REFUSED', 'and says why it is queued');
  const human = await qis(['publish', '--url', url, '--data-dir', dir, '--template', TPL, '--situation', SIT, '--outcome', 'failure']);
  t.match(human.stdout, /NOT delivered yet: ERR_CONNECTION_REFUSED: connection refused/, 'in words too');
  await failsWith(t, ['flush', '--url', url, '--data-dir', dir], 'ERR_CONNECTION_REFUSED', /connection refused/);
  await failsWith(t, ['watch', '--url', url, '--template', TPL, '--situation', SIT], 'ERR_CONNECTION_REFUSED', /connection refused/);
});
