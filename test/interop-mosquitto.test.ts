import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qis } from './helpers/cli.js';
import { findBinary, startMosquitto } from './helpers/mosquitto.js';
import { run } from './helpers/run.js';

t.test('interop - a CLI-signed packet survives a real Mosquitto retained, byte for byte, and verifies', async (t) => {
  const broker = await startMosquitto();
  t.teardown(() => broker.stop());
  const dir = mkdtempSync(join(tmpdir(), 'qis-interop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, 'node.key');
  t.equal((await qis(['keygen', '--out', key])).status, 0);
  const bin = join(dir, 'p.bin');
  const signed = await qis([
    'packet', 'sign', '--key', key, '--template', 'examples/bearing-failure.yaml',
    '--situation', '{"machine_model":"KX-200","bearing_type":"roller","load_kn":42.5,"sealed":true}',
    '--outcome', '"failure"', '--conf', '0.94', '--out', bin, '--json',
  ]);
  t.equal(signed.status, 0, signed.stderr);
  const { topic, packet } = JSON.parse(signed.stdout) as { topic: string; packet: string };
  const common = ['-h', '127.0.0.1', '-p', String(broker.port)];
  const pub = await run(findBinary('mosquitto_pub'), [...common, '-t', topic, '-r', '-q', '1', '-f', bin]);
  t.equal(pub.status, 0, pub.stderr);
  // A late subscriber gets the retained packet; -N prints the raw payload without a newline.
  const cohort = topic.replace(/[a-z2-7]{26}$/, '+');
  const sub = await run(findBinary('mosquitto_sub'), [...common, '-t', cohort, '-C', '1', '-N', '-W', '10']);
  t.equal(sub.status, 0, sub.stderr + broker.log());
  t.equal(sub.out.toString('hex'), packet, 'the bytes that come back are the bytes signed');
  const dec = await qis(['decode', '--topic', topic], sub.out);
  t.equal(dec.status, 0, dec.stderr);
  t.match(dec.stdout, /outcome\s+"failure"/);
  t.match(dec.stdout, /verified\s+valid/);
  // The same packet presented as if it had arrived on a neighbouring cohort's topic fails.
  const moved = topic.replace(/\/([a-z2-7]{10})\/([a-z2-7]{26})$/, '/aaaaaaaaaa/$2');
  const wrong = await qis(['packet', 'verify', '--topic', moved, '--json'], sub.out);
  t.equal(wrong.status, 1);
  t.equal(JSON.parse(wrong.stdout).code, 'ERR_BAD_SIGNATURE');
});
