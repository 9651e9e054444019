/**
 * Aedes' retained persistence, with qis packets served from the stores: outcome packets from the
 * outcome store, score packets from the score store, everything else from the base persistence
 * (memory, or Redis in a cluster). Admission already stored qis packets durably, so
 * `storeRetained` skips them. The end of each SUBSCRIBE's retained stream releases its sync hold.
 */
import { Readable, type Writable } from 'node:stream';
import type { Client } from 'aedes';
import { topicMatches } from '../../src/index.js';
import { filtersOverlap, scoreStoreFilter, scoreTopicOfStored } from '../admission.js';
import { LINK_CLIENT_PREFIX } from '../federation.js';
import type { StoredPacket } from '../store.js';
import type { AedesPublishPacket, BrokerContext } from './context.js';
import { markRedeliveries } from './redelivery.js';
import type { SyncHold } from './subscribe.js';

/** The parts of aedes-persistence this module replaces. */
export interface AedesPersistence {
  storeRetained(packet: AedesPublishPacket): Promise<void>;
  createRetainedStreamCombi(patterns: string[]): Readable;
  createRetainedStream(pattern: string): Readable;
  outgoingStream(client: unknown): Readable;
}

/** `base` (a cluster's Redis persistence), or Aedes' memory persistence, with the qis parts replaced. */
export async function qisPersistence(ctx: BrokerContext, hold: SyncHold, base?: unknown): Promise<AedesPersistence> {
  const { default: memory } = (await import('aedes-persistence')) as unknown as { default: () => AedesPersistence };
  const persistence = (base as AedesPersistence | undefined) ?? memory();
  const baseStore = persistence.storeRetained.bind(persistence);
  const baseStream = persistence.createRetainedStreamCombi.bind(persistence);
  persistence.storeRetained = (packet: AedesPublishPacket) => {
    // qis outcome packets were stored durably by admission before the PUBACK; nothing else may write there.
    if (packet.topic.startsWith('qis/1/o/') || packet.topic.startsWith('qis/1/s/')) return Promise.resolve();
    // Ordinary retained messages are bounded (limits.maxRetained, maxRetainedBytes): one over is
    // delivered live but not kept, and the topic's older message goes too (never a stale one).
    if (!packet.topic.startsWith('qis/1/') && !packet.topic.startsWith('$') && !ctx.limits.keepRetained(packet)) {
      return baseStore({ ...packet, payload: Buffer.alloc(0) });
    }
    return baseStore(packet);
  };
  persistence.createRetainedStreamCombi = (patterns: string[]) => {
    const sub = hold.takeSubscribe();
    // A federation link gets no stored packets at SUBSCRIBE: its catch-up exchanges only what differs.
    const link = sub !== undefined && sub.client.id.startsWith(LINK_CLIENT_PREFIX);
    const gone = sub ? (): boolean => (sub.client as Client & { closed?: boolean }).closed === true : undefined;
    const from = Readable.from(retainedFor(ctx, patterns, baseStream(patterns), sub?.qos, link, gone), { objectMode: true });
    if (!sub) return from;
    // Aedes pipes this stream into the writer that delivers each message to the client; when
    // that writer finishes, every retained message of this SUBSCRIBE has been written.
    const pipe = from.pipe.bind(from);
    from.pipe = <T extends NodeJS.WritableStream>(dest: T, opts?: { end?: boolean }): T => {
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        hold.release(sub.client, sub.n);
      };
      (dest as unknown as Writable).once('finish', release);
      (dest as unknown as Writable).once('close', release);
      from.once('error', release);
      // Aedes' writer never ends on its own when the client goes: without this the stream would
      // read every stored packet for a client that left (issue 13: 20 clients that subscribe
      // qis/1/o/# and hang up grew the heap without bound). Stopping it ends the generator.
      const stop = (): void => {
        release();
        from.unpipe(dest as unknown as Writable);
        from.destroy();
      };
      const conn = (sub.client as Client & { conn?: NodeJS.EventEmitter }).conn;
      conn?.once('close', stop);
      from.once('close', () => conn?.off('close', stop));
      return pipe(dest, opts);
    };
    return from;
  };
  persistence.createRetainedStream = (pattern: string) => persistence.createRetainedStreamCombi([pattern]);
  markRedeliveries(persistence);
  return persistence;
}

/** The retained messages of `patterns`: live outcome packets, score packets, then the base persistence's. */
export async function* retainedFor(
  ctx: BrokerContext,
  patterns: string[],
  base: Readable,
  granted: Map<string, number> | undefined,
  link = false,
  /** True once the subscriber has gone: the stream stops (checked per message, cheap). */
  gone: () => boolean = () => false,
): AsyncGenerator<unknown> {
  const t = ctx.now() / 1000;
  for (const p of patterns) {
    if (link || !filtersOverlap(p, 'qis/1/o/#')) continue;
    // MQTT-3.8.4-6: delivered at min(the packet's QoS 1, the QoS granted to this filter).
    const qos = Math.min(1, granted?.get(p) ?? 1);
    for (const sp of ctx.store.match(p)) {
      if (gone()) {
        base.destroy();
        return;
      }
      if (sp.exp !== undefined && t > sp.exp) continue;
      yield retainedPacket(sp, qos);
    }
  }
  for (const p of patterns) {
    const sf = scoreStoreFilter(p);
    if (sf === undefined) continue;
    const qos = Math.min(1, granted?.get(p) ?? 1);
    let matches: Iterable<StoredPacket>;
    try {
      matches = ctx.scoreStore.match(sf);
    } catch {
      continue; // a filter level the store cannot hold matches no score
    }
    for (const sp of matches) {
      if (gone()) {
        base.destroy();
        return;
      }
      const topic = scoreTopicOfStored(sp.topic);
      if (topicMatches(p, topic)) yield retainedPacket({ ...sp, topic }, qos);
    }
  }
  for await (const p of base) {
    if (gone()) {
      base.destroy();
      return;
    }
    yield p;
  }
}

/** What Aedes' retained stream yields for a stored packet. */
function retainedPacket(sp: StoredPacket, qos: number): Record<string, unknown> {
  const payload = Buffer.isBuffer(sp.packet) ? sp.packet : Buffer.from(sp.packet.buffer, sp.packet.byteOffset, sp.packet.byteLength);
  return { cmd: 'publish', topic: sp.topic, payload, qos, retain: true, dup: false };
}
