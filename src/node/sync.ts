/**
 * One read of retained messages (PROTOCOL §7): subscribe to a sync topic and the filters, publish
 * the marker, keep what arrives before it comes back; on a broker of unknown ordering a quiet
 * period ends the read instead. Queries, score reads and template fetches all read this way.
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { topicMatcher, type CohortMessage } from '../protocol/cohort.js';
import { QisError, isQisError } from '../protocol/errors.js';
import type { BrokerKind } from './broker-kind.js';
import type { Connection, Listener } from './connection.js';

/**
 * The retained messages on `filter`, read on whichever connection is up before `deadline`; a
 * connection lost mid-read only means reading again on the next one.
 */
export async function readRetained(
  conn: Connection,
  filter: string | readonly string[],
  deadline: number,
  signal: AbortSignal | undefined,
  sink?: Sink,
): Promise<{ messages: CohortMessage[]; kind: BrokerKind }> {
  const start = conn.gen;
  for (;;) {
    let got: CohortMessage[] | 'lost';
    let kind: BrokerKind;
    try {
      kind = await conn.brokerKind({ timeoutMs: Math.max(1, deadline - conn.now()), ...(signal ? { signal } : {}) });
      const client = await conn.waitConnected(deadline, signal);
      sink?.reset();
      got = await collect(conn, client, filter, kind, deadline, signal, sink);
    } catch (e) {
      // Cut off for an oversized packet, the reconnects then ran out of time: say why.
      if (isQisError(e) && e.code === 'ERR_TIMEOUT') throw conn.faultSince(start) ?? e;
      throw e;
    }
    // A broker the node cut off for misbehaving (an oversized packet) would only do it again.
    const fault = conn.faultSince(start);
    if (fault) throw fault;
    if (got === 'lost') continue; // the connection dropped mid-read: ask again on the next one
    return { messages: got, kind };
  }
}

/** Takes each kept message as it arrives (a query verifies while the read goes on); reset() when the read starts again. */
export interface Sink {
  add(topic: string, payload: Uint8Array): void;
  reset(): void;
}

/** One round trip: subscribe to the sync topic and the cohort, publish the marker, collect until it returns. */
async function collect(
  conn: Connection,
  client: MqttClient,
  filter: string | readonly string[],
  kind: BrokerKind,
  deadline: number,
  signal: AbortSignal | undefined,
  sink: Sink | undefined,
): Promise<CohortMessage[] | 'lost'> {
  const wanted = typeof filter === 'string' ? [filter] : filter;
  const matchers = wanted.map(topicMatcher);
  const gen = conn.gen;
  const sync = `qis/1/sync/${conn.clientId}/${randomBytes(6).toString('hex')}`;
  const messages: CohortMessage[] = [];
  let synced = false;
  let lastAt = conn.now();
  // Every message that arrives during the read counts towards the cap, kept or not: a broker
  // flooding other topics must not keep the read going any more than one flooding the cohort.
  let arrived = 0;
  let tooMany = false;
  const listener: Listener = (topic, payload) => {
    if (topic === sync) {
      synced = true;
      conn.wake();
    } else if (!synced && !tooMany) {
      if (++arrived > conn.o.maxQueryMessages) {
        tooMany = true;
        messages.length = 0; // nothing of this read is used: let it go now
        conn.wake();
      } else if (matchers.some((m) => m(topic))) {
        messages.push({ topic, payload });
        sink?.add(topic, payload);
        lastAt = conn.now();
      }
    }
  };
  const overCap = (): void => {
    if (tooMany) throw new QisError('ERR_QUERY_TOO_LARGE', `more than ${conn.o.maxQueryMessages} messages arrived during one read of ${wanted.join(', ')} (maxQueryMessages): abandoned`);
  };
  conn.listeners.add(listener);
  const filters = kind === 'unknown' ? [...wanted] : [sync, ...wanted];
  const lost = (): 'lost' | undefined => (gen !== conn.gen ? 'lost' : undefined);
  try {
    try {
      // QoS 0, unless a watch holds the same filter at QoS 1 (a SUBSCRIBE replaces its QoS).
      await conn.within(conn.subscribe(client, filters, wanted.some((f) => conn.subs.has(f)) ? 1 : 0), { deadline, signal, what: `the SUBACK for ${filters.join(', ')}` });
      lastAt = conn.now();
      if (kind !== 'unknown') await conn.within(client.publishAsync(sync, Buffer.from('sync'), { qos: 1 }), { deadline, signal, what: 'the PUBACK of the sync marker' });
    } catch (e) {
      if (isQisError(e)) throw e;
      if (lost()) return 'lost';
      throw new QisError('ERR_TIMEOUT', `query failed: ${(e as Error).message}`, { cause: e });
    }
    if (kind !== 'unknown') {
      const r = await conn.until<true | 'lost'>(() => (overCap(), lost() ?? (synced ? true : undefined)), { deadline, signal, what: 'the sync marker' });
      return r === 'lost' ? 'lost' : messages;
    }
    // Unknown ordering: the query ends after quietMs without a new cohort message (PROTOCOL §7).
    for (;;) {
      overCap();
      const wait = lastAt + conn.o.quietMs - conn.now();
      if (wait <= 0) return messages;
      if (conn.now() + wait > deadline) {
        throw new QisError('ERR_TIMEOUT', `retained messages kept arriving until the query's time limit (${messages.length} so far)`);
      }
      const r = await conn.sleep(wait, signal, () => (overCap(), lost()));
      if (r === 'lost') return 'lost';
    }
  } finally {
    conn.listeners.delete(listener);
    conn.unsubscribe(client, filters);
  }
}
