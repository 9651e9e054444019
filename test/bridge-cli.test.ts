// `qis bridge modbus|sparkplug` from dist/: --check against a real pymodbus server, config
// errors, and a run that publishes to the qis broker and stops cleanly on SIGTERM.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { verifyPacket } from '../src/index.js';
import { QIS, qis } from './helpers/cli.js';
import { startModbusServer } from './helpers/modbus-server.js';
import { freePort } from './helpers/mosquitto.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { readRetained } from './helpers/retained.js';
import { sparkplugYaml } from './helpers/sparkplug.js';

const examples = fileURLToPath(new URL('../examples/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qis-bridge-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const config = (brokerUrl: string, port: number, dataDir: string): string => `
broker: ${brokerUrl}
dataDir: ${dataDir}
reconnect: { baseMs: 50, capMs: 300 }
machines:
  - name: press-7
    template: ${join(examples, 'press-bearing.yaml')}
    device: { host: 127.0.0.1, port: ${port}, pollMs: 100, timeoutMs: 1000 }
    readings:
      fault: { table: holding, address: 0 }
      load: { table: holding, address: 2, type: float32 }
      sealed: { table: coil, address: 0 }
      bad: { table: input, address: 500 }
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    outcomes:
      - { when: { change: fault, from: 0 }, outcome: failure, conf: 0.9 }
`;

t.test('qis bridge - help lists both bridges', async (t) => {
  const top = await qis(['--help']);
  t.match(top.stdout, /bridge modbus[\s\S]*bridge sparkplug/, 'qis --help lists them');
  const usage = await qis(['bridge']);
  t.equal(usage.status, 2, 'qis bridge alone is a usage error');
  const missing = await qis(['bridge', 'modbus', '--json']);
  t.equal(missing.status, 2);
  t.match(JSON.parse(missing.stdout), { code: 'ERR_CLI_USAGE', message: /--config is required/ });
  const r = await qis(['bridge', '--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, /bridge modbus/);
  t.match(r.stdout, /bridge sparkplug/);
  const h = await qis(['bridge', 'modbus', '--help']);
  t.equal(h.status, 0);
  t.match(h.stdout, /--config FILE/);
  t.match(h.stdout, /--check/);
});

t.test('qis bridge modbus --check reads the device and prints the packets, publishing nothing', async (t) => {
  const port = await freePort();
  const server = await startModbusServer(port, ['hr 0 0', 'hr 2 16938 0', 'co 0 1']);
  t.teardown(() => server.kill());
  const dataDir = join(dir, 'check-data');
  const file = join(dir, 'check.yaml');
  writeFileSync(file, config('mqtt://127.0.0.1:1', port, dataDir));
  const r = await qis(['bridge', 'modbus', '--config', file, '--check', '--json']);
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; machines: { readings: Record<string, unknown>; exceptions: { reading: string; exception: number }[]; packets: { topic: string; outcome: string; situation: unknown }[] }[] };
  t.equal(out.ok, true);
  t.same(out.machines[0]!.readings, { fault: 0, load: 42.5, sealed: true });
  t.match(out.machines[0]!.exceptions, [{ reading: 'bad', exception: 2 }]);
  t.match(out.machines[0]!.packets[0], { outcome: 'failure', situation: { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true } });
  t.match(out.machines[0]!.packets[0]!.topic, /^qis\/1\/o\/[a-z2-7]{26}\/.*<node id: created on first run>$/);
  t.notOk(existsSync(dataDir), 'no node, key or outbox was created');
  const human = await qis(['bridge', 'modbus', '--config', file, '--check']);
  t.equal(human.status, 0);
  t.match(human.stdout, /reading load +42\.5/);
  t.match(human.stdout, /would publish:/);
  t.match(human.stdout, /exception 2: .*illegal data address/);
});

t.test('qis bridge modbus --check: an unreachable device is exit 1; a bad config is ERR_CONFIG_INVALID', async (t) => {
  const file = join(dir, 'dead.yaml');
  writeFileSync(file, config('mqtt://127.0.0.1:1', await freePort(), join(dir, 'dead-data')));
  const r = await qis(['bridge', 'modbus', '--config', file, '--check', '--json']);
  t.equal(r.status, 1);
  t.match(JSON.parse(r.stdout), { ok: false, machines: [{ ok: false, error: { code: 'ERR_DEVICE_UNREACHABLE' } }] });
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, config('mqtt://127.0.0.1:1', 502, join(dir, 'x')).replace('pollMs: 100', 'pollMs: fast'));
  const b = await qis(['bridge', 'modbus', '--config', bad, '--check', '--json']);
  t.equal(b.status, 1);
  const e = JSON.parse(b.stdout) as { code: string; message: string };
  t.equal(e.code, 'ERR_CONFIG_INVALID');
  t.match(e.message, /bad\.yaml: machines\[0\]\.device\.pollMs: expected a number ≥ 50, got "fast"/);
  const s = await qis(['bridge', 'sparkplug', '--config', bad, '--check', '--json']);
  t.equal(s.status, 1);
  t.match(JSON.parse(s.stdout), { code: 'ERR_CONFIG_INVALID', message: /\(top level\)\.reconnect: expected one of the keys/ });
});

t.test('qis bridge sparkplug --check prints the mapping without connecting', async (t) => {
  const file = join(dir, 'sp.yaml');
  writeFileSync(file, sparkplugYaml({ broker: 'mqtt://127.0.0.1:1', dataDir: join(dir, 'sp-data'), sparkplug: 'url: mqtt://127.0.0.1:1, group: plant1' }));
  const r = await qis(['bridge', 'sparkplug', '--config', file, '--check', '--json']);
  t.equal(r.status, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { ok: true, sparkplug: { filter: 'spBv1.0/plant1/#', rebirthIntervalMs: 5000 }, machines: [{ name: 'press-7', source: { edgeNode: 'line-1', device: 'press-7' }, readings: { fault: { metric: 'Faults/Code' } } }] });
});

t.test('qis bridge modbus runs, publishes to the broker, and stops on SIGTERM', async (t) => {
  const broker = await startQisBroker();
  t.teardown(() => broker.close());
  const port = await freePort();
  const server = await startModbusServer(port, ['hr 2 16938 0', 'co 0 1']);
  t.teardown(() => server.kill());
  const file = join(dir, 'run.yaml');
  writeFileSync(file, config(broker.url, port, join(dir, 'run-data')));
  const child = spawn(process.execPath, [QIS, 'bridge', 'modbus', '--config', file, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout.on('data', (b: Buffer) => {
    buf += b.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitLine = async (type: string): Promise<Record<string, unknown>> => {
    const end = Date.now() + 60_000;
    for (;;) {
      const l = lines.find((x) => x['type'] === type);
      if (l) return l;
      if (Date.now() > end || child.exitCode !== null) throw new Error(`no ${type} line; got ${JSON.stringify(lines)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await waitLine('device-up');
  await waitLine('modbus-exception');
  await new Promise((r) => setTimeout(r, 300)); // a few polls: the baseline
  await server.set('hr', 0, 2);
  const pub = await waitLine('published');
  t.match(pub, { machine: 'press-7', outcome: 'failure' });
  const bytes = await readRetained(broker.url, pub['topic'] as string, 10_000);
  t.ok(bytes, 'the packet is retained at the broker');
  t.equal(verifyPacket(pub['topic'] as string, bytes!).out, 'failure');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'clean exit on SIGTERM');
  t.match(lines.at(-1), { ok: true, event: 'closed', signal: 'SIGTERM' });
});
