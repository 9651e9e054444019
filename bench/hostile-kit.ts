/**
 * What bench/hostile.ts and the hostile tests (test/retained-stream.test.ts) share: brokers as
 * separate processes (`qis broker` from dist/, Mosquitto with extra config lines), their RSS read
 * from outside (/proc/<pid>/status VmRSS), a store filled with many packets without signing each,
 * raw MQTT attackers, and a well-behaved client's publish + read-back round trip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { b32, createOutcomePacket, keyFromSeed, loadTemplate, parseOutcomeTopic } from '../src/index.js';
import { openStore } from '../broker/store.js';
import { findBinary, freePort, waitForPort } from './net.js';

/** The repository root (this file runs from bench/ under tap and from dist/bench/ as a bench). */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('package.json not found above bench/hostile-kit');
    d = up;
  }
  return d;
}
export const ROOT = repoRoot();
/** The built CLI (`npm run build` / `npx tsc -p tsconfig.json`). */
export const QIS_CLI = join(ROOT, 'dist/cli/qis.js');

/** Resident set size of process `pid` from /proc (bytes): measured from outside the process. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) process `pid` has used so far, ms, from /proc/<pid>/stat. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at ") "; utime and stime are the 12th and 13th of those.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Fills `<dataDir>/store` with `count` outcome packets straight through broker/store.ts: one real
 * signed packet's bytes under `count` synthetic node ids (as bench/broker.ts's million-packet
 * fill), so a large store costs seconds, not a signature each. The broker does not re-verify at
 * open; retained delivery serves these bytes as they are.
 */
export async function fillStore(dataDir: string, count: number): Promise<void> {
  const template = await loadTemplate(join(ROOT, 'examples/bearing-failure.yaml'));
  const situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
  const ts = Date.now();
  const real = createOutcomePacket({ key: keyFromSeed(new Uint8Array(32).fill(7)), template, situation, outcome: 'failure', seq: 1, ts });
  const store = await openStore({ dir: join(dataDir, 'store'), fsync: 'never', autoCompact: false });
  try {
    const id = Buffer.alloc(16);
    const prefix = real.topic.slice(0, real.topic.lastIndexOf('/') + 1);
    for (let i = 0; i < count; i += 512) {
      const batch: Promise<unknown>[] = [];
      for (let j = i; j < Math.min(count, i + 512); j++) {
        id.writeUInt32BE(j, 0);
        id.writeUInt32BE(0x9e3779b9, 4);
        id.writeUInt32BE((j * 2654435761) >>> 0, 8);
        id.writeUInt32BE(0x5eed, 12);
        const nodeId = b32(id);
        const topic = prefix + nodeId;
        batch.push(store.put({ tplId: parseOutcomeTopic(topic).tplId, nodeId, topic, seq: 1, packet: real.packet }));
      }
      await Promise.all(batch);
    }
  } finally {
    await store.close();
  }
}

export interface BrokerProc {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, SIGKILL after `graceMs`; removes its temp dir. */
  stop(graceMs?: number): Promise<void>;
}

function track(name: string, child: ChildProcess, port: number, dir: string): BrokerProc {
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-64_000)));
  child.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-64_000)));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig ?? 'unknown')));
  return {
    name,
    pid: child.pid as number,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    output: () => out,
    exited,
    async stop(graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function started(p: BrokerProc, what: string): Promise<BrokerProc> {
  try {
    await Promise.race([waitForPort(p.port, Date.now() + 60_000), p.exited.then((c) => Promise.reject(new Error(`${what} exited (${c}): ${p.output()}`)))]);
    return p;
  } catch (e) {
    await p.stop(1000);
    throw e;
  }
}

/**
 * `qis broker` (dist/cli/qis.js) in its own process on a free loopback port, with `flags` (key
 * flags: `--limits.shutdown-grace-ms 2000`, `--acl.subscribe deny:x`, …); `fill` packets are put
 * in its store first.
 */
export async function startQisProc(opts: { flags?: readonly string[]; fill?: number; logLevel?: string; nodeArgs?: readonly string[] } = {}): Promise<BrokerProc> {
  const dir = mkdtempSync(join(tmpdir(), 'qis-hostile-'));
  if (opts.fill) await fillStore(dir, opts.fill);
  const port = await freePort();
  const args = [...(opts.nodeArgs ?? []), QIS_CLI, 'broker', '--json', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', dir, '--fsync', 'never', '--verify-workers', '0', '--log-level', opts.logLevel ?? 'warn', ...(opts.flags ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return started(track('qis', child, port, dir), 'qis broker');
}

/** Mosquitto (Debian `mosquitto`) on a free loopback port with `conf` lines added to a throwaway config. */
export async function startMosquittoProc(conf: readonly string[] = [], files: Record<string, string> = {}): Promise<BrokerProc> {
  const dir = mkdtempSync(join(tmpdir(), 'qis-mosq-'));
  const port = await freePort();
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const file = join(dir, 'mosquitto.conf');
  // As root, mosquitto drops to user "mosquitto" unless told otherwise; logging to stderr needs no log dir.
  const lines = [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'user root', ...conf.map((l) => l.replaceAll('$DIR', dir)), ''];
  writeFileSync(file, lines.join('\n'));
  const child = spawn(findBinary('mosquitto'), ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  return started(track('mosquitto', child, port, dir), 'mosquitto');
}

/** A raw MQTT 3.1.1 connection (no library that would refuse to misbehave). */
export interface RawClient {
  readonly s: Socket;
  readonly data: Buffer[];
  readonly closed: Promise<void>;
  /** Bytes received so far. */
  received(): number;
}

export async function rawClient(port: number): Promise<RawClient> {
  const s = netConnect(port, '127.0.0.1');
  s.on('error', () => undefined);
  const data: Buffer[] = [];
  let n = 0;
  s.on('data', (d: Buffer) => {
    n += d.length;
    if (data.length < 4) data.push(d);
  });
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  });
  return { s, data, closed, received: () => n };
}

/** MQTT's remaining-length varint. */
export function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}
const str = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};
const packet = (first: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([first]), varint(body.length), body]);

/** CONNECT, MQTT 3.1.1 (level 4), no will, no credentials. */
export const connectPacket = (clientId: string, keepalive = 30, clean = true): Buffer =>
  packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, clean ? 0x02 : 0x00, keepalive >> 8, keepalive & 0xff]), str(clientId)]));
/** SUBSCRIBE of one filter. */
export const subscribePacket = (filter: string, qos: 0 | 1 = 1, messageId = 1): Buffer =>
  packet(0x82, Buffer.concat([Buffer.from([messageId >> 8, messageId & 0xff]), str(filter), Buffer.from([qos])]));

/**
 * Row 1 of issue 13: `n` clients CONNECT and SUBSCRIBE `filter`, wait for the first bytes of the
 * retained stream (so the broker has started it), then hang up at once.
 */
export async function subscribeAndHangUp(port: number, n: number, filter = 'qis/1/o/#', label = 'hangup'): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const c = await rawClient(port);
      c.s.write(Buffer.concat([connectPacket(`${label}-${i}-${Date.now()}`), subscribePacket(filter)]));
      // CONNACK (4 bytes) + SUBACK (5 bytes), then the stream: hang up once it has begun.
      const deadline = Date.now() + 10_000;
      while (c.received() < 64 && !c.s.destroyed && Date.now() < deadline) await sleep(5);
      c.s.destroy();
      await c.closed;
    }),
  );
}

/** A well-behaved client publishes a retained message and reads it back; resolves with the ms it took. */
export async function roundTripMs(url: string, label: string, timeoutMs = 10_000): Promise<number> {
  const t0 = performance.now();
  const c = await mqtt.connectAsync(url, { clientId: `good-${label}-${process.pid}`, reconnectPeriod: 0, connectTimeout: timeoutMs });
  try {
    const topic = `good/${label}`;
    const payload = `${label}-${t0}`;
    await c.publishAsync(topic, payload, { qos: 1, retain: true });
    const got = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label}: no read-back within ${timeoutMs} ms`)), timeoutMs);
      c.on('message', (tp, p) => {
        if (tp === topic && p.toString() === payload) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await c.subscribeAsync(topic, { qos: 1 });
    await got;
    return performance.now() - t0;
  } finally {
    await c.endAsync(true);
  }
}
