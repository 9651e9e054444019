/**
 * Edge start benchmark: `qis publish` to its first PUBACK against a bare mqtt.js script doing the
 * same publish, both against a qis broker on loopback, measured in the same run.
 *
 *   node dist/bench/edge.js                  (a table; --runs=N rounds, default 15)
 *   node dist/bench/edge.js --json           (one JSON object)
 *   node dist/bench/edge.js --json-out=FILE  (also append the key figures for bench/summary.ts)
 *
 * The broker is `node dist/cli/qis.js broker` (one verification worker, --fsync never so the disk
 * adds no noise to anyone's PUBACK) in its own process on a free 127.0.0.1 port. The contenders,
 * each a fresh process run to its exit, rotated in every round so drift hits all alike:
 *   bundle  node dist/cli/qis.mjs publish …   (the esbuild build, cli/bundle.ts)
 *   dist    node dist/cli/qis.js publish …    (tsc output, modules loaded from node_modules)
 *   bare    node bare.mjs URL TOPIC HEX       (the project's mqtt.js: connect, one retained QoS 1
 *           publish of the same signed packet bytes, PUBACK, a line, end; bench/proc.ts)
 * Both qis runs reuse one data dir (key and outbox made by an untimed first publish), a YAML
 * template and --json output. Time is spawn → first stdout line (printed after the PUBACK) and
 * spawn → exit; peak RSS is the kernel's, via GNU time (or maxRSS from inside without it). A ratio
 * is the median of the per-round ratios. Goal (issue 15): bundle ≤ 1.0× bare in time and RSS.
 * Also: the bundle's size, and `--help` start (spawn → exit) of both builds against `node -e` printing
 * one line (the floor: Node's own start).
 */
import os from 'node:os';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUNDLE, bundleFiles } from '../cli/bundle.js';
import { createOutcomePacket, loadKeyFile, loadTemplate } from '../src/index.js';
import { JSON_OUT, optNum } from './args.js';
import { cleanup, cleanupOnSignals, cleanups, tempDir } from './cleanup.js';
import { freePort, waitForPort } from './net.js';
import { median, r3, runProc, stat, writeBareScript, RSS_METHOD, type ProcRun, type Stat } from './proc.js';
import { writeResults, passes, type BenchResult } from './result.js';

const RUNS = Math.round(optNum('runs', 15));
const GOAL = 1.0;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST = join(ROOT, 'dist/cli/qis.js');
const TEMPLATE_FILE = join(ROOT, 'examples/bearing-failure.yaml');
const SITUATION = { machine_model: 'X1', bearing_type: 'roller', load_kn: 20, sealed: true };
/** `qis publish` exits 0 with this when the broker did not acknowledge in time. */
const NOT_ACKED = /"acked":false|NOT delivered/;

const log = (s: string): void => {
  if (!JSON_OUT) process.stderr.write(s + '\n');
};

const signals = cleanupOnSignals('stopping the broker and removing temp dirs');

/** `node dist/cli/qis.js broker` on a free port; stopped by cleanup(). */
async function startBroker(dataDir: string): Promise<string> {
  const port = await freePort();
  const child = spawn(process.execPath, [DIST, 'broker', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', dataDir, '--verify-workers', '1', '--fsync', 'never', '--log-level', 'warn', '--http', 'off'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await Promise.race([waitForPort(port, Date.now() + 60_000), exited.then(() => Promise.reject(new Error(`qis broker exited: ${err}`)))]);
  return `mqtt://127.0.0.1:${port}`;
}

interface Side {
  readonly rssKb: number;
  readonly ackMs: Stat;
  readonly exitMs: Stat;
  readonly rssSpread: number;
}
const side = (runs: readonly ProcRun[]): Side => ({
  rssKb: median(runs.map((r) => r.rssKb)),
  ackMs: stat(runs.map((r) => r.ackMs)),
  exitMs: stat(runs.map((r) => r.exitMs)),
  rssSpread: stat(runs.map((r) => r.rssKb)).spread,
});

/** Runs every kind once per round, rotated; returns each kind's runs. */
async function rounds<K extends string>(kinds: readonly K[], run: (k: K) => Promise<ProcRun>, n: number): Promise<Record<K, ProcRun[]>> {
  for (const k of kinds) await run(k); // warm-up (file cache), untimed
  const out = Object.fromEntries(kinds.map((k) => [k, [] as ProcRun[]])) as Record<K, ProcRun[]>;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length] as K;
      out[k].push(await run(k));
    }
  }
  return out;
}

/** Median of the per-round ratios a[i] / b[i]. */
const perRound = (a: readonly ProcRun[], b: readonly ProcRun[], f: (r: ProcRun) => number): number => r3(median(a.map((r, i) => f(r) / f(b[i] as ProcRun))));

async function main(): Promise<void> {
  for (const f of [BUNDLE, DIST]) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run build`);
  const loadBefore = os.loadavg()[0] ?? 0;
  const work = tempDir('qis-bench-edge-');
  const rssFile = join(work, 'rss');
  const url = await startBroker(join(work, 'broker'));
  log(`edge start: qis publish vs a bare mqtt.js script on a qis broker (${url}); ${RUNS} rounds, rotated`);

  const dataDir = join(work, 'node');
  const qisArgs = (cli: string): string[] => [cli, 'publish', '--url', url, '--data-dir', dataDir, '--template', TEMPLATE_FILE, '--situation', JSON.stringify(SITUATION), '--outcome', '"failure"', '--json'];
  await runProc(qisArgs(BUNDLE), rssFile, NOT_ACKED); // makes the key and the outbox
  const key = await loadKeyFile(join(dataDir, 'key.json'));
  const template = await loadTemplate(TEMPLATE_FILE);
  const signed = createOutcomePacket({ key, template, situation: SITUATION, outcome: 'failure', seq: Date.now(), ts: Date.now() });
  const bare = join(work, 'bare.mjs');
  writeBareScript(bare, import.meta.resolve('mqtt'));
  const bareArgs = [bare, url, signed.topic, Buffer.from(signed.packet).toString('hex')];

  const pub = await rounds(
    ['bundle', 'dist', 'bare'] as const,
    (k) => (k === 'bare' ? runProc(bareArgs, rssFile) : runProc(qisArgs(k === 'bundle' ? BUNDLE : DIST), rssFile, NOT_ACKED)),
    RUNS,
  );
  const help = await rounds(
    ['bundle', 'dist', 'node'] as const,
    (k) => runProc(k === 'node' ? ['-e', "process.stdout.write('x\\n')"] : [k === 'bundle' ? BUNDLE : DIST, '--help'], rssFile),
    RUNS,
  );
  const loadAfter = os.loadavg()[0] ?? 0;

  const s = { bundle: side(pub.bundle), dist: side(pub.dist), bare: side(pub.bare) };
  const h = { bundle: side(help.bundle), dist: side(help.dist), node: side(help.node) };
  const ratios = {
    bundle: { ack: perRound(pub.bundle, pub.bare, (r) => r.ackMs), rss: perRound(pub.bundle, pub.bare, (r) => r.rssKb), exit: perRound(pub.bundle, pub.bare, (r) => r.exitMs) },
    dist: { ack: perRound(pub.dist, pub.bare, (r) => r.ackMs), rss: perRound(pub.dist, pub.bare, (r) => r.rssKb), exit: perRound(pub.dist, pub.bare, (r) => r.exitMs) },
    helpBundleToDist: perRound(help.bundle, help.dist, (r) => r.exitMs),
    helpBundleToNode: perRound(help.bundle, help.node, (r) => r.exitMs),
  };
  // The entry and the chunks it loads on demand (cli/bundle.ts): the whole build, in bytes.
  const files = bundleFiles();
  const chunks = files.slice(1);
  const bundleBytes = files.reduce((n, f) => n + statSync(f).size, 0);
  const sp = (...xs: number[]): number => r3(Math.max(...xs));
  const results: BenchResult[] = [
    { bench: 'edge', measure: 'qis publish (bundle) → PUBACK, wall', value: s.bundle.ackMs.medianMs, unit: 'ms', peer: s.bare.ackMs.medianMs, peerName: 'bare mqtt.js script', ratio: ratios.bundle.ack, goal: { on: 'ratio', op: '<=', limit: GOAL }, spread: sp(s.bundle.ackMs.spread, s.bare.ackMs.spread) },
    { bench: 'edge', measure: 'qis publish (bundle), peak RSS', value: Math.round(s.bundle.rssKb / 1024), unit: 'MiB', peer: Math.round(s.bare.rssKb / 1024), peerName: 'bare mqtt.js script', ratio: ratios.bundle.rss, goal: { on: 'ratio', op: '<=', limit: GOAL }, spread: sp(s.bundle.rssSpread, s.bare.rssSpread) },
    { bench: 'edge', measure: 'qis publish (dist/cli) → PUBACK, wall', value: s.dist.ackMs.medianMs, unit: 'ms', peer: s.bare.ackMs.medianMs, peerName: 'bare mqtt.js script', ratio: ratios.dist.ack, spread: sp(s.dist.ackMs.spread, s.bare.ackMs.spread) },
    { bench: 'edge', measure: 'qis publish (dist/cli), peak RSS', value: Math.round(s.dist.rssKb / 1024), unit: 'MiB', peer: Math.round(s.bare.rssKb / 1024), peerName: 'bare mqtt.js script', ratio: ratios.dist.rss, spread: sp(s.dist.rssSpread, s.bare.rssSpread) },
    { bench: 'edge', measure: 'qis --help (bundle) start → exit', value: h.bundle.exitMs.medianMs, unit: 'ms', peer: h.node.exitMs.medianMs, peerName: 'node -e (Node start)', ratio: ratios.helpBundleToNode, spread: sp(h.bundle.exitMs.spread, h.node.exitMs.spread), note: `bundle ${(bundleBytes / 1024).toFixed(0)} KiB (entry + ${chunks.length} chunks); dist/cli --help ${h.dist.exitMs.medianMs} ms` },
  ];
  writeResults(results);

  const env = { node: process.version, cpus: os.cpus().length, loadavg1m: { before: Number(loadBefore.toFixed(2)), after: Number(loadAfter.toFixed(2)) } };
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify({ ...env, runs: RUNS, rssMethod: RSS_METHOD, bundleBytes, publish: s, help: h, ratios }) + '\n');
    return;
  }
  const L: string[] = [];
  L.push(`qis-mqtt edge start benchmark — node ${env.node}, ${env.cpus} CPUs, load average (1 min) ${env.loadavg1m.before} before, ${env.loadavg1m.after} after`);
  L.push(`one acknowledged retained QoS 1 publish (${signed.packet.length} B packet) on a qis broker; ${RUNS} rounds, rotated; medians; peak RSS: ${RSS_METHOD}`);
  L.push(`  ${''.padEnd(36)}${'peak RSS MiB'.padStart(13)}${'→ ack ms'.padStart(10)}${'(min)'.padStart(8)}${'→ exit ms'.padStart(11)}${'ack spread'.padStart(12)}`);
  const row = (label: string, sd: Side): string =>
    `  ${label.padEnd(36)}${(sd.rssKb / 1024).toFixed(1).padStart(13)}${sd.ackMs.medianMs.toFixed(0).padStart(10)}${sd.ackMs.minMs.toFixed(0).padStart(8)}${sd.exitMs.medianMs.toFixed(0).padStart(11)}${`±${(sd.ackMs.spread * 100).toFixed(1)}%`.padStart(12)}`;
  L.push(row('bare mqtt.js script (baseline)', s.bare));
  L.push(row('qis publish, bundle (dist/cli/qis.mjs)', s.bundle));
  L.push(row('qis publish, dist/cli/qis.js', s.dist));
  for (const [name, r, judged] of [['bundle', ratios.bundle, true], ['dist/cli', ratios.dist, false]] as const) {
    const v = (x: number): string => `${x.toFixed(3)}×${judged ? (x <= GOAL ? ' PASS' : ' MISS') : ''}`;
    L.push(`  ${name.padEnd(9)} / bare: time to ack ${v(r.ack)}, RSS ${v(r.rss)}, time to exit ${r.exit.toFixed(3)}×${judged ? ` (goal ≤ ${GOAL}× both)` : ''}`);
  }
  L.push(`bundle: ${(bundleBytes / 1024).toFixed(0)} KiB (entry + ${chunks.length} chunks); --help spawn → exit: bundle ${h.bundle.exitMs.medianMs} ms, dist/cli ${h.dist.exitMs.medianMs} ms (${ratios.helpBundleToDist}×), node -e ${h.node.exitMs.medianMs} ms`);
  const noisy = results.filter((r) => r.spread > 0.1).map((r) => r.measure);
  if (noisy.length > 0) L.push(`note: runs varied by more than ±10 % (${noisy.join('; ')}): the machine was busy; run again before trusting a ratio`);
  if (results.some((r) => passes(r) === false)) L.push('(a MISS is reported, not an error: the bench exits 0)');
  process.stdout.write(L.join('\n') + '\n');
}

main()
  .catch((e: unknown) => {
    if (signals.interrupted) return;
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(() => (signals.interrupted ? undefined : cleanup()));
