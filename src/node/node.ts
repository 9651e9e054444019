/**
 * The edge node runtime (PROTOCOL §5–§7): publish a situation's outcome as a signed, retained
 * packet through a durable outbox, and read a cohort in one round trip.
 *
 * One MQTT connection (connection.ts); the outbox, not the broker's session, is what makes
 * delivery survive power cuts (publisher.ts). `Node` is the facade that opens the data
 * directory and hands each call to the part that owns it: query.ts, watch.ts, templates.ts,
 * scoring.ts.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { equalBytes } from '../protocol/bytes.js';
import { QisError } from '../protocol/errors.js';
import type { Situation } from '../protocol/fingerprint.js';
import { loadOrCreateKeyFile, type NodeKey } from '../protocol/identity.js';
import { createLogin } from '../protocol/login.js';
import type { Outcome } from '../protocol/packet.js';
import type { Template } from '../protocol/template.js';
import type { BrokerKind } from './broker-kind.js';
import { Connection } from './connection.js';
import { ensureDir, lockDir } from './durable.js';
import { loadEnrolment } from './enrolment-file.js';
import { mergeOptions, throwIfAborted, type Merged } from './options.js';
import { Outbox } from './outbox.js';
import { Enrolled } from './enrolled.js';
import { Publisher } from './publisher.js';
import { Query } from './query.js';
import { Scoring } from './scoring.js';
import { Templates } from './templates.js';
import type {
  ConsultResult,
  EnrolmentState,
  FlushResult,
  NodeOptions,
  NodeStatus,
  PublishOptions,
  PublishResult,
  QisNode,
  QueryOptions,
  QueryResult,
  ReportOptions,
  ReportResult,
  ScoresResult,
  WatchIterator,
  WatchOptions,
} from './types.js';
import { Watches } from './watch.js';

/**
 * Opens a node: takes the data directory's lock, loads or creates its key, reads the outbox and
 * starts connecting (it does not wait for the broker: publishing works offline).
 *
 * @throws QisError ERR_URL_INVALID | ERR_DATA_DIR_LOCKED | ERR_FILE_IO | ERR_KEY_* | ERR_INVALID_ARGUMENT
 * @example
 * await using node = await createNode({ url: 'mqtt://localhost', dataDir: '/var/lib/qis' })
 * await node.publish(template, { machine_model: 'X1', … }, 'failure', { ctx: { rpm: 1500 } })
 * const r = await node.query(template, situation)
 * console.log(r.synthesis)
 */
export async function createNode(options: NodeOptions): Promise<QisNode> {
  const { o, backoff } = mergeOptions(options);
  await ensureDir(o.dataDir);
  const unlock = await lockDir(o.dataDir);
  try {
    const key = o.key ?? (await loadOrCreateKeyFile(join(o.dataDir, 'key.json')));
    throwIfAborted(o.signal);
    const enrolled = await Enrolled.open(o, key);
    const { outbox, bad } = await Outbox.open(o.dataDir, key.nodeId);
    if (o.choose !== undefined && o.choose !== 'thompson' && o.choose !== 'first') {
      throw new QisError('ERR_INVALID_ARGUMENT', `choose must be thompson or first, got ${String(o.choose)}`);
    }
    const conn = new Connection(o, backoff, o.clientId ?? `qis-${key.nodeId}-${randomBytes(4).toString('hex')}`);
    if (o.login === true) await useNodeLogin(conn, key, o);
    const node = new Node(conn, key, outbox, unlock, enrolled);
    for (const b of bad) conn.openRefusal({ type: 'refused', code: b.error.code, message: b.error.message });
    const warning = enrolled?.warning(conn.now());
    if (warning) conn.openRefusal(warning);
    conn.start();
    return node;
  } catch (e) {
    await unlock();
    throw e;
  }
}

/**
 * Node login (PROTOCOL §11) at every connect: a fresh ts each time, so a reconnect hours later is
 * not refused as stale. The installed enrolment goes with it when it is this key's.
 * @throws QisError ERR_INVALID_ARGUMENT (with username/password) | ERR_FILE_IO | ERR_ENROLMENT_INVALID
 */
async function useNodeLogin(conn: Connection, key: NodeKey, o: Merged): Promise<void> {
  if (o.username !== undefined || o.password !== undefined) throw new QisError('ERR_INVALID_ARGUMENT', 'login: true sends the node login as username and password; give one or the other');
  const enrolment = await loadEnrolment(o.dataDir);
  const bytes = enrolment !== undefined && equalBytes(enrolment.nodePublicKey, key.publicKey) ? enrolment.bytes : undefined;
  conn.useCredentials(() => createLogin(key, { clientId: conn.clientId, ts: conn.now(), ...(bytes ? { enrolment: bytes } : {}), ...(o.backend ? { backend: o.backend } : {}) }));
}

class Node implements QisNode {
  readonly key: NodeKey;
  readonly nodeId: string;
  readonly clientId: string;
  readonly #conn: Connection;
  readonly #unlock: () => Promise<void>;
  readonly #publisher: Publisher;
  readonly #templates: Templates;
  readonly #query: Query;
  readonly #watches: Watches;
  readonly #scoring: Scoring;
  #closing: Promise<void> | undefined;

  readonly #enrolled: Enrolled | undefined;

  constructor(conn: Connection, key: NodeKey, outbox: Outbox, unlock: () => Promise<void>, enrolled: Enrolled | undefined) {
    this.#enrolled = enrolled;
    this.key = key;
    this.nodeId = key.nodeId;
    this.clientId = conn.clientId;
    this.#conn = conn;
    this.#unlock = unlock;
    this.#templates = new Templates(conn);
    this.#publisher = new Publisher(conn, key, outbox, (t, signal, timeoutMs) => this.#templates.resolve(t, signal, timeoutMs), enrolled);
    this.#scoring = new Scoring(conn, this.#publisher, this.#templates, (t, situation, options) => this.query(t, situation, options));
    this.#query = new Query(conn, this.#templates, (t, fp, synthesis) => this.#scoring.remember(t, fp, synthesis));
    this.#watches = new Watches(conn);
  }

  get connected(): boolean {
    return this.#conn.state === 'connected';
  }

  get connectionError(): QisError | undefined {
    return this.#conn.netError;
  }

  get pending(): number {
    return this.#publisher.outbox.size;
  }

  enrolment(): EnrolmentState | undefined {
    return this.#enrolled?.state(this.#conn.now());
  }

  publish(t: Template | string, situation: Situation, outcome: Outcome, options?: PublishOptions): Promise<PublishResult> {
    return this.#publisher.publish(t, situation, outcome, options);
  }

  withdraw(t: Template | string, options?: { ackTimeoutMs?: number; signal?: AbortSignal }): Promise<PublishResult | undefined> {
    return this.#publisher.withdraw(t, options);
  }

  flush(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<FlushResult> {
    return this.#publisher.flush(options);
  }

  query(t: Template | string, situation: Situation, options?: QueryOptions): Promise<QueryResult> {
    return this.#query.query(t, situation, options);
  }

  template(tplId: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<Template> {
    return this.#templates.template(tplId, options);
  }

  consult(templates: readonly (Template | string)[], situation: Situation, options?: QueryOptions): Promise<ConsultResult> {
    return this.#scoring.consult(templates, situation, options);
  }

  report(t: Template | string, situation: Situation, outcome: Outcome, options?: ReportOptions): Promise<ReportResult> {
    return this.#scoring.report(t, situation, outcome, options);
  }

  scores(tplIds: readonly string[], options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<ScoresResult> {
    return this.#scoring.scores(tplIds, options);
  }

  watch(template: Template, situation: Situation, options?: WatchOptions): WatchIterator {
    return this.#watches.watch(template, situation, options);
  }

  status(options?: { signal?: AbortSignal }): AsyncIterableIterator<NodeStatus> {
    return this.#conn.status(options);
  }

  brokerKind(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<BrokerKind> {
    return this.#conn.brokerKind(options);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#conn.shutdown();
      this.#watches.endAll();
      this.#conn.endStatus();
      await this.#publisher.settled();
      await this.#scoring.settled();
      await this.#publisher.removalsSettled();
      await this.#conn.endClient();
      await this.#unlock();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
