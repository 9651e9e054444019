/**
 * The node runtime's public types: its options, what each call takes and returns, and the
 * {@link QisNode} interface that node.ts implements.
 */
import type { ErrorCode, QisError } from '../protocol/errors.js';
import type { Situation } from '../protocol/fingerprint.js';
import type { Ed25519Backend, NodeKey } from '../protocol/identity.js';
import type { Outcome, VerifiedPacket } from '../protocol/packet.js';
import type { ScoreFields, VerifiedScore } from '../protocol/score.js';
import type { Template } from '../protocol/template.js';
import type { Synthesis, SynthesisOptions } from '../synthesis/index.js';
import type { Prediction, PredictionScore, ThompsonDraw } from '../elections/darwin.js';
import type { BackoffOptions } from './backoff.js';
import type { BrokerKind } from './broker-kind.js';
import type { TlsOptions } from './tls.js';
import type { TrustReport } from './trusted.js';
export type { TrustReport } from './trusted.js';

/** What a node says about its enrolment (`QisNode.enrolment()`). */
export interface EnrolmentState {
  readonly operatorId: string;
  /** Unix s. */
  readonly exp: number;
  readonly scope?: readonly string[];
  /** Seconds until it expires (negative once it has). */
  readonly expiresInS: number;
  /** ok; expiring: within the warning time; expired: brokers in enrolment mode refuse the node's packets. */
  readonly state: 'ok' | 'expiring' | 'expired';
  /** What to tell the operator when it is expiring or expired. */
  readonly message?: string;
}

/** Timer functions, replaceable in tests (a fake clock). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type { TlsOptions } from './tls.js';

export interface NodeOptions {
  /** `mqtt://host[:1883]`, `mqtts://host[:8883]`, `ws://host/path` or `wss://host/path`. */
  readonly url: string;
  /** Holds the key (`key.json`), the outbox and the per-template seq state. Created if missing. */
  readonly dataDir: string;
  /** Use this key instead of `<dataDir>/key.json` (which is created on first start otherwise). */
  readonly key?: NodeKey;
  /** MQTT client id. Default `qis-<nodeId>-<8 hex>`. */
  readonly clientId?: string;
  readonly username?: string;
  readonly password?: string;
  /**
   * Node login (PROTOCOL §11): connect with username = the node id and password = a login signed
   * by the node key over its client id and the time, made fresh at every (re)connect, with the
   * enrolment of `<dataDir>/enrolment.cbor` when one for this key is installed. Not with
   * `username`/`password`. Default false.
   */
  readonly login?: boolean;
  readonly tls?: TlsOptions;
  /** MQTT keepalive, s. Default 30. */
  readonly keepaliveS?: number;
  /** Time allowed for TCP + TLS + CONNACK, ms. Default 10,000. */
  readonly connectTimeoutMs?: number;
  /** Reconnect backoff. Default base 500 ms, cap 30 s, full jitter. */
  readonly reconnect?: BackoffOptions;
  /** How long `publish` waits for the PUBACK before it reports the packet as queued. Default 10,000. */
  readonly ackTimeoutMs?: number;
  /** The broker's query ordering; default 'auto' (asked once per connection, PROTOCOL §7). */
  readonly brokerKind?: BrokerKind | 'auto';
  /** Quiet period that ends a query on a broker of unknown ordering, ms. Default 500. */
  readonly quietMs?: number;
  /**
   * The largest MQTT packet the node accepts from the broker, bytes: a bigger one drops the
   * connection (ERR_INCOMING_TOO_LARGE) as soon as its fixed header announces it, before it is
   * buffered. Default 66,560 (a 64 KiB template document, the largest message a node reads, with
   * its topic; outcome packets are at most 512 bytes).
   */
  readonly maxPacketBytes?: number;
  /**
   * The most messages one read of retained messages (a query, a score or template read) takes in
   * before it gives up with ERR_QUERY_TOO_LARGE. Default 50,000.
   */
  readonly maxQueryMessages?: number;
  readonly backend?: Ed25519Backend;
  /** Clock (Unix ms), jitter source and timers; replaceable in tests. */
  readonly now?: () => number;
  readonly random?: () => number;
  readonly timers?: Timers;
  readonly signal?: AbortSignal;
  /**
   * How {@link QisNode.consult} picks among rival templates: `thompson` samples each one's Beta
   * posterior on its hit rate (read from the broker's score packets, PROTOCOL §9) and consults the
   * best draw; `first` (default) consults the first template given.
   */
  readonly choose?: 'thompson' | 'first';
  /** Uniform [0, 1) source of the Thompson draws (seed it in tests). Default Math.random. */
  readonly chooseRandom?: () => number;
  /**
   * Interactive use (the CLI): a wait for the broker (query, watch, flush) fails at once with the
   * failed attempt's ERR_CONNECTION_REFUSED | ERR_HOST_NOT_FOUND | ERR_TLS instead of waiting out
   * its timeout; publish reports the packet queued at once. The runtime keeps reconnecting either
   * way. Default false.
   */
  readonly failFast?: boolean;
  /**
   * The node's enrolment (PROTOCOL §10, a CWT from `qis enrol`), attached to every packet it
   * sends. Default: `<dataDir>/enrolment.cbor` when present (`qis enrol --install`).
   */
  readonly enrolment?: Uint8Array;
  /** Read the enrolment from this file (raw CBOR) instead of the data dir. */
  readonly enrolmentFile?: string;
  /** Say so on the status stream this many seconds before the enrolment expires. Default 7 days. */
  readonly enrolmentWarnS?: number;
}

/** Packet options of {@link QisNode.publish} (PROTOCOL §5). */
export interface PublishOptions {
  readonly conf?: number;
  readonly n?: number;
  readonly ctx?: { readonly [key: string]: number };
  /** Unix s after which the packet is stale. */
  readonly exp?: number;
  /** Unix ms when the outcome was observed. Default now. */
  readonly ts?: number;
  /** Wait at most this long for the PUBACK (default the node's ackTimeoutMs; 0: do not wait). */
  readonly ackTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface PublishResult {
  readonly topic: string;
  readonly seq: number;
  /** The packet exactly as signed and queued. */
  readonly packet: Uint8Array;
  /** The tombstone queued for the node's previous bucket, when the bucket changed. */
  readonly tombstone?: { readonly topic: string; readonly seq: number; readonly packet: Uint8Array };
  /** true: the broker acknowledged it. false: it is in the outbox and goes out on reconnect. */
  readonly acked: boolean;
  /**
   * The broker closed the connection right after it was sent (MQTT 3.1.1's way to refuse a
   * publish): it stays queued and is set aside as `<name>.bad` after repeated refusals.
   */
  readonly refused?: true;
}

/** What `flush()` saw: PUBACKs received since the node opened or the last flush(), and the packets set aside meanwhile. */
export interface FlushResult {
  readonly delivered: number;
  /** Packets the broker kept refusing, now `outbox/<name>` (name ends in `.bad`). */
  readonly setAside: readonly { readonly name: string; readonly kind: string; readonly topic: string; readonly seq: number; readonly packet: Uint8Array }[];
}

export interface QueryOptions extends SynthesisOptions {
  /** Drop this many least significant levels: 0 is the exact cohort. */
  readonly widen?: number;
  /**
   * Also read the cohorts of the templates this one supersedes (`supersedes: <tplId>`, followed
   * as a chain) as long as their routed fields and outcome are unchanged (docs/registry.md).
   */
  readonly includeSuperseded?: boolean;
  /** Overall time limit including waiting for a connection, ms. Default 10,000. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Remember the prediction in the data directory for a later `report` (default true). */
  readonly remember?: boolean;
  /**
   * Count only nodes enrolled by these operators (ids or public keys hex, PROTOCOL §10): their
   * revocation lists are read in the same round trip, packets without a valid enrolment by one of
   * them are dropped (counted by reason in `trust.notEnrolled`), and each operator's share of the
   * cohort's weight is capped at `maxOperatorShare`.
   */
  readonly trust?: readonly string[];
  /** With `trust`: cap on one operator's share of the weight, (0, 1]; default min(1, 2/M) for M operators counted. */
  readonly maxOperatorShare?: number;
}

export interface QueryResult {
  readonly tplId: string;
  readonly filter: string;
  readonly widen: number;
  /** How the end of the retained messages was known: the sync marker, or a quiet period. */
  readonly completeness: 'sync' | 'quiet-period';
  readonly broker: BrokerKind;
  /** The cohort: verified live packets, one per node (highest seq). */
  readonly packets: readonly VerifiedPacket[];
  readonly received: number;
  readonly dropped: Partial<Record<ErrorCode, number>>;
  readonly superseded: number;
  readonly withdrawn: number;
  readonly duplicates: number;
  readonly synthesis: Synthesis;
  readonly elapsedMs: number;
  /** With `trust`: per-operator node counts, packets not counted by reason, the cap applied (`packets` holds only the trusted ones). */
  readonly trust?: TrustReport;
  /**
   * With `includeSuperseded`: the template versions whose cohorts answered, newest first, with
   * the packets each contributed (one per node overall: a node's packet under the newest
   * template wins), and the older templates left out, with why.
   */
  readonly versions?: readonly { readonly tplId: string; readonly name: string; readonly version: number; readonly packets: number }[];
  readonly notIncluded?: readonly { readonly tplId: string; readonly reason: string }[];
}

/** Options of {@link QisNode.report}. */
export interface ReportOptions {
  /** Unix ms when the outcome was observed (default now): only predictions received before it are scored. */
  readonly ts?: number;
  /** Wait at most this long for the score packet's PUBACK (default the node's ackTimeoutMs; 0: do not wait). */
  readonly ackTimeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** What {@link QisNode.report} scored and published. */
export interface ReportResult {
  readonly tplId: string;
  /** The prediction scored, and when the node received it (Unix ms). */
  readonly prediction: Prediction;
  readonly predictedAt: number;
  readonly score: PredictionScore;
  /** The node's updated track record for the template, as signed in the score packet. */
  readonly totals: ScoreFields;
  readonly topic: string;
  readonly seq: number;
  readonly packet: Uint8Array;
  /** true: the broker acknowledged the score packet; false: it waits in the outbox. */
  readonly acked: boolean;
}

/** Track records read from the broker (PROTOCOL §9), one query round trip for all templates. */
export interface ScoresResult {
  readonly completeness: 'sync' | 'quiet-period';
  readonly broker: BrokerKind;
  /** Per template asked, one verified score packet per node (highest seq). */
  readonly records: readonly { readonly tplId: string; readonly scores: readonly VerifiedScore[] }[];
  readonly dropped: Partial<Record<ErrorCode, number>>;
}

/** A query answered by one of several rival templates. */
export interface ConsultResult extends QueryResult {
  /** The template consulted. */
  readonly chosen: string;
  readonly choose: 'thompson' | 'first';
  /** The Thompson draws, best first (choose: 'thompson'). */
  readonly draws?: readonly ThompsonDraw[];
}

export interface WatchOptions {
  readonly widen?: number;
  /** Also yield the retained packets present when the watch starts. Default true. */
  readonly retained?: boolean;
  readonly signal?: AbortSignal;
}

/** One verified packet seen by {@link QisNode.watch}. Tombstones come too (`packet.del`). */
export interface WatchEvent {
  readonly packet: VerifiedPacket;
  readonly retained: boolean;
}

export interface WatchIterator extends AsyncIterableIterator<WatchEvent> {
  /** Messages on the filter that failed verification, by code. */
  readonly dropped: Partial<Record<ErrorCode, number>>;
}

/** What `status()` reports. */
export type NodeStatus =
  | { readonly type: 'connecting'; readonly attempt: number; readonly url: string }
  | { readonly type: 'connected'; readonly url: string }
  | { readonly type: 'disconnected'; readonly reason: string }
  | { readonly type: 'reconnecting'; readonly attempt: number; readonly delayMs: number }
  | { readonly type: 'refused'; readonly code: ErrorCode; readonly message: string; readonly topic?: string }
  | { readonly type: 'outbox-flushed'; readonly delivered: number }
  /** The node's enrolment is about to expire or has expired (at open and on every connection). */
  | { readonly type: 'enrolment'; readonly state: 'expiring' | 'expired'; readonly operatorId: string; readonly exp: number; readonly expiresInS: number; readonly message: string };

export interface QisNode extends AsyncDisposable {
  readonly key: NodeKey;
  readonly nodeId: string;
  readonly clientId: string;
  readonly connected: boolean;
  /** Packets in the outbox, waiting for a PUBACK. */
  readonly pending: number;
  /** The node's enrolment (PROTOCOL §10) and whether it is expiring, at the node's clock; undefined without one. */
  enrolment(): EnrolmentState | undefined;
  /** `template` may be a template id: it is fetched from the registry (see {@link QisNode.template}). */
  publish(template: Template | string, situation: Situation, outcome: Outcome, options?: PublishOptions): Promise<PublishResult>;
  /** Withdraws the node's packet for a template (signed tombstone on its current bucket). */
  withdraw(template: Template | string, options?: { readonly ackTimeoutMs?: number; readonly signal?: AbortSignal }): Promise<PublishResult | undefined>;
  /** Resolves once the outbox is empty. @throws QisError ERR_TIMEOUT | ERR_ABORTED | ERR_CLOSED */
  /** Why the last connection attempt failed (refused port, unknown host, TLS), while not connected. */
  readonly connectionError: QisError | undefined;
  flush(options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<FlushResult>;
  query(template: Template | string, situation: Situation, options?: QueryOptions): Promise<QueryResult>;
  /**
   * A template by id from the registry (`qis/1/t/<tplId>`), verified (curator signature, hash,
   * valid template) and cached in `<dataDir>/templates/`: later calls need no broker.
   * @throws QisError ERR_TEMPLATE_NOT_FOUND | ERR_TEMPLATE_HASH | ERR_BAD_SIGNATURE | ERR_TIMEOUT | ERR_INVALID_ARGUMENT
   */
  template(tplId: string, options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<Template>;
  query(template: Template, situation: Situation, options?: QueryOptions): Promise<QueryResult>;
  /**
   * Several templates answer the same question (same outcome): picks one (NodeOptions.choose) and
   * queries it. @throws QisError ERR_INVALID_ARGUMENT when the outcomes differ, or any query error
   */
  consult(templates: readonly (Template | string)[], situation: Situation, options?: QueryOptions): Promise<ConsultResult>;
  /**
   * Scores the latest prediction this node received for (template, situation) before the
   * observation, adds it to its running totals and publishes its score packet (retained, QoS 1,
   * through the outbox). @throws QisError ERR_NO_PREDICTION | ERR_OUTCOME_INVALID | ERR_FIELD_* | ERR_FILE_IO
   */
  report(template: Template | string, situation: Situation, outcome: Outcome, options?: ReportOptions): Promise<ReportResult>;
  /** Reads the track records of templates (qis/1/s/<tplId>/+) in one round trip. */
  scores(tplIds: readonly string[], options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<ScoresResult>;
  watch(template: Template, situation: Situation, options?: WatchOptions): WatchIterator;
  status(options?: { readonly signal?: AbortSignal }): AsyncIterableIterator<NodeStatus>;
  /** The broker's query ordering, as configured or detected on this connection. */
  brokerKind(options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<BrokerKind>;
  close(): Promise<void>;
}
