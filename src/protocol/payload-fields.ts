/**
 * The decoded payload's shape (PROTOCOL §5), in a module of its own so that both payload readers,
 * the full decoder (packet.ts) and the fast path for the canonical form (packet-fast.ts), use it
 * without importing each other.
 */
import type { CborValue } from './cbor-value.js';

/** What a node observed: a category label, a number, or a map of named values. */
export type Outcome = string | number | { readonly [key: string]: string | number };

/** A decoded payload. Defaults are applied (`conf` 1, `n` 1, `del` false); unknown keys are kept in `extra`. */
export interface PayloadFields {
  readonly v: 1;
  readonly fp: Uint8Array;
  readonly seq: number;
  readonly ts: number;
  readonly out?: Outcome;
  readonly conf: number;
  readonly n: number;
  readonly ctx?: { readonly [key: string]: number };
  readonly exp?: number;
  readonly del: boolean;
  readonly extra: ReadonlyMap<CborValue, CborValue>;
}
