/**
 * Federation benchmark (issues 5, 15): the latency a federation hop adds, the time to converge
 * after a partition, and catch-up bytes when the stores agree. Brokers are real qis brokers, each
 * in its own process (this file forked with --child=broker, calling createBroker: default verify
 * threads, fsync `--fsync`, default 'always', the broker's default: a PUBACK, and a peer's answer
 * to a batch, only after fdatasync), on loopback, linked as a chain A → B → C (link reconnect
 * backoff 100 ms, capped at 1 s). Clients (publishers, subscribers) are mqtt.js connections in
 * this process; the children answer IPC commands (store digest, link status, catch-up).
 *
 *   npm run bench                      (build, the other benches, then this)
 *   node dist/bench/federation.js      (about a minute and a half)
 *   node dist/bench/federation.js --json --rate=1000 --seconds=10 --updates=10000 --fsync=never
 *   node dist/bench/federation.js --verify-inline=0   (the brokers' verifyInline: 0, every packet to a verify thread)
 *
 * Part 1, latency per hop: `--rate` (1,000) signed packets a second for `--seconds` (10), paced
 * (each is sent at its scheduled time), published at QoS 1 to A over 20 connections; 100 nodes with
 * increasing seq (a node always on the same connection). Subscribers on A (the baseline: the same publish without a hop), on B (one hop)
 * and on C (two hops) timestamp arrivals on the same clock. Latency = arrival − scheduled send;
 * before it, `--warmup-seconds` (5; 0: none) of the same traffic from other nodes go through the
 * three brokers and are forgotten (a fresh broker is still compiling its packet path, which shows
 * in its latency), and the first measured second is not counted either. Added per hop = (percentile at C − percentile at A) / 2
 * and at B − at A.
 *
 * Part 2, convergence after a partition: A and B hold the same `--updates` (10,000) nodes; B stops;
 * every node gets a new packet at A (10,000 updates); B starts again. Time = B listening → B's store
 * digest equals A's (their digest indexes' roots, polled over IPC every 10 ms). Baseline, same run: the same 10,000 packets
 * published by a client straight into a fresh broker process (admission alone, pipelined QoS 1).
 * Ratio = convergence / baseline, per run; `--reps` (3) runs, each with its own baseline first and
 * fresh brokers, and the verdict is the median of their ratios (one run's ratio flipped between
 * PASS and MISS from run to run, with its spread unmeasured).
 *
 * Part 3, catch-up bytes when the stores agree: after part 2, A's link to B catches up again; its
 * bytes (requests and answers, both directions) against the store's bytes (topics + packets).
 */
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import mqtt, { type MqttClient } from 'mqtt';
import { parse } from 'yaml';
import { createBroker } from '../broker/server.js';
import { rootOf, storeRanges } from '../broker/federation/digest.js';
import { compileTemplate, createOutcomePacket, decodePacket, keyFromSeed, type NodeKey, type Situation } from '../src/index.js';
import { JSON_OUT, optNum, optStr } from './args.js';
import { nextMessage, request, stopChild, tracked, type Msg } from './child.js';
import { cleanup, cleanupOnSignals, cleanups, tempDir } from './cleanup.js';
import { freePort } from './net.js';
import { halfSpread, median, threadCpuMs } from './proc.js';
import { writeResults } from './result.js';

const SELF = fileURLToPath(import.meta.url);
const CHILD = optStr('child');
const FSYNC = optStr('fsync') ?? 'always';
/** `--cpu-prof=DIR`: each broker child writes a CPU profile there (node --cpu-prof). */
const PROF = optStr('cpu-prof');
if (FSYNC !== 'always' && FSYNC !== 'never' && FSYNC !== 'interval') throw new Error('--fsync must be always, interval or never');
/** `--verify-inline=N`: the brokers' verifyInline (default: theirs, 2,000 a second), for an A/B. */
const INLINE = optStr('verify-inline');
if (INLINE !== undefined && !/^\d+$/.test(INLINE)) throw new Error('--verify-inline must be a non-negative integer');

const RATE = optNum('rate', 1000);
const SECONDS = optNum('seconds', 10);
const UPDATES = optNum('updates', 10_000);
/** Part 2's runs (each a fresh baseline broker, then fresh A and B); the verdict is the median of their ratios. */
const REPS = optNum('reps', 3);
/** Part 1: seconds of the same paced traffic (other nodes) through the brokers before the measured window. */
const WARM_S = optNum('warmup-seconds', 5, true);

const template = compileTemplate(parse(readFileSync(new URL('../../examples/bearing-failure.yaml', import.meta.url), 'utf8')));
const SIT: Situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
const log = (s: string): void => {
  if (!JSON_OUT) process.stdout.write(`${s}\n`);
};

function keyOf(i: number, salt: number): NodeKey {
  const s = new Uint8Array(32);
  new DataView(s.buffer).setUint32(0, salt);
  new DataView(s.buffer).setUint32(4, i);
  return keyFromSeed(s);
}
const sign = (key: NodeKey, seq: number, i: number): { topic: string; packet: Uint8Array } =>
  createOutcomePacket({ key, template, situation: { ...SIT, machine_model: `KX-${i % 50}` }, outcome: seq % 2 ? 'failure' : 'no_failure', seq, ts: Date.now() });

/** A broker child: this file with --child=broker; answers 'digest', 'status', 'catchup', 'size', 'close' over IPC. */
interface Region {
  readonly pid: number;
  ask(cmd: string, ms?: number): Promise<Msg>;
  digest(): Promise<string>;
  status(): Promise<LinkStatusLite[]>;
  close(): Promise<void>;
}
interface LinkStatusLite {
  connected: boolean;
  catchUps: number;
  history: { sent: number; bytes: number; ms: number }[];
  lastCatchUp?: { bytes: number; mode: string };
}

async function region(name: string, port: number, peers: number[], dataDir = tempDir(`qis-fedbench-${name}-`)): Promise<Region> {
  const conf = JSON.stringify({ name, port, peers, dataDir, fsync: FSYNC, ...(INLINE !== undefined ? { verifyInline: Number(INLINE) } : {}) });
  const child: ChildProcess = tracked(fork(SELF, ['--child=broker', `--conf=${conf}`], { execArgv: PROF ? ['--cpu-prof', `--cpu-prof-dir=${PROF}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await nextMessage(child, (m) => m.ready === true, 120_000, `broker ${name}`);
  const r: Region = {
    pid: child.pid as number,
    ask: (cmd, ms) => request(child, cmd, ms),
    digest: async () => String((await request(child, 'digest')).digest),
    status: async () => (await request(child, 'status')).status as LinkStatusLite[],
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((res) => child.once('exit', () => res()));
      child.send({ cmd: 'close' });
      await Promise.race([exited, new Promise((res) => setTimeout(res, 15_000))]);
      await stopChild(child);
    },
  };
  return r;
}

/** The broker child: a qis broker of region `name` on 127.0.0.1:`port`, linked to `peers`. */
async function childBroker(): Promise<void> {
  const o = JSON.parse(optStr('conf') ?? '{}') as { name: string; port: number; peers: number[]; dataDir: string; fsync: 'always' | 'interval' | 'never'; verifyInline?: number };
  const b = await createBroker(
    {
      listeners: [{ type: 'tcp', host: '127.0.0.1', port: o.port }],
      dataDir: o.dataDir,
      fsync: o.fsync,
      ...(o.verifyInline !== undefined ? { verifyInline: o.verifyInline } : {}),
      // Catch-ups of the whole store over loopback: the publish rate limit would measure itself.
      admission: { ratePerSecond: 0 },
      federation: { region: o.name, peers: o.peers.map((p) => ({ url: `mqtt://127.0.0.1:${p}`, share: ['*'], accept: ['*'], rateLimit: 0 })), reconnect: { baseMs: 100, capMs: 1000 }, linksFrom: ['127.0.0.1'] },
    },
    { logger: pino({ level: process.env['FEDBENCH_LOG'] ?? 'silent' }, pino.destination(2)) },
  );
  const send = (m: Msg): void => void process.send?.(m);
  process.on('message', (m: { cmd?: string }) => {
    switch (m.cmd) {
      case 'digest': {
        // From the store's digest index (kept up to date as it changes), not storeDigest: that
        // hashes every key at each call, and polled every 10 ms it was most of B's CPU.
        const d = storeRanges(b.store, '*');
        return send({ reply: 'digest', digest: rootOf(d.ranges, d.n) });
      }
      case 'cpu': {
        const u = process.cpuUsage();
        return send({ reply: 'cpu', ms: (u.user + u.system) / 1000 });
      }
      case 'status':
        return send({ reply: 'status', status: b.federation?.status() ?? [] });
      case 'catchup':
        return void (b.federation?.catchUp() ?? Promise.resolve()).then(() => send({ reply: 'catchup', status: b.federation?.status() ?? [] }));
      case 'size': {
        let bytes = 0;
        for (const p of b.store.match('#')) bytes += p.topic.length + p.packet.length;
        return send({ reply: 'size', packets: b.store.size, bytes });
      }
      case 'close':
        return void b.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
    }
  });
  // The bench died, or stops it: do not outlive it (closing first, so a --cpu-prof profile is written).
  const end = (): void => void b.close().finally(() => process.exit(0));
  process.on('disconnect', end);
  process.once('SIGTERM', end);
  send({ ready: true });
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, everyMs = 5): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
const linked = async (b: Region, n = 1): Promise<boolean> => (await b.status()).every((s) => s.connected && s.catchUps >= n);
const same = async (a: Region, b: Region): Promise<boolean> => {
  const [x, y] = await Promise.all([a.digest(), b.digest()]);
  return x === y;
};

/** CPU µs per message of each thread group between two threadCpuMs samples, largest first: "main 250, node 180, …". */
function perThread(before: Map<string, number>, after: Map<string, number>, n: number): string {
  return [...after]
    .map(([k, ms]) => [k, ((ms - (before.get(k) ?? 0)) / n) * 1000] as const)
    .filter(([, us]) => us >= 1)
    .sort((x, y) => y[1] - x[1])
    .map(([k, us]) => `${k} ${us.toFixed(0)}`)
    .join(', ');
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number;
}

async function subscriber(port: number, arrivals: Map<string, number>): Promise<MqttClient> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: `sub-${port}-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 0 });
  c.on('message', (_t, payload) => {
    const p = decodePacket(payload);
    const k = `${p.nodeId}/${p.seq}`;
    if (!arrivals.has(k)) arrivals.set(k, performance.now());
  });
  await c.subscribeAsync(`qis/1/o/${template.tplId}/#`, { qos: 1 });
  cleanups.push(() => c.endAsync(true));
  return c;
}

async function latency(): Promise<Record<string, number>> {
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  const c = await region('c', pc, []);
  const b = await region('b', pb, [pc]);
  const a = await region('a', pa, [pb]);
  await until(async () => (await linked(a)) && (await linked(b)), 30_000, 50);
  const nodes = Array.from({ length: 100 }, (_, i) => keyOf(i, 1));
  // A node's packets go out in seq order on one connection: node i always uses connection i mod 20.
  const total = RATE * SECONDS;
  const msgs = Array.from({ length: total }, (_, k) => {
    const key = nodes[k % nodes.length] as NodeKey;
    return { ...sign(key, 1 + Math.floor(k / nodes.length), k % nodes.length), id: `${key.nodeId}/${1 + Math.floor(k / nodes.length)}` };
  });
  const at = [new Map<string, number>(), new Map<string, number>(), new Map<string, number>()];
  await subscriber(pa, at[0] as Map<string, number>);
  await subscriber(pb, at[1] as Map<string, number>);
  await subscriber(pc, at[2] as Map<string, number>);
  // Many nodes publish, each on its own connection (the broker admits one connection's publishes
  // in order, one disk sync each); 20 connections take the messages in turn.
  const pubs = await Promise.all(Array.from({ length: 20 }, (_, i) => mqtt.connectAsync(`mqtt://127.0.0.1:${pa}`, { clientId: `bench-pub-${i}`, reconnectPeriod: 0 })));
  for (const p of pubs) cleanups.push(() => p.endAsync(true));
  const cpu = (): Promise<number[]> => Promise.all([a, b, c].map(async (x) => (await x.ask('cpu')).ms as number));
  /** Publishes `list` paced at RATE over the 20 connections; `sched[k]` is each one's scheduled time. */
  const paced = (list: readonly { topic: string; packet: Uint8Array }[], sched: number[]): Promise<void> => {
    const t0 = performance.now() + 50;
    let k = 0;
    return new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        while (k < list.length && t0 + (k * 1000) / RATE <= now) {
          const m = list[k] as (typeof list)[number];
          sched[k] = t0 + (k * 1000) / RATE;
          (pubs[k % pubs.length] as MqttClient).publish(m.topic, Buffer.from(m.packet), { qos: 1, retain: true });
          k++;
        }
        if (k < list.length) setTimeout(tick, 1);
        else resolve();
      };
      setTimeout(tick, 50);
    });
  };
  if (WARM_S > 0) {
    // Warm-up: the same paced traffic from other nodes first, through all three brokers, then
    // forgotten. A fresh broker is still compiling its packet path over its first thousands of
    // messages (V8's optimising tiers), and its latency shows it: at 1,000 msg/s the measured
    // per-hop p50/p99 went from 30–133 / 292–464 ms cold to 13 / 26 ms after 5 s of warm-up, at
    // the same CPU per message. A running broker has that behind it.
    const warmNodes = Array.from({ length: 100 }, (_, i) => keyOf(i, 2));
    const warm = Array.from({ length: Math.round(RATE * WARM_S) }, (_, k) => sign(warmNodes[k % warmNodes.length] as NodeKey, 1 + Math.floor(k / warmNodes.length), k % warmNodes.length));
    await paced(warm, []);
    await until(() => (at[2] as Map<string, number>).size >= warm.length, 60_000).catch(() => undefined);
    for (const m of at) m.clear();
  }
  const cpu0 = await cpu();
  const threads0 = [a, b, c].map((x) => threadCpuMs(x.pid));
  const sched: number[] = [];
  await paced(msgs, sched);
  await until(() => (at[2] as Map<string, number>).size >= total, 60_000).catch(() => undefined);
  // Broker CPU (all its threads) per message: what a hop costs the machine, independent of its load.
  const [ca, cb, cc] = (await cpu()).map((x, i) => (x - (cpu0[i] as number)) / total) as [number, number, number];
  const threads = [a, b, c].map((x, i) => perThread(threads0[i] as Map<string, number>, threadCpuMs(x.pid), total));
  const warm = RATE; // first second not counted
  const lat = at.map((m) => {
    const xs: number[] = [];
    for (let i = warm; i < total; i++) {
      const v = m.get((msgs[i] as (typeof msgs)[number]).id);
      if (v !== undefined) xs.push(v - (sched[i] as number));
    }
    return xs;
  });
  const [la, lb, lc] = lat as [number[], number[], number[]];
  const r = {
    rate: RATE,
    counted: total - warm,
    receivedA: la.length,
    receivedB: lb.length,
    receivedC: lc.length,
    p50A: pct(la, 50),
    p99A: pct(la, 99),
    p50B: pct(lb, 50),
    p99B: pct(lb, 99),
    p50C: pct(lc, 50),
    p99C: pct(lc, 99),
    cpuA: ca,
    cpuB: cb,
    cpuC: cc,
  };
  const f = (x: number): string => x.toFixed(1);
  log(`\nPart 1: latency per federation hop, ${RATE} msg/s paced for ${SECONDS} s (after ${WARM_S} s of warm-up traffic; first second not counted), chain A → B → C, one process per broker, fsync '${FSYNC}'${INLINE !== undefined ? `, verifyInline ${INLINE}` : ''}`);
  log(`  origin A (baseline, no hop)  p50 ${f(r.p50A)} ms  p99 ${f(r.p99A)} ms  (${la.length}/${total - warm} received)`);
  log(`  B, one hop                   p50 ${f(r.p50B)} ms  p99 ${f(r.p99B)} ms  (${lb.length}) → added p50 ${f(r.p50B - r.p50A)} ms, p99 ${f(r.p99B - r.p99A)} ms; ratio p50 ${(r.p50B / r.p50A).toFixed(2)}×`);
  log(`  C, two hops                  p50 ${f(r.p50C)} ms  p99 ${f(r.p99C)} ms  (${lc.length}) → per hop p50 ${f((r.p50C - r.p50A) / 2)} ms, p99 ${f((r.p99C - r.p99A) / 2)} ms`);
  log(`  broker CPU per message (all threads): A ${(ca * 1000).toFixed(0)} µs (admits, forwards), B ${(cb * 1000).toFixed(0)} µs (admits, forwards), C ${(cc * 1000).toFixed(0)} µs (admits)`);
  log(`  per thread (/proc, µs per message): ${['A', 'B', 'C'].map((n, i) => `${n} ${threads[i]}`).join('; ')}`);
  await cleanup();
  return r;
}

/** One convergence run and its baseline (fresh brokers each); A and B stay up for part 3 (closed by the caller). */
interface Convergence {
  readonly convergeMs: number;
  readonly baselineMs: number;
  readonly aCpu: number;
  readonly bCpu: number;
  readonly zCpu: number;
  readonly bThreads: string;
  readonly catchUp: { sent: number; bytes: number; ms: number } | undefined;
  readonly a: Region;
  readonly b: Region;
}

async function partition(): Promise<Record<string, number | string>> {
  log(`\nPart 2: convergence after a partition with ${UPDATES} updates (A and B, then B stopped, ${UPDATES} nodes updated at A, B restarted); ${REPS} run(s), each after its baseline`);
  const t0 = performance.now();
  const keys = Array.from({ length: UPDATES }, (_, i) => keyOf(i, 2));
  const v1 = keys.map((k, i) => sign(k, 1, i));
  const v2 = keys.map((k, i) => sign(k, 2, i));
  log(`  (${UPDATES} keys and ${2 * UPDATES} packets signed in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const publishAll = async (port: number, ps: { topic: string; packet: Uint8Array }[]): Promise<void> => {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: `load-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 0 });
    for (let i = 0; i < ps.length; i += 2000) await Promise.all(ps.slice(i, i + 2000).map((p) => c.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })));
    await c.endAsync();
  };
  const cpuOf = async (r: Region): Promise<number> => (await r.ask('cpu')).ms as number;

  const once = async (): Promise<Convergence> => {
    // Baseline: the same updates straight into one broker.
    const pz = await freePort();
    const z = await region('z', pz, []);
    await publishAll(pz, v1);
    const zc = await cpuOf(z);
    const tb = performance.now();
    await publishAll(pz, v2);
    const baselineMs = performance.now() - tb;
    const zCpu = (await cpuOf(z)) - zc;
    await z.close();

    const [pa, pb] = [await freePort(), await freePort()];
    const dirB = tempDir('qis-fedbench-b-');
    let b = await region('b', pb, [], dirB);
    const a = await region('a', pa, [pb]);
    await until(() => linked(a), 30_000, 50);
    await publishAll(pa, v1);
    await until(() => same(a, b), 120_000, 50);
    await b.close();
    await publishAll(pa, v2);
    const before = (await a.status())[0]?.catchUps ?? 0;
    b = await region('b', pb, [], dirB);
    const tc = performance.now(); // B listening
    const [ac, bc] = [await cpuOf(a), await cpuOf(b)];
    const bThreads0 = threadCpuMs(b.pid);
    await until(() => same(a, b), 300_000, 10);
    const convergeMs = performance.now() - tc;
    const [aCpu, bCpu] = [(await cpuOf(a)) - ac, (await cpuOf(b)) - bc];
    const bThreads = perThread(bThreads0, threadCpuMs(b.pid), UPDATES);
    await until(async () => ((await a.status())[0]?.catchUps ?? 0) > before, 60_000, 50);
    const st = (await a.status())[0];
    const catchUp = st?.history.slice(-((st?.catchUps ?? 0) - before)).reduce((x, r) => ({ sent: x.sent + r.sent, bytes: x.bytes + r.bytes, ms: x.ms + r.ms }), { sent: 0, bytes: 0, ms: 0 });
    return { convergeMs, baselineMs, aCpu, bCpu, zCpu, bThreads, catchUp, a, b };
  };

  const runs: Convergence[] = [];
  for (let r = 0; r < REPS; r++) {
    const c = await once();
    runs.push(c);
    const cu = c.catchUp;
    log(`  run ${r + 1}/${REPS} (load ${os.loadavg()[0]?.toFixed(2)}): converged in ${(c.convergeMs / 1000).toFixed(2)} s (catch-up: ${cu?.sent} packets sent, ${cu?.bytes} bytes, ${cu?.ms} ms)`);
    log(`    baseline: the same ${UPDATES} updates published straight into one broker: ${(c.baselineMs / 1000).toFixed(2)} s → ratio ${(c.convergeMs / c.baselineMs).toFixed(2)}×`);
    log(`    broker CPU: converging A ${(c.aCpu / 1000).toFixed(2)} s, B ${(c.bCpu / 1000).toFixed(2)} s (${((c.bCpu / UPDATES) * 1000).toFixed(0)} µs a packet); baseline broker ${(c.zCpu / 1000).toFixed(2)} s (${((c.zCpu / UPDATES) * 1000).toFixed(0)} µs a packet)`);
    log(`    B per thread (/proc, µs a packet): ${c.bThreads}`);
    // Part 3 uses the last run's A and B.
    if (r < REPS - 1) await Promise.all([c.a.close(), c.b.close()]);
  }
  const ratios = runs.map((c) => c.convergeMs / c.baselineMs);
  const convergeMs = median(runs.map((c) => c.convergeMs));
  const baselineMs = median(runs.map((c) => c.baselineMs));
  const spread = Math.max(halfSpread(runs.map((c) => c.convergeMs)), halfSpread(runs.map((c) => c.baselineMs)));
  log(`  median of ${REPS}: converged in ${(convergeMs / 1000).toFixed(2)} s, baseline ${(baselineMs / 1000).toFixed(2)} s; ratio ${median(ratios).toFixed(2)}× (median of the runs' ratios: ${ratios.map((x) => x.toFixed(2)).join(', ')}; spread ±${(spread * 100).toFixed(0)} %)`);
  const { a } = runs[runs.length - 1] as Convergence;

  log(`\nPart 3: catch-up bytes when the stores agree`);
  const agree = ((await a.ask('catchup', 120_000)).status as LinkStatusLite[])[0]?.lastCatchUp;
  const size = await a.ask('size');
  const storeBytes = size.bytes as number;
  log(`  ${agree?.bytes} bytes (${agree?.mode}) for a store of ${String(size.packets)} packets, ${storeBytes} bytes → ${(((agree?.bytes ?? 0) / storeBytes) * 100).toFixed(3)} % of the store`);
  await cleanup();
  return { updates: UPDATES, convergeMs, baselineMs, ratio: median(ratios), ratios: ratios.map((x) => x.toFixed(2)).join(', '), spread, catchUpBytesInSync: agree?.bytes ?? -1, storeBytes, storePackets: size.packets as number };
}

async function main(): Promise<void> {
  const lat = await latency();
  const part = await partition();
  if (JSON_OUT) process.stdout.write(`${JSON.stringify({ latency: lat, partition: part })}\n`);
  const hop = (p: 'p50' | 'p99'): number => ((lat[`${p}C`] ?? NaN) - (lat[`${p}A`] ?? NaN)) / 2;
  writeResults([
    { bench: 'federation', measure: `added latency per hop, p50 (${RATE} msg/s, A → B → C)`, value: hop('p50'), unit: 'ms', peer: lat['p50A'] ?? NaN, peerName: 'origin A, no hop', ratio: (lat['p50C'] ?? NaN) / (lat['p50A'] ?? NaN), goal: { on: 'value', op: '<=', limit: 2 }, spread: 0 },
    { bench: 'federation', measure: `added latency per hop, p99 (${RATE} msg/s, A → B → C)`, value: hop('p99'), unit: 'ms', peer: lat['p99A'] ?? NaN, peerName: 'origin A, no hop', ratio: (lat['p99C'] ?? NaN) / (lat['p99A'] ?? NaN), goal: { on: 'value', op: '<=', limit: 10 }, spread: 0 },
    {
      bench: 'federation',
      measure: `convergence after a partition, ${part['updates']} updates`,
      value: Number(part['convergeMs']),
      unit: 'ms',
      peer: Number(part['baselineMs']),
      peerName: 'same updates into one broker',
      ratio: Number(part['ratio']),
      goal: { on: 'ratio', op: '<=', limit: 1.5 },
      spread: Number(part['spread']),
      note: REPS > 1 ? `the median of ${REPS} runs' ratios (each against its own baseline): ${String(part['ratios'])}; fsync '${FSYNC}'` : `one run: no spread measured; fsync '${FSYNC}'`,
    },
  ]);
}

if (CHILD === 'broker') await childBroker();
else if (CHILD !== undefined) throw new Error(`unknown --child=${CHILD}`);
else {
  cleanupOnSignals('stopping the brokers and removing temp dirs');
  try {
    await main();
  } finally {
    await cleanup();
  }
}
