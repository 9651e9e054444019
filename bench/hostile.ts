/**
 * Issue 13's attacks on a broker, each beside the same attack on Mosquitto configured with its
 * equivalent limits, in one run: per attack the broker's RSS growth (peak during the attack minus
 * the RSS before it, /proc/<pid>/status VmRSS, read from outside) and the p99 of a well-behaved
 * client's publish + read-back round trip, timed continuously during the attack and once after.
 * Every broker is a separate process, fresh for each attack. Sizes are smaller than the issue's
 * (so the run takes ≤ 3 minutes) but of the same kind:
 *
 *   hangup     20,000 stored packets (qis: its store; Mosquitto: as many retained messages of
 *              the same size), 8 waves of 50 clients SUBSCRIBE qis/1/o/# and hang up at once
 *   announce   6 connections announce a 256 MB PUBLISH before CONNECT and send 4 MB of it
 *   silent     500 clients CONNECT with keepalive 0 and stay silent
 *   retained   3,000 retained messages × 10 KB on ordinary topics, then a new `#` subscriber
 *   utf8       200 connections publish on a topic with invalid UTF-8
 *
 * Rows the issue has that Mosquitto has no counterpart for (federation requests, key minting, sync
 * topics, the edge node's waits) are tested in test/hostile-broker.test.ts and test/node-hostile.test.ts.
 *
 *   node dist/bench/hostile.js [--json-out=FILE] [--only=hangup,announce]
 */
import { connect as netConnect } from 'node:net';
import os from 'node:os';
import { optStr } from './args.js';
import { connectPacket, cpuMs, rawClient, roundTripMs, rssBytes, sleep, startMosquittoProc, startQisProc, subscribeAndHangUp, varint, type BrokerProc } from './hostile-kit.js';
import { writeResults, type BenchResult } from './result.js';

const MB = 1024 * 1024;
const PACKETS = 20_000;

/** Mosquitto's knobs set to what our defaults are (BROKER_DEFAULTS.limits), so both refuse alike. */
const MOSQUITTO_LIMITS = [
  'max_packet_size 1048576',
  'max_connections 10000',
  'max_keepalive 300',
  'max_queued_messages 1000',
  'max_queued_bytes 67108864',
  'memory_limit 1073741824',
  'max_inflight_messages 20',
];

interface Attack {
  readonly name: string;
  readonly what: string;
  /** Prepares a fresh broker (fills it) before the baseline. */
  prepare?(b: BrokerProc): Promise<void>;
  run(b: BrokerProc): Promise<void>;
}

/** A QoS 0 retained PUBLISH. */
function publishPacket(topic: string, payload: Buffer, first = 0x31): Buffer {
  const t = Buffer.from(topic, 'utf8');
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t, payload]);
  return Buffer.concat([Buffer.from([first]), varint(body.length), body]);
}

/** Writes `packets` on one connection (after CONNECT), in ~64 KB writes, waiting for drains, then waits for a round trip. */
async function flood(port: number, id: string, packets: (i: number) => Buffer, count: number): Promise<void> {
  const c = await rawClient(port);
  c.s.write(connectPacket(id, 60));
  let batch: Buffer[] = [];
  let size = 0;
  for (let i = 0; i < count; i++) {
    const p = packets(i);
    batch.push(p);
    size += p.length;
    if (size >= 64 * 1024 || i === count - 1) {
      if (!c.s.write(Buffer.concat(batch))) await new Promise((r) => c.s.once('drain', r));
      batch = [];
      size = 0;
    }
  }
  // PINGREQ → PINGRESP: everything before it was read.
  const before = c.received();
  c.s.write(Buffer.from([0xc0, 0]));
  const end = Date.now() + 60_000;
  while (c.received() - before < 2 && !c.s.destroyed && Date.now() < end) await sleep(20);
  c.s.destroy();
}

const ATTACKS: readonly Attack[] = [
  {
    name: 'hangup',
    what: `${PACKETS} stored, 8 × 50 clients SUBSCRIBE qis/1/o/# and hang up`,
    async prepare(b) {
      // qis: filled at start (its store). Mosquitto: as many retained messages of a packet's size.
      if (b.name !== 'mosquitto') return;
      const payload = Buffer.alloc(400, 0x61);
      await flood(b.port, 'filler', (i) => publishPacket(`qis/1/o/t/a/b/c/${i}`, payload), PACKETS);
    },
    async run(b) {
      for (let w = 0; w < 8; w++) await subscribeAndHangUp(b.port, 50, 'qis/1/o/#', `w${w}`);
    },
  },
  {
    name: 'announce',
    what: '6 connections announce a 256 MB PUBLISH before CONNECT, send 4 MB',
    async run(b) {
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          const c = await rawClient(b.port);
          c.s.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
          const chunk = Buffer.alloc(64 * 1024, 0x61);
          for (let i = 0; i < 64 && !c.s.destroyed; i++) if (!c.s.write(chunk)) await Promise.race([new Promise((r) => c.s.once('drain', r)), c.closed, sleep(2000)]);
          await Promise.race([c.closed, sleep(3000)]);
          c.s.destroy();
        }),
      );
    },
  },
  {
    name: 'silent',
    what: '500 clients CONNECT with keepalive 0 and stay silent',
    async run(b) {
      const held = await Promise.all(
        Array.from({ length: 500 }, async (_, i) => {
          const c = await rawClient(b.port);
          c.s.write(connectPacket(`silent-${i}`, 0));
          return c;
        }),
      );
      await sleep(2000);
      for (const c of held) c.s.destroy();
    },
  },
  {
    name: 'retained',
    what: '3,000 retained × 10 KB on ordinary topics, then a new # subscriber',
    async run(b) {
      const payload = Buffer.alloc(10 * 1024, 0x62);
      await flood(b.port, 'retainer', (i) => publishPacket(`junk/${i}`, payload), 3000);
      await new Promise<void>((resolve) => {
        const s = netConnect(b.port, '127.0.0.1');
        s.on('error', () => resolve());
        s.write(connectPacket('hash-reader', 60));
        s.write(Buffer.from([0x82, 6, 0, 1, 0, 1, 0x23, 0]));
        let n = 0;
        s.on('data', (d: Buffer) => (n += d.length));
        const started = Date.now();
        const iv = setInterval(() => {
          if (n >= 3000 * 10 * 1024 * 0.9 || Date.now() - started > 10_000) {
            clearInterval(iv);
            s.destroy();
            resolve();
          }
        }, 50);
      });
    },
  },
  {
    name: 'utf8',
    what: '200 connections publish on a topic with invalid UTF-8',
    async run(b) {
      const bad = Buffer.from([0x61, 0xff, 0x62]);
      for (let k = 0; k < 4; k++) {
        await Promise.all(
          Array.from({ length: 50 }, async (_, i) => {
            const c = await rawClient(b.port);
            c.s.write(connectPacket(`utf8-${k}-${i}`, 60));
            const body = Buffer.concat([Buffer.from([0, bad.length]), bad, Buffer.from('x')]);
            c.s.write(Buffer.concat([Buffer.from([0x30, body.length]), body]));
            await Promise.race([c.closed, sleep(2000)]);
            c.s.destroy();
          }),
        );
      }
    },
  },
];

interface Figures {
  readonly rssGrowth: number;
  readonly p99: number;
  readonly rounds: number;
  readonly after: number;
  /** CPU the broker spent in the 2 s after the attack, ms. */
  readonly cpuAfter: number;
}

const p99 = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)] ?? NaN;
};

async function measure(a: Attack, start: () => Promise<BrokerProc>): Promise<Figures> {
  const b = await start();
  try {
    await a.prepare?.(b);
    await roundTripMs(b.url, 'warm');
    await sleep(500);
    const base = rssBytes(b.pid);
    let peak = base;
    const sample = setInterval(() => (peak = Math.max(peak, rssBytes(b.pid))), 50);
    const rts: number[] = [];
    let done = false;
    const attack = a.run(b).finally(() => (done = true));
    while (!done) {
      rts.push(await roundTripMs(b.url, `d${rts.length}`).catch(() => 10_000));
      await sleep(50);
    }
    await attack;
    const c0 = cpuMs(b.pid);
    await sleep(2000);
    const cpuAfter = cpuMs(b.pid) - c0;
    const after = await roundTripMs(b.url, 'after').catch(() => 10_000);
    rts.push(after);
    clearInterval(sample);
    peak = Math.max(peak, rssBytes(b.pid));
    return { rssGrowth: (peak - base) / MB, p99: p99(rts), rounds: rts.length, after, cpuAfter };
  } finally {
    await b.stop();
  }
}

async function main(): Promise<void> {
  const only = optStr('only')?.split(',');
  const chosen = ATTACKS.filter((a) => !only || only.includes(a.name));
  const t0 = performance.now();
  const load0 = os.loadavg()[0] ?? 0;
  const rows: string[] = [];
  const results: BenchResult[] = [];
  const fmt = (f: Figures): string => `RSS +${f.rssGrowth.toFixed(0).padStart(4)} MB  p99 ${f.p99.toFixed(0).padStart(5)} ms (${f.rounds} round trips)  CPU after ${f.cpuAfter.toFixed(0).padStart(4)} ms`;
  for (const a of chosen) {
    const qis = await measure(a, () => startQisProc(a.name === 'hangup' ? { fill: PACKETS } : {}));
    const mosq = await measure(a, () => startMosquittoProc(MOSQUITTO_LIMITS));
    rows.push(`${a.name.padEnd(9)} ${a.what}`, `  qis        ${fmt(qis)}`, `  mosquitto  ${fmt(mosq)}`);
    process.stderr.write(`${rows.slice(-3).join('\n')}\n`);
    results.push(
      { bench: 'hostile', measure: `${a.name}: broker RSS growth`, value: Number(qis.rssGrowth.toFixed(1)), unit: 'MB', peer: Number(mosq.rssGrowth.toFixed(1)), peerName: 'Mosquitto', ratio: mosq.rssGrowth > 0 ? qis.rssGrowth / mosq.rssGrowth : NaN, goal: { on: 'value', op: '<=', limit: 300 }, spread: 0 },
      { bench: 'hostile', measure: `${a.name}: good client round trip p99`, value: Number(qis.p99.toFixed(1)), unit: 'ms', peer: Number(mosq.p99.toFixed(1)), peerName: 'Mosquitto', ratio: qis.p99 / mosq.p99, goal: { on: 'value', op: '<=', limit: 1000 }, spread: 0 },
    );
  }
  const load1 = os.loadavg()[0] ?? 0;
  process.stdout.write(
    [
      `bench/hostile — each attack on a fresh broker process; RSS growth = peak VmRSS during the attack − before; p99 of a good client's publish + read-back during and after (10000 ms: a round trip that failed, e.g. CONNACK timeout)`,
      `Mosquitto with: ${MOSQUITTO_LIMITS.join(', ')}`,
      ...rows,
      `${((performance.now() - t0) / 1000).toFixed(0)} s; load average (1 min) ${load0.toFixed(2)} at start, ${load1.toFixed(2)} at end, ${os.cpus().length} CPUs`,
      '',
    ].join('\n'),
  );
  writeResults(results);
}

await main();
