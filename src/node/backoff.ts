/**
 * Reconnect delays: exponential backoff with full jitter (the AWS Architecture Blog's "Exponential
 * Backoff and Jitter"): attempt k waits a uniform random time in [0, min(cap, base·2^k)), so a
 * plant full of nodes that lost the broker together does not come back in lockstep.
 */
import { QisError } from '../protocol/errors.js';

export interface BackoffOptions {
  /** Upper bound of the first delay, ms. Default 500. */
  readonly baseMs?: number;
  /** Largest upper bound, ms. Default 30,000. */
  readonly capMs?: number;
}

export const BACKOFF_DEFAULTS = Object.freeze({ baseMs: 500, capMs: 30_000 });

/** Checks backoff options once and fills in the defaults. @throws QisError ERR_INVALID_ARGUMENT */
export function backoffOptions(o: BackoffOptions = {}): Required<BackoffOptions> {
  const r = { ...BACKOFF_DEFAULTS, ...o };
  if (!(Number.isFinite(r.baseMs) && r.baseMs > 0)) throw new QisError('ERR_INVALID_ARGUMENT', `backoff baseMs must be a positive number of ms, got ${String(o.baseMs)}`);
  if (!(Number.isFinite(r.capMs) && r.capMs >= r.baseMs)) throw new QisError('ERR_INVALID_ARGUMENT', `backoff capMs must be a number of ms ≥ baseMs, got ${String(o.capMs)}`);
  return r;
}

/** The upper bound of attempt `attempt`'s delay (0-based): min(cap, base·2^attempt). */
export function backoffBound(attempt: number, o: Required<BackoffOptions>): number {
  return Math.min(o.capMs, o.baseMs * 2 ** Math.min(attempt, 52));
}

/**
 * The delay before reconnect attempt `attempt` (0-based), full jitter.
 * @example backoffDelay(3, backoffOptions({ baseMs: 100, capMs: 5000 }), Math.random) // in [0, 800)
 */
export function backoffDelay(attempt: number, o: Required<BackoffOptions>, random: () => number): number {
  return Math.floor(random() * backoffBound(attempt, o));
}
