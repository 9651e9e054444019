/**
 * What both stores (the log store and the Redis store of broker/cluster.ts) share besides the
 * index and the trie: the boundary checks of their arguments, their error builders, the expiry
 * rule and the shape of a returned packet.
 */
import { MAX_PACKET_BYTES, QisError, isNodeId, isTplId, parseOutcomeTopic } from '../../src/index.js';
import type { PutResult, StoredPacket } from './types.js';

/** Characters of a tplId or a nodeId (base32). */
export const ID_CHARS = 26;
// Above the longest outcome topic (32 levels: 413 characters), so a sane log frame is small.
export const MAX_TOPIC = 1024;

export const noop = (): void => {};
export const STALE = Object.freeze({ stored: false, reason: 'stale' }) as PutResult;

/** Whether a packet with this `exp` (Unix s, -1: none) has expired at nowMs: the rule of verifyPacket's ERR_EXPIRED. */
export function expired(e: { readonly exp: number }, nowMs: number): boolean {
  return e.exp >= 0 && nowMs > e.exp * 1000;
}

/** A StoredPacket, with `exp` only when there is one (exactOptionalPropertyTypes). */
export function packetOf(tplId: string, nodeId: string, topic: string, seq: number, packet: Uint8Array, exp: number): StoredPacket {
  return exp >= 0 ? { tplId, nodeId, topic, seq, packet, exp } : { tplId, nodeId, topic, seq, packet };
}

/** A put's fields as checked. */
export interface Checked {
  readonly tpl: string;
  readonly node: string;
  readonly seq: number;
  readonly exp: number;
}

/** The boundary check of put(): everything the log and the index rely on (the Redis store uses it too). */
export function checkStoredPacket(p: StoredPacket): Checked {
  if (typeof p !== 'object' || p === null) throw argError('put() takes a StoredPacket');
  let parsed;
  try {
    parsed = parseOutcomeTopic(p.topic);
  } catch (e) {
    throw new QisError('ERR_INVALID_ARGUMENT', `put(): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (p.topic.length > MAX_TOPIC) throw argError(`put(): a topic of ${p.topic.length} characters is longer than ${MAX_TOPIC}`);
  if (p.tplId !== parsed.tplId || p.nodeId !== parsed.nodeId) {
    throw argError(`put(): tplId ${show(p.tplId)} and nodeId ${show(p.nodeId)} are not those of topic ${p.topic}`);
  }
  if (!Number.isSafeInteger(p.seq) || p.seq < 0) throw argError(`put(): seq must be an integer from 0 to 2^53-1, not ${show(p.seq)}`);
  if (!(p.packet instanceof Uint8Array) || p.packet.length < 1 || p.packet.length > MAX_PACKET_BYTES) {
    throw argError(`put(): packet must be 1 to ${MAX_PACKET_BYTES} bytes (a Uint8Array)`);
  }
  if (p.exp !== undefined && (!Number.isSafeInteger(p.exp) || p.exp < 0)) throw argError(`put(): exp must be Unix seconds, not ${show(p.exp)}`);
  return { tpl: parsed.tplId, node: parsed.nodeId, seq: p.seq, exp: p.exp ?? -1 };
}

/** The boundary check of remove()'s key and seq. */
export function checkRemove(t: { readonly tplId: string; readonly nodeId: string; readonly seq: number }): void {
  if (typeof t !== 'object' || t === null) throw argError('remove() takes { tplId, nodeId, seq }');
  if (typeof t.tplId !== 'string' || !isTplId(t.tplId)) throw argError(`remove(): ${show(t.tplId)} is not a template id`);
  if (typeof t.nodeId !== 'string' || !isNodeId(t.nodeId)) throw argError(`remove(): ${show(t.nodeId)} is not a node id`);
  if (!Number.isSafeInteger(t.seq) || t.seq < 0) throw argError(`remove(): seq must be an integer from 0 to 2^53-1, not ${show(t.seq)}`);
}

/** The boundary check of sweepExpired()'s argument. */
export function checkSweepNow(nowMs: number | undefined): void {
  if (nowMs !== undefined && (!Number.isFinite(nowMs) || nowMs < 0)) throw argError(`sweepExpired(): nowMs must be a Unix time in ms, not ${show(nowMs)}`);
}

/** Splits an MQTT filter into levels, checking the wildcard rules of MQTT 3.1.1 §4.7.1. */
export function parseFilter(filter: string): string[] {
  if (typeof filter !== 'string' || filter.length === 0 || filter.length > 65535) throw argError(`match(): ${show(filter)} is not a topic filter`);
  const levels = filter.split('/');
  levels.forEach((l, i) => {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) throw argError(`match(): '#' must be a whole last level, in ${show(filter)}`);
    if (l.includes('+') && l !== '+') throw argError(`match(): '+' must be a whole level, in ${show(filter)}`);
  });
  return levels;
}

export function ioError(what: string, cause: unknown): QisError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new QisError('ERR_FILE_IO', `${what}: ${why}`, { cause });
}

export function argError(message: string): QisError {
  return new QisError('ERR_INVALID_ARGUMENT', message);
}

/** A value for an error message, cut short. */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  return `(a ${typeof v})`;
}
