/**
 * `npm run bench`: runs every bench in turn (each prints its own report, as when run alone), then
 * prints ONE table of the goals: measure, floor or peer measured in the same run, ratio, goal,
 * PASS/MISS, and a note where a measure's runs spread more than ±10 % (a busy machine).
 *
 *   node dist/bench/summary.js                       (every bench, full length)
 *   node dist/bench/summary.js --quick               (short runs of the benches that report goals: checks the wiring, not the figures)
 *   node dist/bench/summary.js --only=edge,node      (some benches)
 *   node dist/bench/summary.js --from=FILE           (only the table, from results a run wrote; see --keep)
 *   node dist/bench/summary.js --keep=FILE           (keep the results file)
 *
 * Each bench gets `--json-out=FILE` and appends its key figures there (bench/result.ts); a bench
 * that fails is named under the table and the others still run. Goals no bench reported are listed
 * as "not measured", so a missing figure shows.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { argv, optStr } from './args.js';
import { passes, type StoredResult } from './result.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const QUICK = argv.includes('--quick');

interface Bench {
  readonly name: string;
  /** Short options for --quick; absent: the bench reports no goal and --quick skips it. */
  readonly quick?: readonly string[];
}
/** In the order `npm run bench` always ran them. */
const BENCHES: readonly Bench[] = [
  { name: 'core' },
  { name: 'node', quick: ['--part=1', '--nodes=300', '--reps=1'] },
  { name: 'store' },
  { name: 'broker', quick: ['--part=1', '--n=1000', '--pubs=2', '--few=1', '--rounds=1', '--stored=10000', '--million=0', '--warmup=500'] },
  { name: 'federation', quick: ['--rate=100', '--seconds=2', '--updates=200'] },
  { name: 'scaling-sim' },
  { name: 'bridge' },
  { name: 'collusion' },
  { name: 'registry' },
  { name: 'enrolment' },
  { name: 'console' },
  { name: 'edge', quick: ['--runs=2'] },
  { name: 'hostile', quick: ['--only=hangup,announce'] },
];

/** The goals of issue 15, by bench and measure: listed even when no figure came. */
const EXPECTED: readonly { readonly bench: string; readonly measure: string; readonly label?: string }[] = [
  { bench: 'broker', measure: 'verified QoS 1 ingest' },
  { bench: 'broker', measure: 'p99 of 50 msg/s traffic during the burst' },
  { bench: 'node', measure: 'cohort query (Mosquitto', label: '10k-node cohort query (Mosquitto)' },
  { bench: 'node', measure: 'cohort query (qis broker', label: '10k-node cohort query (qis broker)' },
  { bench: 'federation', measure: 'added latency per hop, p50' },
  { bench: 'federation', measure: 'added latency per hop, p99' },
  { bench: 'federation', measure: 'convergence after a partition' },
  { bench: 'edge', measure: 'qis publish (bundle) → PUBACK, wall' },
  { bench: 'edge', measure: 'qis publish (bundle), peak RSS' },
  { bench: 'hostile', measure: 'hangup: broker RSS growth' },
  { bench: 'hostile', measure: 'hangup: good client round trip p99' },
];

function runBench(b: Bench, out: string): Promise<{ status: number | null; ms: number; load: number }> {
  const args = [join(HERE, `${b.name}.js`), `--json-out=${out}`, ...(QUICK ? (b.quick ?? []) : [])];
  process.stderr.write(`\n=== bench/${b.name} ${args.slice(1).join(' ')}\n`);
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (status) => resolve({ status, ms: performance.now() - t0, load: os.loadavg()[0] ?? 0 }));
  });
}

function readResults(file: string): StoredResult[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as StoredResult);
}

const num = (x: number): string => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));

export function table(results: readonly StoredResult[], failed: readonly string[] = []): string {
  const rows: string[][] = [['measure', 'value', 'floor / peer (same run)', 'ratio', 'goal', 'verdict', 'load']];
  const notes: string[] = [];
  for (const r of results) {
    const goal = r.goal ? `${r.goal.on === 'ratio' ? 'ratio' : 'value'} ${r.goal.op === '<=' ? '≤' : '≥'} ${r.goal.limit}${r.goal.on === 'ratio' ? '×' : ` ${r.unit}`}` : '—';
    const p = passes(r);
    const noisy = r.spread > 0.1;
    rows.push([
      `${r.bench}: ${r.measure}`,
      `${num(r.value)} ${r.unit}`,
      `${num(r.peer)} ${r.unit} ${r.peerName}`,
      `${r.ratio.toFixed(3)}×`,
      goal,
      `${p === undefined ? '—' : p ? 'PASS' : 'MISS'}${noisy ? ' (noisy)' : ''}`,
      r.loadavg1m.toFixed(1),
    ]);
    if (noisy) notes.push(`${r.bench}: ${r.measure}: runs spread ±${(r.spread * 100).toFixed(0)} % (> 10 %): the machine was busy; run again before trusting it`);
    if (r.note) notes.push(`${r.bench}: ${r.measure}: ${r.note}`);
  }
  for (const e of EXPECTED) {
    if (!results.some((r) => r.bench === e.bench && r.measure.startsWith(e.measure))) rows.push([`${e.bench}: ${e.label ?? e.measure}`, 'not measured', '', '', '', '—', '']);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string => r.map((c, i) => (i === 0 || i === 2 || i === 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const L = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  const busiest = Math.max(0, ...results.map((r) => r.loadavg1m));
  if (busiest > os.cpus().length) notes.push(`the load average reached ${busiest.toFixed(1)} on ${os.cpus().length} CPUs: other work shared the machine, so every figure is pessimistic`);
  if (notes.length > 0) L.push('', ...notes.map((n) => `note: ${n}`));
  if (failed.length > 0) L.push('', `FAILED (no figures from): ${failed.join(', ')}`);
  return L.join('\n') + '\n';
}

async function main(): Promise<void> {
  const from = optStr('from');
  if (from !== undefined) {
    process.stdout.write(table(readResults(from)));
    return;
  }
  const only = optStr('only')?.split(',');
  const chosen = BENCHES.filter((b) => (only ? only.includes(b.name) : !QUICK || b.quick !== undefined));
  const keep = optStr('keep');
  const out = keep ?? join(os.tmpdir(), `qis-bench-results-${process.pid}.jsonl`);
  rmSync(out, { force: true });
  const failed: string[] = [];
  const t0 = performance.now();
  const load0 = os.loadavg()[0] ?? 0;
  try {
    for (const b of chosen) {
      const r = await runBench(b, out);
      if (r.status !== 0) failed.push(`${b.name} (exit ${String(r.status)})`);
      process.stderr.write(`=== bench/${b.name}: ${(r.ms / 1000).toFixed(0)} s, load average ${r.load.toFixed(2)}\n`);
    }
    const total = (performance.now() - t0) / 1000;
    process.stdout.write(
      `\nqis-mqtt bench summary${QUICK ? ' (QUICK: short runs, the figures are not the goals’ measurements)' : ''} — ${chosen.length} benches in ${(total / 60).toFixed(1)} min; ` +
        `load average (1 min) ${load0.toFixed(2)} at start, ${(os.loadavg()[0] ?? 0).toFixed(2)} at end, ${os.cpus().length} CPUs\n\n`,
    );
    process.stdout.write(table(readResults(out), failed));
  } finally {
    if (keep === undefined) rmSync(out, { force: true });
  }
  if (failed.length > 0) process.exitCode = 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
