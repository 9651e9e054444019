/**
 * Key figures of a bench for the one summary table of `npm run bench` (bench/summary.ts). A bench
 * run with `--json-out=FILE` appends one JSON line per measure to FILE; without it, nothing is
 * written and the bench prints only its own report.
 */
import { appendFileSync } from 'node:fs';
import os from 'node:os';
import { optStr } from './args.js';

export interface BenchResult {
  /** The bench that measured it, e.g. 'edge'. */
  readonly bench: string;
  /** What was measured, for a person: 'qis publish (bundle) → PUBACK, wall'. */
  readonly measure: string;
  readonly value: number;
  readonly unit: string;
  /** The floor or peer measured in the same run, and what it is. */
  readonly peer: number;
  readonly peerName: string;
  /** value / peer, or as the bench defines it (a median of per-round ratios). */
  readonly ratio: number;
  /**
   * The goal: on the ratio (`ratio <= 1.0`) or on the value itself (`p99 <= 20 ms`); `>=` for a
   * throughput. Absent: shown, not judged.
   */
  readonly goal?: { readonly on: 'ratio' | 'value'; readonly op: '<=' | '>='; readonly limit: number };
  /** The largest half-spread (± fraction) of the runs behind value and peer. */
  readonly spread: number;
  readonly note?: string;
}

export interface StoredResult extends BenchResult {
  readonly loadavg1m: number;
}

export const RESULTS_FILE = optStr('json-out');

export function passes(r: BenchResult): boolean | undefined {
  if (!r.goal) return undefined;
  const x = r.goal.on === 'ratio' ? r.ratio : r.value;
  return r.goal.op === '<=' ? x <= r.goal.limit : x >= r.goal.limit;
}

/** Appends `results` to the --json-out file, when one was given. */
export function writeResults(results: readonly BenchResult[]): void {
  if (RESULTS_FILE === undefined) return;
  const loadavg1m = Number((os.loadavg()[0] ?? 0).toFixed(2));
  appendFileSync(RESULTS_FILE, results.map((r) => JSON.stringify({ ...r, loadavg1m } satisfies StoredResult) + '\n').join(''));
}
