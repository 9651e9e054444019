// Issue 16 item 7: what an operator meets at the command line, over real processes (the built
// `qis` spawned as a child, real TCP brokers on loopback).
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { createNode } from '../src/index.js';
import { QIS, ROOT, qis, tempDir as cliTempDir } from './helpers/cli.js';

const tempDir = (t: Test): string => cliTempDir(t, 'qis-cli-ops-');
import { startAedes } from './helpers/aedes.js';
import { bearing, situation } from './helpers/fixtures.js';

const TPL = 'examples/bearing-failure.yaml';
const SIT = JSON.stringify(situation);

/** A TCP server that accepts and never answers: a broker that never sends CONNACK. */
async function silentServer(t: Test): Promise<number> {
  const sockets = new Set<Socket>();
  const s = createServer((c) => {
    sockets.add(c);
    c.on('error', () => undefined);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const c of sockets) c.destroy();
    s.close();
  });
  return (s.address() as AddressInfo).port;
}

t.test('cli ops - qis watch | head -1: the reader going away ends watch quietly (no EPIPE stack)', async (t) => {
  const b = await startAedes();
  t.teardown(() => b.close());
  const dir = tempDir(t);
  for (const i of [1, 2]) {
    await using node = await createNode({ url: b.url, dataDir: join(dir, `n${i}`) });
    const r = await node.publish(bearing, situation, 'failure');
    t.ok(r.acked, `packet ${i} acknowledged`);
  }
  // A real pipeline, as a user types it; the next packet arrives after head has gone.
  const child = spawn('bash', ['-c', `"${process.execPath}" "${QIS}" watch --url ${b.url} --template ${TPL} --situation '${SIT}' | head -1; echo "qis:\${PIPESTATUS[0]}" >&2`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) => child.on('close', r));
  t.teardown(() => child.kill('SIGKILL'));
  while (!out.includes('\n')) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300)); // head has exited: the pipe is closed
  {
    await using node = await createNode({ url: b.url, dataDir: join(dir, 'n3') });
    await node.publish(bearing, situation, 'no_failure');
  }
  const status = await Promise.race([done, new Promise((r) => setTimeout(() => r('still running'), 15_000))]);
  t.not(status, 'still running', 'watch ended when its reader went away');
  t.equal(out.trim().split('\n').length, 1, 'head printed one line');
  t.notMatch(err, /EPIPE|Error|at /, `no stack trace on stderr: ${err}`);
  t.match(err, /^qis:0$/m, 'qis exited 0');
});

t.test('cli ops - Ctrl-C while publish waits for the broker says the packet is in the outbox', async (t) => {
  const port = await silentServer(t);
  const dir = tempDir(t);
  const child = spawn(process.execPath, [QIS, 'publish', '--url', `mqtt://127.0.0.1:${port}`, '--data-dir', dir, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--ack-timeout', '60000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) => child.on('close', r));
  const outbox = join(dir, 'outbox');
  const queued = (): string[] => {
    try {
      return readdirSync(outbox).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
  };
  while (queued().length === 0) await new Promise((r) => setTimeout(r, 50));
  child.kill('SIGINT');
  t.equal(await done, 1, 'exit status 1');
  t.match(err, /ERR_ABORTED: interrupted before the broker acknowledged the packet: it is safe in .*outbox \(1 queued\)/);
  t.match(err, /qis flush --data-dir/);
  t.equal(queued().length, 1, 'and it is still there');
});

t.test('cli ops - a key path that is a directory is ERR_FILE_IO "is a directory"; a missing one says ENOENT once', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'keys'));
  const sign = ['packet', 'sign', '--template', TPL, '--situation', SIT, '--outcome', 'failure'];
  const d = await qis([...sign, '--key', join(dir, 'keys')]);
  t.equal(d.status, 1);
  t.match(d.stderr, /ERR_FILE_IO: .*keys is a directory, not a key file/);
  t.notMatch(d.stderr, /ERR_KEY_PERMISSIONS/);
  const m = await qis([...sign, '--key', join(dir, 'nope.key')]);
  t.equal(m.status, 1);
  t.match(m.stderr, /ERR_FILE_IO: .*nope\.key: ENOENT: no such file/);
  t.notMatch(m.stderr, /ENOENT: ENOENT/, 'the errno code is said once');
});

t.test('cli ops - a broker port another process holds is ERR_ADDRESS_IN_USE', async (t) => {
  const port = await silentServer(t);
  const dir = tempDir(t);
  const r = await qis(['broker', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', join(dir, 'b'), '--log-level', 'silent', '--http', 'off']);
  t.equal(r.status, 1);
  t.match(r.stderr, new RegExp(`qis: ERR_ADDRESS_IN_USE: .*127\\.0\\.0\\.1:${port}.*choose another port`));
});

t.test('cli ops - a data directory that cannot be made (/proc/x) fails at once with ERR_FILE_IO', { skip: process.platform !== 'linux' && 'needs /proc' }, async (t) => {
  // Node's recursive mkdir spun forever here (ENOENT for /proc/x, EEXIST for /proc, again).
  const child = spawn(process.execPath, [QIS, 'publish', '--url', 'mqtt://127.0.0.1:1', '--data-dir', '/proc/x/node', '--template', TPL, '--situation', SIT, '--outcome', 'failure'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const status = await Promise.race([new Promise<number | null>((r) => child.on('close', r)), new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
  t.equal(status, 1, `qis publish exited 1 instead of hanging: ${err}`);
  t.match(err, /qis: ERR_FILE_IO: \/proc\/x\/node: ENOENT/);
});

t.test('cli ops - --help names --version; the federation keys are flags too', async (t) => {
  const h = await qis(['--help']);
  t.match(h.stdout, /qis --version/);
  const v = await qis(['--version']);
  t.match(v.stdout, /^\d+\.\d+\.\d+\n$/);
  const bh = await qis(['broker', '--help']);
  for (const f of ['--federation.reconnect.base-ms', '--federation.reconnect.cap-ms', '--federation.follow-up-ms']) t.match(bh.stdout, f);
  const c = await qis(['broker', '--federation.region', 'east', '--federation.peer', 'mqtt://127.0.0.1:1', '--federation.reconnect.base-ms', '100',
    '--federation.reconnect.cap-ms', '5000', '--federation.follow-up-ms', '2000', '--check', '--json']);
  t.equal(c.status, 0, c.stderr);
  const fed = (JSON.parse(c.stdout) as { options: { federation: { reconnect: unknown; followUpMs: unknown } } }).options.federation;
  t.same(fed.reconnect, { baseMs: 100, capMs: 5000 });
  t.equal(fed.followUpMs, 2000);
  const bad = await qis(['broker', '--federation.region', 'east', '--federation.follow-up-ms', 'soon', '--check']);
  t.equal(bad.status, 1);
  t.match(bad.stderr, /ERR_CONFIG_INVALID: --federation.follow-up-ms/);
});
