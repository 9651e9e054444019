/**
 * The template registry client ("Hiring", PROTOCOL §4) over MQTT: template documents signed by
 * their curator and kept retained on `qis/1/t/<tplId>`. Publish one, list them, fetch one by id,
 * each in one short clean-session connection; every document read back is verified
 * (protocol/template-doc.ts) before it is believed.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { toHex } from '../protocol/bytes.js';
import { topicMatches } from '../protocol/cohort.js';
import { QisError, isQisError, type ErrorCode } from '../protocol/errors.js';
import type { NodeKey } from '../protocol/identity.js';
import { checkPacket } from '../protocol/packet.js';
import { isTplId, type Template, type TplId } from '../protocol/template.js';
import { signTemplate, supersedesOf, templateTopic, verifyTemplateDoc, TEMPLATE_TOPIC_PREFIX, type VerifiedTemplate } from '../protocol/template-doc.js';
import { BROKER_INFO_TOPIC, DETECT_TIMEOUT_MS, MOSQUITTO_VERSION_TOPIC, kindObserver, subscribeChecked, type BrokerKind } from './broker-kind.js';
import { networkError } from './net-errors.js';
import { tlsClientOptions, type TlsOptions } from './tls.js';

/** How to reach the broker that holds the registry. */
export interface RegistryOptions {
  /** `mqtt://host[:1883]`, `mqtts://…`, `ws://…`, `wss://…`. */
  readonly url: string;
  readonly tls?: TlsOptions;
  readonly username?: string;
  readonly password?: string;
  /** Overall time limit, ms (default 10,000). */
  readonly timeoutMs?: number;
  /** The broker's sync ordering (PROTOCOL §7); default 'auto' (asked once). */
  readonly brokerKind?: BrokerKind | 'auto';
  /** Quiet period that ends a read on a broker of unknown ordering, ms (default 500). */
  readonly quietMs?: number;
  readonly signal?: AbortSignal;
}

/** One registry entry as read from the broker. */
export interface RegistryEntry {
  readonly tplId: TplId;
  readonly template: Template;
  readonly curator: string;
  readonly curatorKey: Uint8Array;
  /** Distinct nodes with a verified live packet under the template on this broker. */
  readonly publishers: number;
}

/** What {@link listTemplates} read. */
export interface RegistryList {
  readonly templates: readonly RegistryEntry[];
  /** Documents or packets that failed verification, by code (they are not counted or listed). */
  readonly dropped: Partial<Record<ErrorCode, number>>;
  readonly broker: BrokerKind;
  readonly completeness: 'sync' | 'quiet-period';
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** One short MQTT session with the registry's broker. */
class Session {
  readonly #client: MqttClient;
  readonly #deadline: number;
  readonly #o: RegistryOptions;
  readonly #clientId: string;
  #closed: Error | undefined;
  readonly #wakers = new Set<() => void>();
  readonly #listeners = new Set<(topic: string, payload: Uint8Array) => void>();
  kind: BrokerKind = 'unknown';

  constructor(client: MqttClient, clientId: string, o: RegistryOptions, deadline: number) {
    this.#client = client;
    this.#clientId = clientId;
    this.#o = o;
    this.#deadline = deadline;
    client.on('message', (topic, payload) => {
      for (const l of this.#listeners) l(topic, new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
      this.#wake();
    });
    client.on('close', () => {
      this.#closed ??= new Error('the broker closed the connection');
      this.#wake();
    });
  }

  get client(): MqttClient {
    return this.#client;
  }

  /** Re-checks every pending wait. */
  wake(): void {
    this.#wake();
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w();
  }

  /** Resolves when `cond` returns a value; rejects at the deadline, on abort, or when the connection closes. */
  until<T>(cond: () => T | undefined, what: string, deadline = this.#deadline): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const signal = this.#o.signal;
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        this.#wakers.delete(check);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', check);
      };
      const check = (): void => {
        let v: T | undefined;
        try {
          v = cond();
        } catch (e) {
          done();
          return reject(e);
        }
        if (v !== undefined) {
          done();
          return resolve(v);
        }
        if (signal?.aborted) {
          done();
          return reject(new QisError('ERR_ABORTED', `aborted while waiting for ${what}`));
        }
        if (this.#closed) {
          done();
          return reject(new QisError('ERR_TIMEOUT', `${this.#closed.message} while waiting for ${what}`));
        }
        if (Date.now() >= deadline) {
          done();
          return reject(new QisError('ERR_TIMEOUT', `no ${what} within the time limit`));
        }
      };
      this.#wakers.add(check);
      signal?.addEventListener('abort', check);
      timer = setTimeout(check, Math.max(0, deadline - Date.now()) + 5);
      check();
    });
  }

  get closedError(): Error | undefined {
    return this.#closed;
  }

  async subscribe(filters: readonly string[], mayBeDenied: readonly string[] = []): Promise<void> {
    try {
      await subscribeChecked(this.#client, filters, 0, mayBeDenied);
    } catch (e) {
      if (isQisError(e)) throw e;
      throw new QisError('ERR_TIMEOUT', `subscribe failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /** What kind of broker this is (PROTOCOL §7 note), as the node runtime asks it. */
  async detect(): Promise<void> {
    const asked = this.#o.brokerKind ?? 'auto';
    if (asked !== 'auto') {
      this.kind = asked;
      return;
    }
    const sync = `qis/1/sync/${this.#clientId}/${randomBytes(6).toString('hex')}`;
    const seen = kindObserver(sync);
    const l = (topic: string, payload: Uint8Array): void => seen.observe(topic, payload);
    this.#listeners.add(l);
    try {
      // An ACL may deny $SYS; that only rules out recognising Mosquitto.
      await this.subscribe([sync, BROKER_INFO_TOPIC, MOSQUITTO_VERSION_TOPIC], [MOSQUITTO_VERSION_TOPIC]);
      await this.#client.publishAsync(sync, Buffer.from('?'), { qos: 1 });
      const r = await this.until(() => (seen.synced ? true : undefined), 'the broker-kind sync marker', Math.min(this.#deadline, Date.now() + DETECT_TIMEOUT_MS)).catch((e: unknown) => {
        if (this.#closed || (isQisError(e) && e.code === 'ERR_ABORTED')) throw e;
        return false; // no marker back: a broker of unknown ordering
      });
      this.kind = r ? seen.kind : 'unknown';
    } finally {
      this.#listeners.delete(l);
      this.#client.unsubscribe([sync, BROKER_INFO_TOPIC, MOSQUITTO_VERSION_TOPIC], () => undefined);
    }
  }

  /**
   * One round trip (PROTOCOL §7): subscribe to the sync topic and `filters` in one SUBSCRIBE,
   * publish the marker, keep what arrives before it comes back. On a broker of unknown
   * ordering, a quiet period ends the read instead.
   */
  async collect(filters: readonly string[]): Promise<{ topic: string; payload: Uint8Array }[]> {
    const sync = `qis/1/sync/${this.#clientId}/${randomBytes(6).toString('hex')}`;
    const out: { topic: string; payload: Uint8Array }[] = [];
    let synced = false;
    let lastAt = Date.now();
    const l = (topic: string, payload: Uint8Array): void => {
      if (topic === sync) synced = true;
      else if (!synced && filters.some((f) => topicMatches(f, topic))) {
        out.push({ topic, payload });
        lastAt = Date.now();
      }
    };
    this.#listeners.add(l);
    const all = this.kind === 'unknown' ? [...filters] : [sync, ...filters];
    try {
      await this.subscribe(all);
      lastAt = Date.now();
      if (this.kind !== 'unknown') {
        await this.#client.publishAsync(sync, Buffer.from('sync'), { qos: 1 });
        await this.until(() => (synced ? true : undefined), 'the sync marker');
        return out;
      }
      const quiet = this.#o.quietMs ?? 500;
      for (;;) {
        const wait = lastAt + quiet - Date.now();
        if (wait <= 0) return out;
        if (Date.now() + wait > this.#deadline) throw new QisError('ERR_TIMEOUT', `retained messages kept arriving until the time limit (${out.length} so far)`);
        let slept = false;
        const t = setTimeout(() => {
          slept = true;
          this.#wake();
        }, wait);
        try {
          await this.until(() => (slept ? true : undefined), 'the quiet period');
        } finally {
          clearTimeout(t);
        }
      }
    } finally {
      this.#listeners.delete(l);
      if (!this.#closed) this.#client.unsubscribe(all, () => undefined);
    }
  }
}

function checkUrl(url: unknown): string {
  let u: URL | undefined;
  try {
    u = typeof url === 'string' ? new URL(url) : undefined;
  } catch {
    u = undefined;
  }
  if (!u || !['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol) || u.hostname === '') {
    throw new QisError('ERR_URL_INVALID', `broker URL must be mqtt://, mqtts://, ws:// or wss:// with a host, got ${JSON.stringify(url)}`);
  }
  return url as string;
}

/** Runs `fn` on a fresh clean-session connection, closed afterwards. */
async function withSession<T>(o: RegistryOptions, fn: (s: Session) => Promise<T>): Promise<T> {
  const url = checkUrl(o.url);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new QisError('ERR_INVALID_ARGUMENT', `timeoutMs must be a positive number, got ${String(o.timeoutMs)}`);
  if (o.signal?.aborted) throw new QisError('ERR_ABORTED', 'aborted before connecting');
  const deadline = Date.now() + timeoutMs;
  const clientId = `qis-reg-${randomBytes(6).toString('hex')}`;
  const tls = o.tls;
  const opts: IClientOptions = {
    protocolVersion: 4,
    clientId,
    clean: true,
    connectTimeout: Math.max(1, Math.min(timeoutMs, 10_000)),
    reconnectPeriod: 0,
    ...(o.username !== undefined ? { username: o.username } : {}),
    ...(o.password !== undefined ? { password: o.password } : {}),
    ...tlsClientOptions(tls),
  };
  let client: MqttClient;
  try {
    client = await mqtt.connectAsync(url, opts, false);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'number') throw new QisError('ERR_CONNECT_REFUSED', `${url}: broker refused the connection (CONNACK return code ${code})`, { cause: e });
    const net = networkError(e as Error, url);
    if (net) throw net;
    throw new QisError('ERR_TIMEOUT', `${url}: cannot connect: ${(e as Error).message}`, { cause: e });
  }
  try {
    return await fn(new Session(client, clientId, o, deadline));
  } finally {
    await client.endAsync(true).catch(() => undefined);
  }
}

/**
 * Publishes a template document signed by `key` (the curator), retained, QoS 1, and waits for
 * the broker's PUBACK. A qis broker refuses a document by closing the connection (its log and
 * metrics name the reason: a closed registry, a bad signature…).
 * @throws QisError ERR_TEMPLATE_REFUSED | ERR_TIMEOUT | ERR_CONNECT_REFUSED | ERR_URL_INVALID
 * @example await publishTemplate(curatorKey, await loadTemplate('pump.yaml'), { url: 'mqtt://broker' })
 */
export async function publishTemplate(key: NodeKey, template: Template, options: RegistryOptions): Promise<{ tplId: TplId; topic: string; curator: string; bytes: Uint8Array }> {
  const bytes = signTemplate(key, template);
  const topic = templateTopic(template.tplId);
  await publishRetained(topic, bytes, options, () =>
    new QisError('ERR_TEMPLATE_REFUSED', `the broker closed the connection instead of acknowledging template ${template.tplId} signed by ${key.nodeId} (a closed registry that does not list the id or the curator, or a failed check: the broker log names the code)`),
  );
  return { tplId: template.tplId, topic, curator: key.nodeId, bytes };
}

/**
 * Publishes an operator's signed revocation list (PROTOCOL §10, `signRevocation`) retained at
 * QoS 1 on its `qis/1/r/<operatorId>` and waits for the PUBACK.
 * @throws QisError ERR_REVOCATION_REFUSED (the broker closed the connection: its log names the code) | ERR_TIMEOUT | ERR_CONNECT_REFUSED | ERR_URL_INVALID
 * @example await publishRevocation(signRevocation(operatorKey, { seq, ts, revoked }), { url: 'mqtt://broker' })
 */
export async function publishRevocation(list: { readonly topic: string; readonly packet: Uint8Array }, options: RegistryOptions): Promise<void> {
  await publishRetained(list.topic, list.packet, options, () =>
    new QisError('ERR_REVOCATION_REFUSED', `${options.url} closed the connection instead of acknowledging the revocation list on ${list.topic} (not a trusted operator there, a seq not above its held list's, or a failed check: the broker log names the code)`),
  );
}

/**
 * Publishes signed bytes retained at QoS 1 on a fresh connection and waits for the PUBACK; a
 * broker that closes the connection instead refused it: `refused()` is thrown.
 * @throws QisError (refused()) | ERR_TIMEOUT | ERR_CONNECT_REFUSED | ERR_URL_INVALID
 */
export async function publishRetained(topic: string, bytes: Uint8Array, options: RegistryOptions, refused: () => QisError): Promise<void> {
  await withSession(options, async (s) => {
    let acked = false;
    s.client.publishAsync(topic, Buffer.from(bytes), { qos: 1, retain: true }).then(
      () => {
        acked = true;
        s.wake();
      },
      () => undefined, // a refusal shows as the connection closing
    );
    await s.until(() => {
      if (acked) return true;
      if (s.closedError) throw refused();
      return undefined;
    }, 'the PUBACK');
  });
}

/** Verified documents by id (the last valid one per topic), counting failures in `dropped`. */
function verifiedDocs(messages: readonly { topic: string; payload: Uint8Array }[], dropped: Partial<Record<ErrorCode, number>>): Map<TplId, VerifiedTemplate> {
  const out = new Map<TplId, VerifiedTemplate>();
  for (const m of messages) {
    const id = m.topic.slice(TEMPLATE_TOPIC_PREFIX.length);
    if (!isTplId(id)) {
      dropped.ERR_TOPIC_INVALID = (dropped.ERR_TOPIC_INVALID ?? 0) + 1;
      continue;
    }
    try {
      out.set(id, verifyTemplateDoc(id, m.payload));
    } catch (e) {
      if (!isQisError(e)) throw e;
      dropped[e.code] = (dropped[e.code] ?? 0) + 1;
    }
  }
  return out;
}

/**
 * Distinct nodes with a verified, live (not withdrawn, not expired) packet under each template,
 * read in one round trip over `qis/1/o/<tplId>/#` of every template given.
 */
async function countPublishers(s: Session, docs: ReadonlyMap<TplId, VerifiedTemplate>, dropped: Partial<Record<ErrorCode, number>>): Promise<Map<TplId, number>> {
  const counts = new Map<TplId, number>();
  if (docs.size === 0) return counts;
  const messages = await s.collect([...docs.keys()].map((id) => `qis/1/o/${id}/#`));
  const latest = new Map<string, { seq: number; del: boolean }>();
  const now = Date.now();
  for (const m of messages) {
    const id = m.topic.split('/')[3] as TplId;
    const doc = docs.get(id);
    if (!doc) continue;
    const r = checkPacket(m.topic, m.payload, { depth: doc.template.fields.length, now });
    if (!r.ok) {
      dropped[r.code] = (dropped[r.code] ?? 0) + 1;
      continue;
    }
    const k = `${id}/${r.packet.nodeId}`;
    const prev = latest.get(k);
    if (!prev || r.packet.seq > prev.seq) latest.set(k, { seq: r.packet.seq, del: r.packet.del });
  }
  for (const id of docs.keys()) counts.set(id, 0);
  for (const [k, v] of latest) {
    if (v.del) continue;
    const id = k.slice(0, 26) as TplId;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

function entry(d: VerifiedTemplate, publishers: number): RegistryEntry {
  return { tplId: d.template.tplId, template: d.template, curator: d.curator, curatorKey: d.curatorKey, publishers };
}

/**
 * Every verified template document the broker holds, with how many nodes publish under each
 * (two round trips: the documents, then the retained packets of those templates).
 * @throws QisError ERR_TIMEOUT | ERR_CONNECT_REFUSED | ERR_CONNECTION_REFUSED | ERR_HOST_NOT_FOUND | ERR_TLS | ERR_SUBSCRIBE_DENIED | ERR_URL_INVALID
 */
export async function listTemplates(options: RegistryOptions): Promise<RegistryList> {
  return withSession(options, async (s) => {
    await s.detect();
    const dropped: Partial<Record<ErrorCode, number>> = {};
    const docs = verifiedDocs(await s.collect([`${TEMPLATE_TOPIC_PREFIX}+`]), dropped);
    const counts = await countPublishers(s, docs, dropped);
    const templates = [...docs.values()]
      .map((d) => entry(d, counts.get(d.template.tplId) ?? 0))
      .sort((a, b) => a.template.doc.name.localeCompare(b.template.doc.name) || a.template.doc.version - b.template.doc.version || a.tplId.localeCompare(b.tplId));
    return { templates, dropped, broker: s.kind, completeness: s.kind === 'unknown' ? 'quiet-period' : 'sync' };
  });
}

/**
 * One template from the registry by id, verified (signature, hash), with its publisher count.
 * @throws QisError ERR_TEMPLATE_NOT_FOUND | ERR_TEMPLATE_HASH | ERR_BAD_SIGNATURE | ERR_INVALID_ARGUMENT | ERR_TIMEOUT | …
 * @example const { template, curator, publishers } = await fetchTemplate('3zq…', { url: 'mqtt://broker' })
 */
export async function fetchTemplate(tplId: string, options: RegistryOptions & { readonly countPublishers?: boolean }): Promise<RegistryEntry> {
  if (typeof tplId !== 'string' || !isTplId(tplId)) throw new QisError('ERR_INVALID_ARGUMENT', `a template id is 26 lowercase base32 characters, got ${JSON.stringify(tplId)}`);
  return withSession(options, async (s) => {
    await s.detect();
    const got = await s.collect([templateTopic(tplId)]);
    const last = got[got.length - 1];
    if (!last) throw new QisError('ERR_TEMPLATE_NOT_FOUND', `the broker at ${options.url} holds no template document ${tplId}`);
    const d = verifyTemplateDoc(tplId, last.payload);
    if (options.countPublishers === false) return entry(d, 0);
    const counts = await countPublishers(s, new Map([[d.template.tplId, d]]), {});
    return entry(d, counts.get(d.template.tplId) ?? 0);
  });
}

/** A registry entry as plain JSON (what `qis template show --json` prints). */
export function describeEntry(e: RegistryEntry): Record<string, unknown> {
  const doc = e.template.doc;
  const sup = supersedesOf(e.template);
  return {
    tplId: e.tplId,
    name: doc.name,
    version: doc.version,
    curator: e.curator,
    curatorKey: toHex(e.curatorKey),
    fields: doc.fields,
    ...(doc.context !== undefined ? { context: doc.context } : {}),
    outcome: doc.outcome,
    ...(sup !== undefined ? { supersedes: sup } : {}),
    publishers: e.publishers,
  };
}
