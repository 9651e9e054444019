/**
 * What the parts of synthesis share: argument checks, one fixed string order, the weighted
 * entry every statistic reads, and the answer for too few nodes.
 */
import { QisError } from '../protocol/errors.js';
import type { InsufficientSummary } from './types.js';

export function invalid(what: string): never {
  throw new QisError('ERR_INVALID_ARGUMENT', what);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A packet reduced to what the statistics need: its value and its weight factors. */
export interface Entry<V> {
  readonly nodeId: string;
  readonly value: V;
  readonly n: number;
  /** conf × recency × kernel: the weight of each of the node's n observations. */
  readonly c: number;
  /** n × c. */
  readonly w: number;
}

export type MapValue = { readonly [key: string]: string | number };

export function plural(k: number, word: string): string {
  return `${k} ${word}${k === 1 ? '' : 's'}`;
}

export function insufficient(count: number, minCohort: number, skipped: number, zeroWeight: number, excluded = 0): InsufficientSummary {
  const after = excluded > 0 ? ` after excluding ${plural(excluded, 'outlier')}` : '';
  return {
    kind: 'insufficient',
    reason: 'few-nodes',
    count,
    minCohort,
    excluded,
    skipped,
    zeroWeight,
    message: `insufficient evidence: ${plural(count, 'node')}${after}, ${minCohort} needed`,
  };
}
