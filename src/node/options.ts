/**
 * The node's defaults and the argument checks its parts share: every refusal of a bad option is
 * a QisError ERR_INVALID_ARGUMENT (or ERR_URL_INVALID / ERR_ABORTED) before anything happens.
 */
import { QisError } from '../protocol/errors.js';
import type { Template } from '../protocol/template.js';
import { backoffOptions, type BackoffOptions } from './backoff.js';
import type { BrokerKind } from './broker-kind.js';
import { MAX_INCOMING_PACKET_BYTES } from './guard.js';
import type { NodeOptions } from './types.js';

export interface Defaults {
  readonly keepaliveS: number;
  readonly connectTimeoutMs: number;
  readonly ackTimeoutMs: number;
  readonly brokerKind: BrokerKind | 'auto';
  readonly quietMs: number;
  readonly queryTimeoutMs: number;
  readonly maxPacketBytes: number;
  readonly maxQueryMessages: number;
}
export const DEFAULTS: Defaults = Object.freeze({
  keepaliveS: 30,
  connectTimeoutMs: 10_000,
  ackTimeoutMs: 10_000,
  brokerKind: 'auto',
  quietMs: 500,
  queryTimeoutMs: 10_000,
  maxPacketBytes: MAX_INCOMING_PACKET_BYTES,
  // ~50 MB at most of 512-byte packets and their topics: far above any real cohort's node count.
  maxQueryMessages: 50_000,
});
/** The node's options with every default filled in. */
export type Merged = Defaults & NodeOptions;

/** The options given, over the defaults, checked. @throws QisError ERR_URL_INVALID | ERR_INVALID_ARGUMENT | ERR_ABORTED */
export function mergeOptions(options: NodeOptions): { o: Merged; backoff: Required<BackoffOptions> } {
  const o: Merged = { ...DEFAULTS, ...stripUndefined(options) };
  checkUrl(o.url);
  const backoff = backoffOptions(o.reconnect);
  positive('keepaliveS', o.keepaliveS, true);
  positive('connectTimeoutMs', o.connectTimeoutMs);
  positive('ackTimeoutMs', o.ackTimeoutMs, true);
  positive('quietMs', o.quietMs);
  positive('maxPacketBytes', o.maxPacketBytes);
  positive('maxQueryMessages', o.maxQueryMessages);
  if (!['auto', 'qis', 'mosquitto', 'unknown'].includes(o.brokerKind)) {
    throw new QisError('ERR_INVALID_ARGUMENT', `brokerKind must be auto, qis, mosquitto or unknown, got ${String(o.brokerKind)}`);
  }
  if (typeof o.dataDir !== 'string' || o.dataDir === '') throw new QisError('ERR_INVALID_ARGUMENT', 'dataDir is required');
  if (o.clientId !== undefined && (o.clientId === '' || /[/+#]/.test(o.clientId))) {
    // It is a topic level of the node's sync markers (qis/1/sync/<clientId>/<nonce>).
    throw new QisError('ERR_INVALID_ARGUMENT', `clientId must be non-empty and free of '/', '+' and '#', got ${JSON.stringify(o.clientId)}`);
  }
  throwIfAborted(o.signal);
  return { o, backoff };
}

function checkUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QisError('ERR_URL_INVALID', `${JSON.stringify(url)} is not a URL; use mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt`);
  }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol) || !u.hostname) {
    throw new QisError('ERR_URL_INVALID', `${url}: the scheme must be mqtt, mqtts, ws or wss with a host`);
  }
  return u;
}

export function positive(name: string, v: number | undefined, allowZero = false): void {
  if (v === undefined) return;
  if (!(Number.isFinite(v) && (allowZero ? v >= 0 : v > 0))) throw new QisError('ERR_INVALID_ARGUMENT', `${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(v)}`);
}

export function checkWiden(template: Template, widen: number): void {
  const k = template.fields.length;
  if (!Number.isInteger(widen) || widen < 0 || widen > k) throw new QisError('ERR_INVALID_ARGUMENT', `widen must be an integer from 0 to ${k}, got ${String(widen)}`);
}

export function abortError(signal: AbortSignal): QisError {
  const why = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? 'aborted');
  return new QisError('ERR_ABORTED', `aborted: ${why}`, { cause: signal.reason });
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/** `{ a: undefined }` must not override a default. */
function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** `{ signal }` when there is one (exactOptionalPropertyTypes: no `signal: undefined`). */
export function withSignal(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal ? { signal } : {};
}
