// Issue 16 item 5 and SIGHUP: a real `qis broker` process (the built CLI, piped output, loopback
// TCP, OS-chosen ports): JSON-only logs, connects/disconnects/denials at info, reload on SIGHUP
// without dropping clients, /metrics and /healthz, the HTTP endpoint's default and the Grafana
// dashboard's metric names.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import mqtt from 'mqtt';
import type { Logger } from 'pino';
import { createLogger } from '../broker/log.js';
import type { Authenticator } from '../broker/server/auth.js';
import { CONN_LOG_BURST, logConnections } from '../broker/server/conn-log.js';
import { createNode, createOutcomePacket, keyFromSeed } from '../src/index.js';
import { QIS, ROOT, qis, tempDir } from './helpers/cli.js';
import { bearing, situation } from './helpers/fixtures.js';
import { threadNice, untilNiced } from './helpers/threads.js';

type Line = Record<string, unknown> & { level: number; msg: string };

/** A `qis broker` child whose stdout is read line by line (each must be JSON). */
interface Broker {
  readonly child: ChildProcess;
  readonly lines: Line[];
  /** Every stdout line that did not parse as JSON. */
  readonly notJson: string[];
  stderr(): string;
  /** The first line from index `from` that `match` accepts (waits up to 20 s). */
  line(match: (l: Line) => boolean, from?: number): Promise<Line>;
  exited: Promise<number | null>;
}

/** `under`: a command the broker runs under (e.g. ['nice', '-n', '10']). */
function spawnBroker(t: Test, args: string[], under: string[] = []): Broker {
  const [cmd, ...pre] = [...under, process.execPath];
  const child = spawn(cmd as string, [...pre, QIS, 'broker', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Line[] = [];
  const notJson: string[] = [];
  let buf = '';
  let err = '';
  const waiters = new Set<() => void>();
  child.stdout.on('data', (b: Buffer) => {
    buf += b.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(text) as Line);
      } catch {
        notJson.push(text);
      }
    }
    for (const w of waiters) w();
  });
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('close', r));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const line = (match: (l: Line) => boolean, from = 0): Promise<Line> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = lines.slice(from).find(match);
        if (!found) return;
        done();
        resolve(found);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no such log line within 20 s; stdout: ${lines.map((l) => l.msg).join(' | ')}; stderr: ${err}`));
      }, 20_000);
      const done = (): void => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return { child, lines, notJson, stderr: () => err, line, exited };
}

/** A loopback port held by a listener of this test (nothing else can bind it) — or, closed, a port nobody listens on. */
async function heldPort(t: Test): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => s.close());
  return (s.address() as AddressInfo).port;
}

async function passwd(file: string, user: string, password: string): Promise<void> {
  const r = await qis(['broker', 'passwd', file, user], `${password}\n`);
  if (r.status !== 0) throw new Error(r.stderr);
}

const connect = (url: string, o: mqtt.IClientOptions): Promise<mqtt.MqttClient> => mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...o });

/** The SUBACK's granted QoS for `topic`, 128 when refused (mqtt.js reports a 0x80 code only as an error). */
function granted(c: mqtt.MqttClient, topic: string): Promise<number | undefined> {
  return new Promise((resolve) => c.subscribe(topic, { qos: 1 }, (e, g) => resolve(e ? 128 : g?.[0]?.qos)));
}

/** The CONNACK return code of a login (0: accepted). */
async function loginCode(url: string, o: mqtt.IClientOptions): Promise<number> {
  try {
    const c = await connect(url, o);
    await c.endAsync();
    return 0;
  } catch (e) {
    return (e as { code?: number }).code ?? -1;
  }
}

t.test('broker ops - piped JSON logs, SIGHUP reload, /metrics and /healthz of a real broker process', async (t) => {
  const dir = tempDir(t, 'qis-broker-ops-');
  const pw = join(dir, 'passwd');
  await passwd(pw, 'alice', 'old-secret');
  const deadPeer = await heldPort(t); // listened on by this test, answers no MQTT: the link stays down
  const cfg = join(dir, 'broker.yaml');
  const config = (o: { acl: string; level: string; operators?: string }): string =>
    [`auth: { passwordFile: ${pw} }`, `admission: { operators: [ ${o.operators ?? ''} ] }`, `acl: { subscribe: [ ${o.acl} ] }`, `log: { level: ${o.level} }`, `federation: { region: east, peers: [ { url: "mqtt://127.0.0.1:${deadPeer}", name: west } ] }`].join('\n') + '\n';
  writeFileSync(cfg, config({ acl: '{ allow: false, topic: "secret/#" }', level: 'info' }));

  const b = spawnBroker(t, ['--config', cfg, '--listen', 'tcp://127.0.0.1:0', '--http', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--verify-workers', '0']);
  const listening = await b.line((l) => l.msg === 'broker listening');
  const addrs = listening.listeners as { type: string; port: number }[];
  const url = `mqtt://127.0.0.1:${addrs.find((a) => a.type === 'tcp')?.port}`;
  const http = `http://127.0.0.1:${addrs.find((a) => a.type === 'http')?.port}`;

  // Connects, denials and disconnects at info (30), with who and why.
  const alice = await connect(url, { clientId: 'alice', username: 'alice', password: 'old-secret' });
  t.teardown(() => alice.end(true));
  t.match(await b.line((l) => l.msg === 'client connected' && l.clientId === 'alice'), { level: 30, user: 'alice', auth: 'password' });
  t.equal(await granted(alice, 'secret/a'), 128, 'the ACL denies secret/#');
  t.match(await b.line((l) => /subscription denied/.test(l.msg)), { level: 30, clientId: 'alice', topic: 'secret/a' });
  const brief = await connect(url, { clientId: 'brief' });
  await brief.endAsync();
  t.match(await b.line((l) => l.msg === 'client disconnected' && l.clientId === 'brief'), { level: 30, reason: 'DISCONNECT' });

  // An outcome packet, so the admission and verification histograms have an observation.
  {
    await using node = await createNode({ url, dataDir: join(dir, 'node') });
    t.ok((await node.publish(bearing, situation, 'failure')).acked, 'packet admitted');
  }

  // SIGHUP: a new password file and ACL. Today's broker is not killed (exit 129), alice stays.
  await passwd(pw, 'alice', 'new-secret');
  await passwd(pw, 'bob', 'bob-secret');
  writeFileSync(cfg, config({ acl: '{ allow: true, topic: "secret/#" }', level: 'info' }));
  let from = b.lines.length;
  b.child.kill('SIGHUP');
  const reloaded = await b.line((l) => /^config reloaded/.test(l.msg), from);
  t.match(reloaded, { level: 30, changed: ['acl.subscribe', 'auth.passwordFile (read again)'] });
  t.equal(b.child.exitCode, null, 'still running after SIGHUP');
  t.ok(alice.connected, 'the connection made before the reload is still up');
  t.equal(await granted(alice, 'secret/b'), 1, 'a new subscription follows the new ACL');
  const got = new Promise<string>((r) => alice.once('message', (_t, p) => r(p.toString())));
  const pub = await connect(url, { clientId: 'bob', username: 'bob', password: 'bob-secret' });
  await pub.publishAsync('secret/b', 'after reload', { qos: 1 });
  await pub.endAsync();
  t.equal(await got, 'after reload', 'alice (logged in under the old file) still receives; bob (only in the new file) logged in');
  t.equal(await loginCode(url, { clientId: 'alice:2', username: 'alice', password: 'old-secret' }), 4, 'the old password is refused (CONNACK 4)');
  t.equal(await loginCode(url, { clientId: 'alice:3', username: 'alice', password: 'new-secret' }), 0, 'the new password logs in');

  // An invalid file: a coded error, the running config kept.
  writeFileSync(cfg, config({ acl: '{ allow: maybe, topic: 7 }', level: 'info' }));
  from = b.lines.length;
  b.child.kill('SIGHUP');
  t.match(await b.line((l) => /config reload refused/.test(l.msg), from), { level: 50, code: 'ERR_CONFIG_INVALID', err: /broker\.yaml: acl\.subscribe\[0\]/ });
  writeFileSync(cfg, config({ acl: '{ allow: true, topic: "secret/#" }', level: 'info' }));
  writeFileSync(pw, 'not a password line\n');
  from = b.lines.length;
  b.child.kill('SIGHUP');
  t.match(await b.line((l) => /config reload refused/.test(l.msg), from), { level: 50, code: 'ERR_PASSWORD_FILE_INVALID' });
  t.equal(await loginCode(url, { clientId: 'alice:4', username: 'alice', password: 'new-secret' }), 0, 'the last good password file still applies');
  // The log level and the trusted operators are reloaded too.
  await passwd(join(dir, 'passwd2'), 'x', 'y'); // a valid file again, for the last reload
  writeFileSync(pw, readFileSync(join(dir, 'passwd2')));
  writeFileSync(cfg, config({ acl: '{ allow: true, topic: "secret/#" }', level: 'debug', operators: `"${'a'.repeat(26)}"` }));
  from = b.lines.length;
  b.child.kill('SIGHUP');
  const last = (await b.line((l) => /^config reloaded/.test(l.msg), from)).changed as string[];
  t.ok(last.includes('log.level') && last.includes('admission.operators'), `log.level and admission.operators reloaded: ${last.join(', ')}`);

  // /metrics: the standard process names, build info, the latency histograms, the reloads.
  const text = await (await fetch(`${http}/metrics`)).text();
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) t.match(text, new RegExp(`^${name} `, 'm'), name);
  t.notMatch(text, /qis_broker_process_/, 'no prefixed process metrics');
  t.match(text, /^qis_build_info\{version="\d+\.\d+\.\d+[^"]*",node="v\d+\.\d+\.\d+"\} 1$/m);
  t.match(text, /^qis_admission_seconds_count\{kind="outcome"\} [1-9]/m, 'the outcome admission was timed');
  t.match(text, /^qis_verify_seconds_count [1-9]/m, 'its verification was timed');
  t.match(text, /^qis_verify_inline_total [1-9]/m, 'verifyWorkers 0: the main thread verified it');
  t.match(text, /^# TYPE qis_sync_hold_seconds histogram$/m);
  t.match(text, /^# TYPE qis_federation_hop_seconds histogram$/m);
  t.match(text, /^qis_config_reloads_total\{result="applied"\} 2$/m);
  t.match(text, /^qis_config_reloads_total\{result="refused"\} 2$/m);
  t.match(text, /^qis_federation_link_up\{peer="west"\} 0$/m);

  // /healthz: the link's state, JSON.
  const health = (await (await fetch(`${http}/healthz`)).json()) as { ok: boolean; links: { peer: string; connected: boolean }[] };
  t.equal(health.ok, true);
  t.match(health.links, [{ peer: 'west', connected: false }]);

  // The Grafana dashboard asks only for metrics this broker exports.
  const dash = JSON.parse(readFileSync(join(ROOT, 'examples/grafana/qis-broker.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr));
  t.ok(exprs.length >= 8, `${exprs.length} expressions`);
  const exported = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap((m) => (m[2] === 'histogram' ? [`${m[1]}_bucket`, `${m[1]}_sum`, `${m[1]}_count`] : [m[1]!])));
  const PROMQL = new Set(['sum', 'rate', 'irate', 'increase', 'by', 'histogram_quantile', 'le', 'max', 'min', 'avg', 'count', 'on', 'without', 'time', 'clamp_min', 'topk', 'and', 'or', 'unless', 'ignoring', 'group_left']);
  for (const expr of exprs) {
    // Metric names: identifiers not inside {…} label matchers or […] ranges, not PromQL words.
    const bare = expr.replace(/\{[^}]*\}/g, '').replace(/\[[^\]]*\]/g, '').replace(/"[^"]*"/g, '');
    const names = [...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((w) => !PROMQL.has(w) && !/^\d/.test(w));
    const byLabels = [...expr.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()));
    for (const n of names.filter((w) => !byLabels.includes(w))) t.ok(exported.has(n), `${n} (in ${expr}) is exported`);
  }

  b.child.kill('SIGTERM');
  t.equal(await b.exited, 0, b.stderr());
  t.same(b.notJson, [], 'every stdout line is JSON');
  t.equal(b.stderr(), '', 'nothing on stderr');
  t.ok(b.lines.some((l) => l.msg === 'broker closed'));
});

t.test('broker ops - HTTP on 127.0.0.1:9100 by default, --http off, a held port is ERR_ADDRESS_IN_USE', async (t) => {
  const dir = tempDir(t, 'qis-broker-ops-');
  const def = await qis(['broker', '--check', '--json', '--data-dir', join(dir, 'd')]);
  t.same((JSON.parse(def.stdout) as { options: { http?: unknown } }).options.http, { host: '127.0.0.1', port: 9100 });
  const off = await qis(['broker', '--check', '--json', '--http', 'off']);
  t.equal((JSON.parse(off.stdout) as { options: { http?: unknown } }).options.http, undefined, '--http off: no endpoint');
  const cfg = join(dir, 'off.yaml');
  writeFileSync(cfg, 'http: off\n');
  const fileOff = await qis(['broker', '--check', '--json', '--config', cfg]);
  t.equal((JSON.parse(fileOff.stdout) as { options: { http?: unknown } }).options.http, undefined, 'http: off in the file');
  t.match((await qis(['broker', '--help'])).stdout, /default 127\.0\.0\.1:9100/);

  const port = await heldPort(t);
  const r = await qis(['broker', '--listen', 'tcp://127.0.0.1:0', '--http', `127.0.0.1:${port}`, '--data-dir', join(dir, 'b'), '--verify-workers', '0', '--log-level', 'silent']);
  t.equal(r.status, 1);
  t.match(r.stderr, new RegExp(`qis: ERR_ADDRESS_IN_USE: the HTTP endpoint .*127\\.0\\.0\\.1:${port}.*--http off`));
});

t.test('broker ops - --verify-nice 19: the verify threads, and only they, run at niceness 19 and still verify', { skip: process.platform !== 'linux' || getPriority() >= 19 ? 'needs Linux and a test process below niceness 19' : false }, async (t) => {
  const dir = tempDir(t, 'qis-broker-nice-');
  const b = spawnBroker(t, ['--listen', 'tcp://127.0.0.1:0', '--http', 'off', '--data-dir', join(dir, 'data'), '--verify-workers', '2', '--verify-nice', '19']);
  const listening = await b.line((l) => l.msg === 'broker listening');
  t.match(listening, { verifyWorkers: 2, verifyNice: 19 }, 'the start line says it');
  const pid = b.child.pid as number;
  const base = getPriority(); // the broker inherits this process's niceness
  // Each thread lowers its own priority as it starts.
  const threads = await untilNiced(pid, 19, 2);
  t.equal(threads.filter((x) => x.nice === 19).length, 2, 'two threads at 19: the verify threads');
  t.equal(threads.find((x) => x.tid === pid)?.nice, base, 'the main thread keeps the niceness it was started with');
  t.ok(threads.filter((x) => x.nice === base).length > 1, 'and so do the threads that are not verify threads');

  // The niced threads verify: a signed packet is stored, a forged one refused.
  const url = `mqtt://127.0.0.1:${(listening.listeners as { type: string; port: number }[]).find((a) => a.type === 'tcp')?.port}`;
  const c = await connect(url, { clientId: 'nice-pub' });
  t.teardown(() => c.end(true));
  const key = keyFromSeed(new Uint8Array(32).fill(7));
  const good = createOutcomePacket({ key, template: bearing, situation, outcome: 'failure', seq: 1, ts: Date.now() });
  await c.publishAsync(good.topic, Buffer.from(good.packet), { qos: 1, retain: true });
  const forged = Buffer.from(createOutcomePacket({ key, template: bearing, situation, outcome: 'failure', seq: 2, ts: Date.now() }).packet);
  forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1; // the signature's last byte
  c.publish(good.topic, forged, { qos: 1, retain: true }, () => undefined); // no PUBACK: a bad signature closes the connection
  t.match(await b.line((l) => l.code === 'ERR_BAD_SIGNATURE'), { code: 'ERR_BAD_SIGNATURE', clientId: 'nice-pub' }, 'the forgery is refused as a bad signature');
  const sub = await connect(url, { clientId: 'nice-sub' });
  t.teardown(() => sub.end(true));
  const got = new Promise<Buffer>((r) => sub.once('message', (_topic, payload) => r(payload)));
  await sub.subscribeAsync(good.topic, { qos: 1 });
  t.same([...(await got)], [...good.packet], 'the retained packet is the signed one');
});

t.test('broker ops - --verify-nice never raises a priority, and says when it does nothing', { skip: process.platform !== 'linux' || getPriority() > 9 ? 'needs Linux and a test process below niceness 10' : false }, async (t) => {
  const dir = tempDir(t, 'qis-broker-nice-');
  const base = getPriority();
  // Started at niceness base + 10, asked for 5 (below that): the verify threads stay where the broker is.
  const b = spawnBroker(t, ['--listen', 'tcp://127.0.0.1:0', '--http', 'off', '--data-dir', join(dir, 'a'), '--verify-workers', '2', '--verify-nice', '5'], ['nice', '-n', '10']);
  const listening = await b.line((l) => l.msg === 'broker listening');
  t.equal(listening.verifyNice, 5, 'asked for, on Linux with threads: no warning');
  await new Promise((r) => setTimeout(r, 500)); // the threads have started (the start line comes after the verifier)
  const nices = threadNice(b.child.pid as number).map((x) => x.nice);
  t.same([...new Set(nices)], [base + 10], 'every thread, the verify threads among them, at the niceness the broker was started with');
  t.notOk(nices.includes(5), 'none raised to 5');

  const inline = spawnBroker(t, ['--listen', 'tcp://127.0.0.1:0', '--http', 'off', '--data-dir', join(dir, 'b'), '--verify-workers', '0', '--verify-nice', '19']);
  t.match(await inline.line((l) => /verifyNice ignored/.test(l.msg)), { level: 40, msg: 'verifyNice ignored: no verify threads (verifyWorkers 0)', verifyNice: 19 });
  t.notOk('verifyNice' in (await inline.line((l) => l.msg === 'broker listening')), 'the start line does not claim it');
});

t.test('broker ops - the logger: readable lines on a terminal, JSON otherwise', async (t) => {
  const written: string[] = [];
  const stream = (isTTY: boolean): NodeJS.WritableStream & { isTTY: boolean } => Object.assign(new Writable({ write: (c: Buffer, _e, cb) => (written.push(c.toString()), cb()) }), { isTTY });
  createLogger({ level: 'info', base: { broker: 'b1' }, stream: stream(true) }).info({ clientId: 'c 1', n: 2 }, 'client connected');
  t.match(written[0], /^\d\d:\d\d:\d\d\.\d{3} INFO  client connected {2}broker=b1 clientId="c 1" n=2\n$/, 'a terminal gets a readable line');
  createLogger({ level: 'info', stream: stream(false) }).warn({ code: 'ERR_X' }, 'piped');
  t.match(JSON.parse(written[1] ?? '') as object, { level: 40, code: 'ERR_X', msg: 'piped' }, 'a pipe gets JSON');
  t.equal(written.length, 2);
});

t.test('broker ops - connects and disconnects are logged within a budget, the rest counted', async (t) => {
  const aedes = new EventEmitter() as EventEmitter & Aedes;
  const lines: { msg: string; notLogged?: number }[] = [];
  const logger = { info: (o: object, msg: string) => lines.push({ ...o, msg }) } as unknown as Logger;
  let now = 1_000_000;
  logConnections({ logger, now: () => now, auth: { identity: () => undefined, user: () => undefined } as unknown as Authenticator }, aedes, () => false);
  const client = (id: string): Client => ({ id, conn: {} }) as unknown as Client;
  for (let i = 0; i < CONN_LOG_BURST + 300; i++) aedes.emit('client', client(`c${i}`));
  t.equal(lines.length, CONN_LOG_BURST, 'a storm writes the burst, no more');
  now += 1000; // one second: CONN_LOG_PER_SECOND lines more
  const quiet = client('q');
  aedes.emit('client', quiet);
  t.match(lines.at(-2), { notLogged: 300 }, 'the lines not written are said in one line');
  t.match(lines.at(-1), { msg: 'client connected', clientId: 'q' });
  (quiet as Client & { _disconnected: boolean })._disconnected = true;
  aedes.emit('clientDisconnect', quiet);
  t.match(lines.at(-1), { msg: 'client disconnected', clientId: 'q', reason: 'DISCONNECT' });
  const k = client('k');
  aedes.emit('client', k);
  aedes.emit('keepaliveTimeout', k);
  aedes.emit('clientDisconnect', k);
  t.match(lines.at(-1), { clientId: 'k', reason: 'keepalive timeout' });
});
