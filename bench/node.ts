/**
 * Node runtime benchmark, against floors measured in the same run on the same machine.
 *
 *   npm run bench                          (build, core bench, then this)
 *   node dist/bench/node.js                (both parts, a table)
 *   node dist/bench/node.js --json         (one JSON object)
 *   node dist/bench/node.js --part=1       (only the cohort query; --part=2: only the edge footprint)
 *   node dist/bench/node.js --reps=5 --nodes=10000 --runs=12
 *
 * Part 1, query of a 10,000-node cohort retained on one broker. The bench starts a real Mosquitto
 * (Debian `mosquitto`) on a free loopback port, signs one packet for each of `--nodes` distinct
 * keys in the same exact cohort of examples/bearing-failure.yaml and publishes them retained at
 * QoS 1 through one raw mqtt.js client (pipelined; every PUBACK awaited). With Mosquitto's default
 * limits (20 QoS 1 messages in flight + 1000 queued per client) everything past about 1,020 of a
 * QoS 1 retained delivery is dropped, sync marker included: the query then times out, or ends on
 * its marker with about 1,020 packets. So the broker runs with `max_queued_messages 0` (no limit)
 * and otherwise Mosquitto's defaults (max_inflight_messages 20). Each repetition then times, one after
 * the other on the same broker:
 *   runtime   createNode({brokerKind: 'mosquitto'}) connected beforehand; node.query(…, {minCohort: 1}):
 *             subscribe + sync marker + fetch + verify every packet + fold + synthesise
 *   fetch     a raw, already connected mqtt.js client doing exactly the runtime's round trip
 *             (subscribe to the sync topic and the cohort filter at QoS 1, publish the sync
 *             marker at QoS 1, keep every {topic, payload} until the marker returns): no verification
 *   verify    raw node:crypto Ed25519 verification (crypto.verify(null, msg, keyObject, sig)) of the
 *             same signatures over their Sig_structure bytes, built beforehand; public KeyObjects
 *             created beforehand. This is the goal's floor ("raw node:crypto verification of 10,000
 *             signatures"): floor = fetch + verify, goal runtime ≤ 1.25 × floor.
 *   verify+   the same with a KeyObject made inside the timing from the 32 raw key bytes (the
 *             runtime must make one per key it has not cached), by the fastest node:crypto route,
 *             a JWK import; floor+ = fetch + verify+ is shown as a second, looser floor (no goal).
 *   fold      foldCohort() on the messages the raw fetch collected: the runtime's verification step
 *             alone, for attribution (not part of any floor).
 *   import    crypto.createPublicKey of every key from SPKI DER, which is what
 *             src/protocol/identity.ts does on a cache miss (attribution only).
 *   verify∥   the same raw verification spread over one worker thread per core, measured: each
 *             thread holds its share of the signatures and KeyObjects, made before any timing, and
 *             the time is from the go message to the last thread's answer. The goal's floor divides
 *             the one-core time by the cores, which a machine whose cores slow each other down does
 *             not reach; floor∥ = fetch + verify∥ shows by how much (no goal; attribution only).
 * The figures are the median and the minimum of the repetitions; the ratio is the median of the
 * per-repetition ratios (runtime / floor of the same repetition), which cancels drift.
 *
 * Part 2, edge footprint: `qis publish` (dist/cli/qis.js) against a bare mqtt.js script (written to
 * a temp .mjs at run time, importing the project's own mqtt) that connects, publishes the same
 * packet bytes retained at QoS 1, waits for the PUBACK, prints a line, ends the client and exits.
 * Each process runs under GNU time (`/usr/bin/time -f %M`: the kernel's peak RSS of the process,
 * KiB); without it, a `--import` hook prints process.resourceUsage().maxRSS at exit (same figure,
 * read from inside). Wall times are measured by this process: spawn → first stdout line (the
 * acknowledged publish) and spawn → exit. Runs are interleaved (fresh qis, warm qis, bare, rotated
 * each round); medians are shown, and a ratio is the median of the per-round ratios (each qis run
 * against the bare run of its round). "fresh" is a new, empty --data-dir (includes creating the
 * directory and generating + saving the node key); "warm" reuses one data dir with key.json and
 * outbox state already there. Goals (warm qis vs bare): RSS ≤ 1.15×, time to ack ≤ 1.3×.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findBinary, freePort, waitForPort } from './net.js';
import mqtt, { type MqttClient } from 'mqtt';
import {
  address,
  cohortFilter,
  createNode,
  createOutcomePacket,
  decodeSign1,
  foldCohort,
  keyFromSeed,
  loadKeyFile,
  loadTemplate,
  sigStructure,
  utf8Bytes,
  outcomeTopic,
  type CohortMessage,
  type QisNode,
  type Template,
} from '../src/index.js';
import { JSON_OUT, optNum, optStr } from './args.js';
import { benchKey, benchPacket, benchSeed, SPKI_PREFIX, type BenchKey } from './bench-keys.js';
import { cleanup, cleanupOnSignals, cleanups, tempDir } from './cleanup.js';
import { nextMessage } from './child.js';
import { writeResults } from './result.js';
import { median, min, procCpuMs, r1, r3, runProc, stat, writeBareScript, RSS_METHOD, type ProcRun, type Stat } from './proc.js';

// ------------------------------------------------------------------------------ options

const PART = optNum('part', 0); // 0: both
const NODES = Math.round(optNum('nodes', 10_000));
const REPS = Math.round(optNum('reps', 5));
const RUNS = Math.round(optNum('runs', 12));
/** Issue 15: runtime ≤ 1.1 × (fetch + raw verification of the cohort spread over the cores). */
const QUERY_GOAL = 1.1;
const CORES = os.availableParallelism();
/** `--brokers=mosquitto,qis`: the brokers part 1 queries (each its own cohort load and figures). */
const BROKERS = (optStr('brokers') ?? 'mosquitto,qis').split(',') as ('mosquitto' | 'qis')[];
const RSS_GOAL = 1.15;
const TIME_GOAL = 1.3;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TEMPLATE_FILE = join(ROOT, 'examples/bearing-failure.yaml');
const QIS_CLI = join(ROOT, 'dist/cli/qis.js');
/** Part 1's cohort; part 2 uses the situation of the CLI example (each part has its own broker). */
const COHORT_SITUATION = { machine_model: 'BENCH-10K', bearing_type: 'roller', load_kn: 20, sealed: true };
const CLI_SITUATION = { machine_model: 'X1', bearing_type: 'roller', load_kn: 20, sealed: true };

const log = (s: string): void => {
  if (!JSON_OUT) process.stderr.write(s + '\n');
};

// ------------------------------------------------------------------------------ cleanup

const signals = cleanupOnSignals('stopping Mosquitto and removing temp dirs');

// ------------------------------------------------------------------------------ mosquitto

interface Broker {
  readonly url: string;
  readonly pid: number;
  readonly version: string;
  readonly kind: 'mosquitto' | 'qis';
}

/** Registers a broker process's stop (SIGTERM, then SIGKILL after 5 s) with the cleanups; resolves when it exits. */
function stopAtCleanup(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
  return exited;
}

/** Starts the qis broker (dist/cli/qis.js broker, its own process, default verify threads, fsync 'never'); its stop is registered with the cleanups. */
async function startQis(): Promise<Broker> {
  const port = await freePort();
  const dir = tempDir('qis-bench-node-broker-');
  const child: ChildProcess = spawn(process.execPath, [QIS_CLI, 'broker', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', dir, '--fsync', 'never', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = stopAtCleanup(child);
  await Promise.race([waitForPort(port, Date.now() + 30_000), exited.then(() => Promise.reject(new Error('the qis broker exited')))]);
  return { url: `mqtt://127.0.0.1:${port}`, pid: child.pid ?? -1, version: 'this build', kind: 'qis' };
}

/** Starts Mosquitto; its stop is registered with the cleanups. */
async function startMosquitto(extra: readonly string[]): Promise<Broker> {
  const bin = findBinary('mosquitto');
  const dir = tempDir('qis-bench-mosq-');
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  // As root, mosquitto drops to user "mosquitto" unless told otherwise; logging to stderr needs no log dir.
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'user root', ...extra, ''].join('\n'));
  let out = '';
  const child: ChildProcess = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  child.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  const exited = stopAtCleanup(child);
  await Promise.race([waitForPort(port, Date.now() + 10_000), exited.then(() => Promise.reject(new Error(`mosquitto exited: ${out}`)))]);
  const version = /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown';
  return { url: `mqtt://127.0.0.1:${port}`, pid: child.pid ?? -1, version, kind: 'mosquitto' };
}

// ------------------------------------------------------------------------------ helpers

const fmt = (x: number, digits = 1): string => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`bench check failed: ${what}`);
}

async function rawClient(url: string, clientId: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { clientId, protocolVersion: 4, clean: true, reconnectPeriod: 0 });
  cleanups.push(() => c.endAsync(true).then(() => undefined));
  return c;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------------------------------ part 1

interface Part1 {
  readonly broker: string;
  readonly brokerConfig: readonly string[];
  readonly nodes: number;
  readonly reps: number;
  readonly packetBytes: { readonly min: number; readonly max: number };
  readonly setupMs: { readonly keys: number; readonly sign: number; readonly publish: number };
  readonly runtime: Stat;
  readonly fetch: Stat;
  readonly verify: Stat;
  readonly verifyWithKeyObjects: Stat;
  readonly fold: Stat;
  readonly importDer: Stat;
  /**
   * CPU per timed query (mean over the repetitions, Linux /proc in 10 ms ticks): this process's
   * main thread, its other threads (the query's verify threads and V8's helpers), the broker.
   */
  readonly cpuPerQuery: { readonly main: number; readonly threads: number; readonly broker: number };
  /** Raw verification over one thread per core, measured (attribution; bench header). */
  readonly verifyPar: Stat;
  readonly floorPar: Stat;
  readonly ratioPar: { readonly value: number; readonly reps: readonly number[] };
  /** fetch + verify ÷ cores: the goal's floor (issue 15). */
  readonly floor: Stat;
  /** fetch + verify on one core (the former floor). */
  readonly floorOneCore: Stat;
  readonly floorWithKeyObjects: Stat;
  /** The former query path, same run: fetch, then foldCohort on the main thread after the marker. */
  readonly former: Stat;
  readonly ofFormer: { readonly value: number; readonly reps: readonly number[] };
  readonly ratio: { readonly value: number; readonly reps: readonly number[]; readonly goal: number; readonly pass: boolean };
  readonly ratioWithKeyObjects: { readonly value: number; readonly reps: readonly number[] };
  /** min(runtime) / min(floor): the least disturbed repetitions of each, a check on a busy machine. */
  readonly ratioOfMinimums: number;
  readonly noisy: readonly string[];
}

const MOSQ_PART1 = ['max_queued_messages 0'];

/**
 * A thread's share of the raw verification (verify∥): KeyObjects made from the JWK `x` of each key
 * when the thread starts; each `go` verifies the whole share and answers how many succeeded.
 */
const VERIFY_SHARE = `
const crypto = require('node:crypto');
const { parentPort, workerData } = require('node:worker_threads');
const { msgs, sigs, xs } = workerData;
const kos = xs.map((x) => crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }));
parentPort.on('message', () => {
  let ok = 0;
  for (let i = 0; i < msgs.length; i++) if (crypto.verify(null, msgs[i], kos[i], sigs[i])) ok++;
  parentPort.postMessage({ ok });
});
parentPort.postMessage({ ready: true });
`;

/** One thread per core, each with its contiguous share of the inputs; resolves once every thread is ready. */
async function verifyThreads(msgs: readonly Uint8Array[], sigs: readonly Uint8Array[], xs: readonly string[]): Promise<Worker[]> {
  const per = Math.ceil(msgs.length / CORES);
  const ws = Array.from({ length: CORES }, (_, t) => {
    const [a, b] = [t * per, Math.min(msgs.length, (t + 1) * per)];
    return new Worker(VERIFY_SHARE, { eval: true, workerData: { msgs: msgs.slice(a, b), sigs: sigs.slice(a, b), xs: xs.slice(a, b) } });
  });
  for (const w of ws) cleanups.push(() => w.terminate().then(() => undefined));
  await Promise.all(ws.map((w) => nextMessage(w, (m) => m.ready === true, 60_000, 'verify∥ start')));
  return ws;
}

async function part1(template: Template, which: 'mosquitto' | 'qis'): Promise<Part1> {
  const broker = which === 'qis' ? await startQis() : await startMosquitto(MOSQ_PART1);
  const addr = address(template, COHORT_SITUATION);
  const filter = cohortFilter(addr, 0);
  log(`part 1: ${NODES.toLocaleString('en-US')} nodes on ${which} ${broker.version} (${broker.url}); ${REPS} repetitions`);

  // Keys and packets from raw node:crypto (bench/bench-keys.ts); the first ones are checked byte
  // for byte against keyFromSeed() + createOutcomePacket() before anything is timed.
  let t0 = performance.now();
  const seedOf = benchSeed;
  const keys: BenchKey[] = [];
  for (let i = 0; i < NODES; i++) keys.push(benchKey(seedOf(i)));
  const keysMs = performance.now() - t0;
  t0 = performance.now();
  const now = Date.now();
  const fieldsOf = (i: number) => ({
    out: i % 5 === 0 ? 'failure' : 'no_failure',
    conf: 0.9,
    ctx: { ambient_c: 15 + (i % 20), rpm: 1400 + (i % 200) },
    seq: 1,
    ts: now - i * 1000,
  });
  const signed = keys.map((k, i) => {
    const topic = outcomeTopic(addr, k.key.nodeId);
    return { topic, packet: benchPacket(k, topic, { fp: addr.fp, ...fieldsOf(i) }) };
  });
  const signMs = performance.now() - t0;
  for (let i = 0; i < Math.min(NODES, 3); i++) {
    const key = keyFromSeed(seedOf(i));
    const { out, ...rest } = fieldsOf(i);
    const ref = createOutcomePacket({ key, template, situation: COHORT_SITUATION, outcome: out, ...rest });
    check(Buffer.from(key.publicKey).equals((keys[i] as BenchKey).key.publicKey), `bench key ${i} equals keyFromSeed`);
    const s = signed[i] as (typeof signed)[number];
    check(ref.topic === s.topic && Buffer.from(ref.packet).equals(s.packet), `bench packet ${i} equals createOutcomePacket`);
  }
  const sizes = signed.map((s) => s.packet.length);

  // Publish all, retained QoS 1, pipelined through one client; wait for every PUBACK.
  const pub = await rawClient(broker.url, `bench-pub-${process.pid}`);
  t0 = performance.now();
  await Promise.all(
    signed.map(
      (s) =>
        new Promise<void>((resolve, reject) =>
          pub.publish(s.topic, Buffer.from(s.packet), { qos: 1, retain: true }, (err) => (err ? reject(err) : resolve())),
        ),
    ),
  );
  const publishMs = performance.now() - t0;
  await pub.endAsync();
  log(`  keys ${fmt(keysMs, 0)} ms, signing ${fmt(signMs, 0)} ms, publishing (all PUBACKs) ${fmt(publishMs, 0)} ms`);

  // The raw floor's inputs, built outside any timing.
  const msgs: Uint8Array[] = [];
  const sigs: Uint8Array[] = [];
  const spkis: Buffer[] = [];
  const xs: string[] = [];
  const kos: crypto.KeyObject[] = [];
  for (let i = 0; i < NODES; i++) {
    const s = signed[i] as (typeof signed)[number];
    const publicKey = (keys[i] as BenchKey).key.publicKey;
    const sign1 = decodeSign1(s.packet);
    msgs.push(sigStructure(sign1.protectedBytes, utf8Bytes(s.topic), sign1.payload));
    sigs.push(sign1.signature);
    spkis.push(Buffer.concat([SPKI_PREFIX, publicKey]));
    xs.push(Buffer.from(publicKey).toString('base64url'));
    kos.push(crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: xs[i] as string }, format: 'jwk' }));
  }

  // The runtime, connected before any timing.
  const dataDir = tempDir('qis-bench-node-');
  const node: QisNode = await createNode({ url: broker.url, dataDir, brokerKind: broker.kind });
  cleanups.push(() => node.close());
  for (let i = 0; !node.connected; i++) {
    if (i > 1000) throw new Error('the node did not connect within 10 s');
    await sleep(10);
  }
  const raw = await rawClient(broker.url, `bench-raw-${process.pid}`);
  const threads = await verifyThreads(msgs, sigs, xs);

  /** CPU of the timed repetitions (REPS of them), summed. */
  const cpu = { main: 0, all: 0, broker: 0 };
  const runRuntime = async (timed = true): Promise<number> => {
    const [m0, a0, b0] = [procCpuMs(process.pid, process.pid), procCpuMs(process.pid), procCpuMs(broker.pid)];
    const t = performance.now();
    const r = await node.query(template, COHORT_SITUATION, { minCohort: 1, timeoutMs: 120_000 });
    const ms = performance.now() - t;
    if (timed) {
      cpu.main += procCpuMs(process.pid, process.pid) - m0;
      cpu.all += procCpuMs(process.pid) - a0;
      cpu.broker += procCpuMs(broker.pid) - b0;
    }
    check(r.completeness === 'sync', `query completeness is sync (got ${r.completeness})`);
    check(r.received === NODES, `query received ${NODES} messages (got ${r.received})`);
    check(r.packets.length === NODES, `query kept ${NODES} packets (got ${r.packets.length}; dropped ${JSON.stringify(r.dropped)})`);
    return ms;
  };
  let lastFetched: CohortMessage[] = [];
  const runFetch = async (): Promise<number> => {
    const sync = `qis/1/sync/bench-raw-${process.pid}/${crypto.randomBytes(6).toString('hex')}`;
    const got: CohortMessage[] = [];
    let done = (): void => undefined;
    const returned = new Promise<void>((r) => (done = r));
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic === sync) done();
      else got.push({ topic, payload });
    };
    raw.on('message', onMessage);
    const t = performance.now();
    await raw.subscribeAsync({ [sync]: { qos: 1 }, [filter]: { qos: 1 } });
    await raw.publishAsync(sync, Buffer.from('sync'), { qos: 1 });
    await returned;
    const ms = performance.now() - t;
    raw.removeListener('message', onMessage);
    await raw.unsubscribeAsync([sync, filter]);
    check(got.length === NODES, `raw fetch got ${NODES} messages before the sync marker (got ${got.length})`);
    lastFetched = got;
    return ms;
  };
  const runVerify = (): number => {
    const t = performance.now();
    let ok = 0;
    for (let i = 0; i < NODES; i++) if (crypto.verify(null, msgs[i] as Uint8Array, kos[i] as crypto.KeyObject, sigs[i] as Uint8Array)) ok++;
    const ms = performance.now() - t;
    check(ok === NODES, 'every raw verification succeeds');
    return ms;
  };
  const runVerifyPar = async (): Promise<number> => {
    const t = performance.now();
    const oks = await Promise.all(threads.map((w) => {
      const answer = nextMessage(w, (m) => typeof m.ok === 'number', 120_000, 'verify∥');
      w.postMessage('go');
      return answer;
    }));
    const ms = performance.now() - t;
    check(oks.reduce((a, m) => a + (m.ok as number), 0) === NODES, 'every raw verification over the threads succeeds');
    return ms;
  };
  // The fastest node:crypto way from 32 raw bytes to a KeyObject is a JWK import.
  const runVerifyKo = (): number => {
    const t = performance.now();
    let ok = 0;
    for (let i = 0; i < NODES; i++) {
      const ko = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: xs[i] as string }, format: 'jwk' });
      if (crypto.verify(null, msgs[i] as Uint8Array, ko, sigs[i] as Uint8Array)) ok++;
    }
    const ms = performance.now() - t;
    check(ok === NODES, 'every raw verification (KeyObject inside) succeeds');
    return ms;
  };
  // What src/protocol/identity.ts does per key it has not cached: an SPKI DER import (attribution only).
  const runImportDer = (): number => {
    const t = performance.now();
    let n = 0;
    for (let i = 0; i < NODES; i++) if (crypto.createPublicKey({ key: spkis[i] as Buffer, format: 'der', type: 'spki' }).asymmetricKeyType === 'ed25519') n++;
    const ms = performance.now() - t;
    check(n === NODES, 'every SPKI import succeeds');
    return ms;
  };
  const runFold = (): number => {
    const t = performance.now();
    const f = foldCohort(lastFetched, { address: addr, widen: 0, now: Date.now() });
    const ms = performance.now() - t;
    check(f.packets.length === NODES, 'foldCohort keeps every packet');
    return ms;
  };

  // Warm-up (untimed): one of each; it also checks every count.
  log('  warm-up …');
  await runRuntime(false);
  await runFetch();
  runVerify();
  await runVerifyPar();
  runVerifyKo();
  runFold();
  runImportDer();

  const s = { runtime: [] as number[], fetch: [] as number[], verify: [] as number[], verifyPar: [] as number[], verifyKo: [] as number[], fold: [] as number[], importDer: [] as number[] };
  for (let rep = 0; rep < REPS; rep++) {
    // Alternate which side goes first, so neither always runs on a freshly collected heap.
    if (rep % 2 === 0) {
      s.runtime.push(await runRuntime());
      s.fetch.push(await runFetch());
      s.verify.push(runVerify());
      s.verifyPar.push(await runVerifyPar());
      s.verifyKo.push(runVerifyKo());
    } else {
      s.fetch.push(await runFetch());
      s.verify.push(runVerify());
      s.verifyPar.push(await runVerifyPar());
      s.verifyKo.push(runVerifyKo());
      s.runtime.push(await runRuntime());
    }
    s.fold.push(runFold());
    s.importDer.push(runImportDer());
    log(
      `  rep ${rep + 1}/${REPS}: runtime ${fmt(s.runtime[rep] as number, 0)} ms, fetch ${fmt(s.fetch[rep] as number, 0)} ms, ` +
        `verify ${fmt(s.verify[rep] as number, 0)} ms (over ${CORES} threads ${fmt(s.verifyPar[rep] as number, 0)}; with KeyObjects ${fmt(s.verifyKo[rep] as number, 0)}), fold ${fmt(s.fold[rep] as number, 0)} ms, SPKI imports ${fmt(s.importDer[rep] as number, 0)} ms`,
    );
  }
  await node.close();
  await Promise.all(threads.map((w) => w.terminate()));

  const floor = s.fetch.map((f, i) => f + (s.verify[i] as number) / CORES);
  const floor1 = s.fetch.map((f, i) => f + (s.verify[i] as number));
  const former = s.fetch.map((f, i) => f + (s.fold[i] as number));
  const ofFormer = s.runtime.map((r, i) => r / (former[i] as number));
  const floorKo = s.fetch.map((f, i) => f + (s.verifyKo[i] as number));
  const ratios = s.runtime.map((r, i) => r / (floor[i] as number));
  const ratiosKo = s.runtime.map((r, i) => r / (floorKo[i] as number));
  const ratio = median(ratios);
  const floorPar = s.fetch.map((f, i) => f + (s.verifyPar[i] as number));
  const ratiosPar = s.runtime.map((r, i) => r / (floorPar[i] as number));
  const stats = { runtime: stat(s.runtime), fetch: stat(s.fetch), verify: stat(s.verify), verifyPar: stat(s.verifyPar), verifyWithKeyObjects: stat(s.verifyKo), fold: stat(s.fold), importDer: stat(s.importDer) };
  return {
    broker: `${which} ${broker.version}`,
    brokerConfig: which === 'qis' ? ['fsync never', 'default verify threads'] : MOSQ_PART1,
    nodes: NODES,
    reps: REPS,
    packetBytes: { min: Math.min(...sizes), max: Math.max(...sizes) },
    setupMs: { keys: Math.round(keysMs), sign: Math.round(signMs), publish: Math.round(publishMs) },
    ...stats,
    floor: stat(floor),
    floorOneCore: stat(floor1),
    floorWithKeyObjects: stat(floorKo),
    floorPar: stat(floorPar),
    cpuPerQuery: { main: r1(cpu.main / REPS), threads: r1((cpu.all - cpu.main) / REPS), broker: r1(cpu.broker / REPS) },
    ratioPar: { value: r3(median(ratiosPar)), reps: ratiosPar.map(r3) },
    former: stat(former),
    ofFormer: { value: r3(median(ofFormer)), reps: ofFormer.map(r3) },
    ratio: { value: r3(ratio), reps: ratios.map(r3), goal: QUERY_GOAL, pass: ratio <= QUERY_GOAL },
    ratioWithKeyObjects: { value: r3(median(ratiosKo)), reps: ratiosKo.map(r3) },
    ratioOfMinimums: r3(min(s.runtime) / min(floor)),
    noisy: Object.entries(stats)
      .filter(([, v]) => v.spread > 0.1)
      .map(([k]) => k),
  };
}

// ------------------------------------------------------------------------------ part 2

interface Side {
  readonly rssKb: { readonly median: number; readonly min: number; readonly runs: readonly number[] };
  readonly ackMs: Stat;
  readonly exitMs: Stat;
}
const side = (runs: readonly ProcRun[]): Side => ({
  rssKb: { median: median(runs.map((r) => r.rssKb)), min: min(runs.map((r) => r.rssKb)), runs: runs.map((r) => r.rssKb) },
  ackMs: stat(runs.map((r) => r.ackMs)),
  exitMs: stat(runs.map((r) => r.exitMs)),
});

interface Part2 {
  readonly skipped?: string;
  readonly broker?: string;
  readonly runs?: number;
  readonly rssMethod?: string;
  readonly packetBytes?: number;
  readonly qisWarm?: Side;
  readonly qisFresh?: Side;
  readonly bare?: Side;
  readonly ratios?: {
    readonly warm: { readonly rss: number; readonly ack: number; readonly exit: number; readonly ackOfMinimums: number };
    readonly fresh: { readonly rss: number; readonly ack: number; readonly exit: number; readonly ackOfMinimums: number };
    readonly goal: { readonly rss: number; readonly time: number };
    readonly passWarm: { readonly rss: boolean; readonly ack: boolean };
    readonly passFresh: { readonly rss: boolean; readonly ack: boolean };
  };
  readonly noisy?: readonly string[];
}

async function cliHasPublish(): Promise<boolean> {
  const child = spawn(process.execPath, [QIS_CLI, 'publish', '--help'], { stdio: 'ignore' });
  return new Promise((r) => {
    child.once('error', () => r(false));
    child.once('exit', (code) => r(code === 0));
  });
}

/** `qis publish` exits 0 with this when the broker did not acknowledge in time (the packet stays queued). */
const NOT_ACKED = /NOT delivered|queued/i;

async function part2(template: Template): Promise<Part2> {
  if (!existsSync(QIS_CLI) || !(await cliHasPublish())) {
    return { skipped: `${QIS_CLI} has no working "publish" command (node dist/cli/qis.js publish --help failed)` };
  }
  const broker = await startMosquitto([]);
  log(`part 2: qis publish vs a bare mqtt.js script on Mosquitto ${broker.version} (${broker.url}); ${RUNS} runs each, interleaved`);
  const work = tempDir('qis-bench-edge-');
  const rssFile = join(work, 'rss');
  const situationJson = JSON.stringify(CLI_SITUATION);
  const qisArgs = (dataDir: string): string[] => [
    QIS_CLI,
    'publish',
    '--url',
    broker.url,
    '--data-dir',
    dataDir,
    '--template',
    TEMPLATE_FILE,
    '--situation',
    situationJson,
    '--outcome',
    '"failure"',
  ];

  // The warm data dir: made by a first qis publish, which generates its key.
  const warmDir = join(work, 'warm');
  await runProc(qisArgs(warmDir), rssFile, NOT_ACKED);
  const key = await loadKeyFile(join(warmDir, 'key.json'));
  const signed = createOutcomePacket({ key, template, situation: CLI_SITUATION, outcome: 'failure', seq: Date.now(), ts: Date.now() });

  // The bare script: the project's mqtt, connect, one retained QoS 1 publish, PUBACK, a line, end.
  const bare = join(work, 'bare.mjs');
  writeBareScript(bare, import.meta.resolve('mqtt'));
  const bareArgs = [bare, broker.url, signed.topic, Buffer.from(signed.packet).toString('hex')];

  let fresh = 0;
  const kinds = ['qisFresh', 'qisWarm', 'bare'] as const;
  const run = (k: (typeof kinds)[number]): Promise<ProcRun> => {
    if (k === 'bare') return runProc(bareArgs, rssFile);
    if (k === 'qisWarm') return runProc(qisArgs(warmDir), rssFile, NOT_ACKED);
    const dir = join(work, `fresh-${fresh++}`);
    return runProc(qisArgs(dir), rssFile, NOT_ACKED).finally(() => rmSync(dir, { recursive: true, force: true }));
  };
  for (const k of kinds) await run(k); // warm-up (file cache), untimed
  const runs: Record<(typeof kinds)[number], ProcRun[]> = { qisFresh: [], qisWarm: [], bare: [] };
  for (let i = 0; i < RUNS; i++) {
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length] as (typeof kinds)[number];
      runs[k].push(await run(k));
    }
  }
  const qisWarm = side(runs.qisWarm);
  const qisFresh = side(runs.qisFresh);
  const bareSide = side(runs.bare);
  // A ratio is the median of the per-round ratios (each qis run against the bare run of its
  // round, a few hundred ms apart), as in bench/core.ts; the ratio of the minimums is shown too.
  const perRound = (q: readonly ProcRun[], f: (r: ProcRun) => number): number => median(q.map((r, i) => f(r) / f(runs.bare[i] as ProcRun)));
  const ratioOf = (q: readonly ProcRun[]) => ({
    rss: r3(perRound(q, (r) => r.rssKb)),
    ack: r3(perRound(q, (r) => r.ackMs)),
    exit: r3(perRound(q, (r) => r.exitMs)),
    ackOfMinimums: r3(min(q.map((r) => r.ackMs)) / min(runs.bare.map((r) => r.ackMs))),
  });
  const warm = ratioOf(runs.qisWarm);
  const fr = ratioOf(runs.qisFresh);
  const noisy: string[] = [];
  for (const [name, sd] of [['qis warm', qisWarm], ['qis fresh', qisFresh], ['bare', bareSide]] as const) {
    if (sd.ackMs.spread > 0.1) noisy.push(`${name} time to ack`);
  }
  return {
    broker: `mosquitto ${broker.version}`,
    runs: RUNS,
    rssMethod: RSS_METHOD,
    packetBytes: signed.packet.length,
    qisWarm,
    qisFresh,
    bare: bareSide,
    ratios: {
      warm,
      fresh: fr,
      goal: { rss: RSS_GOAL, time: TIME_GOAL },
      passWarm: { rss: warm.rss <= RSS_GOAL, ack: warm.ack <= TIME_GOAL },
      passFresh: { rss: fr.rss <= RSS_GOAL, ack: fr.ack <= TIME_GOAL },
    },
    noisy,
  };
}

// ------------------------------------------------------------------------------ report

const env = {
  node: process.version,
  platform: `${process.platform} ${process.arch}`,
  cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
  cpus: os.cpus().length,
  openssl: process.versions.openssl ?? 'unknown',
};

function report(p1: Part1 | undefined, p2: Part2 | undefined, load: { before: number; after: number }): string {
  const L: string[] = [];
  L.push(`qis-mqtt node runtime benchmark — node ${env.node} (${env.platform}, OpenSSL ${env.openssl}), ${env.cpus} × ${env.cpu}`);
  L.push(`load average (1 min): ${load.before.toFixed(2)} before, ${load.after.toFixed(2)} after (other work on the ${env.cpus} CPUs makes every figure noisier)`);
  const row = (label: string, st: Stat, extra = ''): string =>
    `  ${label.padEnd(52)}${fmt(st.medianMs).padStart(10)}${fmt(st.minMs).padStart(10)}${`±${(st.spread * 100).toFixed(1)}%`.padStart(9)}${extra}`;
  if (p1) {
    L.push('');
    L.push(`1. query of a ${p1.nodes.toLocaleString('en-US')}-node cohort retained on ${p1.broker} (${p1.brokerConfig.join(', ')}; otherwise defaults)`);
    L.push(
      `   packets ${p1.packetBytes.min}–${p1.packetBytes.max} B; setup: keys ${p1.setupMs.keys} ms, signing ${p1.setupMs.sign} ms, ` +
        `retained publish (QoS 1, all PUBACKs) ${p1.setupMs.publish} ms; ${p1.reps} repetitions after one warm-up`,
    );
    L.push(`  ${''.padEnd(52)}${'median ms'.padStart(10)}${'min ms'.padStart(10)}${'spread'.padStart(9)}`);
    L.push('  ' + '-'.repeat(81));
    L.push(row('runtime  node.query() (fetch+verify+fold+synthesise)', p1.runtime));
    L.push(row('fetch    raw mqtt.js: subscribe + sync marker', p1.fetch));
    L.push(row('verify   raw crypto.verify, KeyObjects prepared', p1.verify));
    L.push(row(`floor  = fetch + verify ÷ ${CORES} cores        (the goal)`, p1.floor));
    L.push(row('floor1 = fetch + verify on one core', p1.floorOneCore));
    L.push(row(`verify∥  raw crypto.verify over ${CORES} threads, measured`, p1.verifyPar));
    L.push(row('floor∥ = fetch + verify∥', p1.floorPar));
    L.push(row('former = fetch, then foldCohort (A/B)', p1.former));
    L.push(row('verify+  raw createPublicKey (JWK) + verify each', p1.verifyWithKeyObjects));
    L.push(row('floor+ = fetch + verify+', p1.floorWithKeyObjects));
    L.push(row('(fold    foldCohort() on the fetched messages)', p1.fold));
    L.push(row('(import  createPublicKey from SPKI DER, every key)', p1.importDer));
    const c = p1.cpuPerQuery;
    L.push(
      `  CPU a query (mean of the repetitions; /proc, 10 ms ticks): main thread ${fmt(c.main, 0)} ms, other threads ${fmt(c.threads, 0)} ms ` +
        `(verify threads and V8's helpers; raw verify on one core: ${fmt(p1.verify.medianMs, 0)} ms), broker ${fmt(c.broker, 0)} ms; ` +
        `all ÷ ${CORES} cores ${fmt((c.main + c.threads + c.broker) / CORES, 0)} ms`,
    );
    L.push('');
    const rng = (xs: readonly number[]): string => `[${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}]`;
    L.push(
      `  runtime / floor   ${p1.ratio.value.toFixed(3)}× ${rng(p1.ratio.reps)}  ${p1.ratio.pass ? 'PASS' : 'MISS'} (goal ≤ ${p1.ratio.goal.toFixed(2)}×; median of per-repetition ratios)`,
    );
    L.push(`  runtime / former  ${p1.ofFormer.value.toFixed(3)}× ${rng(p1.ofFormer.reps)}  (the former path: verification after the marker, on the main thread; same run)`);
    L.push(
      `  runtime / floor∥  ${p1.ratioPar.value.toFixed(3)}× ${rng(p1.ratioPar.reps)}  (no goal: the verification measured over ${CORES} threads, ` +
        `${(p1.verifyPar.medianMs / p1.verify.medianMs).toFixed(2)}× the one-core time against the floor's ${(1 / CORES).toFixed(2)}×)`,
    );
    L.push(`  runtime / floor+  ${p1.ratioWithKeyObjects.value.toFixed(3)}× ${rng(p1.ratioWithKeyObjects.reps)}  (no goal: KeyObject creation counted in the floor)`);
    L.push(`  min(runtime) / min(floor)  ${p1.ratioOfMinimums.toFixed(3)}×  (the least disturbed repetitions; a check when the machine is busy)`);
    if (p1.noisy.length > 0) L.push(`  note: repetitions varied by more than ±10 % (${p1.noisy.join(', ')}): the machine was busy; run again before trusting a ratio`);
  }
  if (p2) {
    L.push('');
    if (p2.skipped) {
      L.push(`2. edge footprint: SKIPPED: ${p2.skipped}`);
    } else {
      const q = p2 as Required<Part2>;
      L.push(`2. edge footprint: one acknowledged retained QoS 1 publish (${q.packetBytes} B packet) on ${q.broker}; ${q.runs} runs each, interleaved; medians`);
      L.push(`   peak RSS: ${q.rssMethod}; times measured by the bench from spawn`);
      L.push(`  ${''.padEnd(40)}${'peak RSS MiB'.padStart(13)}${'→ ack ms'.padStart(10)}${'(min)'.padStart(8)}${'→ exit ms'.padStart(11)}${'(min)'.padStart(8)}${'ack spread'.padStart(12)}`);
      L.push('  ' + '-'.repeat(102));
      const prow = (label: string, sd: Side): string =>
        `  ${label.padEnd(40)}${fmt(sd.rssKb.median / 1024).padStart(13)}${fmt(sd.ackMs.medianMs, 0).padStart(10)}${fmt(sd.ackMs.minMs, 0).padStart(8)}` +
        `${fmt(sd.exitMs.medianMs, 0).padStart(11)}${fmt(sd.exitMs.minMs, 0).padStart(8)}${`±${(sd.ackMs.spread * 100).toFixed(1)}%`.padStart(12)}`;
      L.push(prow('bare mqtt.js script (baseline)', q.bare));
      L.push(prow('qis publish, warm data dir', q.qisWarm));
      L.push(prow('qis publish, fresh data dir (+ keygen)', q.qisFresh));
      L.push('');
      const verdict = (x: number, goal: number): string => `${x.toFixed(3)}× ${x <= goal ? 'PASS' : 'MISS'}`;
      L.push(`  ratios to the bare script (median of per-round ratios; goal: RSS ≤ ${RSS_GOAL}×, time to ack ≤ ${TIME_GOAL}×)`);
      for (const [label, r] of [['warm data dir: ', q.ratios.warm], ['fresh data dir:', q.ratios.fresh]] as const) {
        L.push(
          `    ${label}  RSS ${verdict(r.rss, RSS_GOAL)}, time to ack ${verdict(r.ack, TIME_GOAL)} ` +
            `(of the minimums ${r.ackOfMinimums.toFixed(3)}×), time to exit ${r.exit.toFixed(3)}×`,
        );
      }
      if (q.noisy.length > 0) L.push(`  note: runs varied by more than ±10 % (${q.noisy.join(', ')}): the machine was busy; run again before trusting a ratio`);
    }
  }
  return L.join('\n') + '\n';
}

// ------------------------------------------------------------------------------ run

async function main(): Promise<void> {
  const template = await loadTemplate(TEMPLATE_FILE);
  const loadBefore = os.loadavg()[0] ?? 0;
  const p1s: Part1[] = [];
  let p2: Part2 | undefined;
  try {
    if (PART === 0 || PART === 1) {
      for (const b of BROKERS) {
        p1s.push(await part1(template, b));
        await cleanup(); // stop the 10,000-packet broker and free its memory before the next part
      }
    }
    if (PART === 0 || PART === 2) p2 = await part2(template);
  } finally {
    await cleanup();
  }
  const load = { before: loadBefore, after: os.loadavg()[0] ?? 0 };
  writeResults(
    p1s.map((p1) => ({
      bench: 'node',
      measure: `cohort query (${p1.broker.startsWith('qis') ? 'qis broker' : 'Mosquitto'}, ${p1.nodes} nodes), runtime vs fetch + raw verify over ${CORES} cores`,
      value: p1.runtime.medianMs,
      unit: 'ms',
      peer: p1.floor.medianMs,
      peerName: `floor: fetch + verify ÷ ${CORES}`,
      ratio: p1.ratio.value,
      goal: { on: 'ratio', op: '<=', limit: QUERY_GOAL },
      spread: Math.max(p1.runtime.spread, p1.floor.spread),
      note: `former path (verify after the marker) ${Math.round(p1.former.medianMs)} ms, same run; raw verify measured over ${CORES} threads ${(p1.verifyPar.medianMs / p1.verify.medianMs).toFixed(2)}× the one-core time (the floor assumes ${(1 / CORES).toFixed(2)}×), runtime / that floor ${p1.ratioPar.value.toFixed(3)}×`,
    })),
  );
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify({ ...env, loadavg1m: load, ...(p1s.length > 0 ? { query: p1s } : {}), ...(p2 ? { footprint: p2 } : {}) }) + '\n');
  } else {
    process.stdout.write(p1s.map((p1, i) => report(p1, i === p1s.length - 1 ? p2 : undefined, load)).join('') || report(undefined, p2, load));
  }
}

main().catch((e: unknown) => {
  if (signals.interrupted) return; // the signal handler cleans up and exits
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
