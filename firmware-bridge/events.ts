/** What the bridges report (log lines for the CLI, metrics) and the options they share. */
import { isQisError, type ErrorCode } from '../src/index.js';

export type BridgeEvent =
  | { readonly type: 'device-up'; readonly machine: string; readonly device: string }
  | { readonly type: 'device-down'; readonly machine: string; readonly device: string; readonly code: ErrorCode; readonly message: string; readonly retryInMs: number }
  | { readonly type: 'modbus-exception'; readonly machine: string; readonly device: string; readonly reading: string; readonly exception: number; readonly message: string }
  | { readonly type: 'reading-recovered'; readonly machine: string; readonly device: string; readonly reading: string }
  | { readonly type: 'state-restored'; readonly machine: string; readonly readings: number }
  | { readonly type: 'state-ignored'; readonly machine: string; readonly code: ErrorCode; readonly message: string }
  | { readonly type: 'published'; readonly machine: string; readonly rule: string; readonly topic: string; readonly seq: number; readonly outcome: unknown; readonly acked: boolean }
  /** Packets logged `published … acked=false` (queued in the outbox) are now acknowledged: the outbox is empty. */
  | { readonly type: 'acknowledged'; readonly machine: string; readonly packets: number }
  | { readonly type: 'skipped'; readonly machine: string; readonly rule: string; readonly reason: string }
  | { readonly type: 'publish-failed'; readonly machine: string; readonly rule: string; readonly code: ErrorCode; readonly message: string }
  | { readonly type: 'node-refused'; readonly machine: string; readonly code: ErrorCode; readonly message: string }
  | { readonly type: 'sparkplug-connected'; readonly url: string; readonly filter: string }
  | { readonly type: 'sparkplug-disconnected'; readonly reason: string }
  | { readonly type: 'rebirth-requested'; readonly edgeNode: string; readonly reason: string; readonly topic: string }
  | { readonly type: 'sparkplug-dropped'; readonly topic: string; readonly code: ErrorCode; readonly message: string }
  | { readonly type: 'historical'; readonly edgeNode: string; readonly device?: string; readonly count: number }
  /** A reading's Sparkplug metric carries a value that cannot drive a rule (Bytes, File, an oversized DataSet…): said once per machine and reading. */
  | { readonly type: 'metric-unusable'; readonly machine: string; readonly reading: string; readonly metric: string; readonly reason: string };

export interface DeviceStatus {
  readonly machine: string;
  readonly device: string;
  readonly state: 'connecting' | 'up' | 'down';
  readonly lastError?: { readonly code: ErrorCode; readonly message: string; readonly at: number };
  readonly lastPollAt?: number;
  readonly polls: number;
  readonly exceptions: number;
  /** Polls that failed as a whole (connection lost, timeout); Sparkplug: 0. */
  readonly failures: number;
  /** Packets queued for the qis broker, and those it acknowledged. */
  readonly published: number;
  readonly acknowledged: number;
}

export interface BridgeOptions {
  /** Every event (log lines for the CLI). */
  readonly onEvent?: (e: BridgeEvent) => void;
  /** Node options for tests: faster reconnects of the machines' connections to the qis broker. */
  readonly nodeReconnect?: { readonly baseMs: number; readonly capMs: number };
  readonly random?: () => number;
  /** Clock, Unix ms: when readings are observed (the packets' ts). Default Date.now. */
  readonly now?: () => number;
}

export const codeOf = (e: unknown): ErrorCode => (isQisError(e) ? e.code : 'ERR_INTERNAL');
