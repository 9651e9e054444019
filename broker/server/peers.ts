/**
 * This broker and the other regions (PROTOCOL §8): its own links (`startLinks`, broker/federation.ts)
 * with this broker as their host; packets a link received (`admitFromPeer`, the same admission as
 * a client's publish); and a peer link's requests on qis/1/f/req/<its clientId>
 * (`federationRequest`): catch-up digests and packets, or a 'put' batch of forwarded packets.
 * Answers go to qis/1/f/res/<its clientId>, to it alone.
 */
import type { Client } from 'aedes';
import { FED_REQ, FED_RES, LINK_CLIENT_PREFIX, answerPayload, notNewer, parsePut, startFederation, type Federation, type PeerAdmission } from '../federation.js';
import { DROP_TOPIC, type AedesPublishPacket, type BrokerContext, type Done } from './context.js';
import { admitRevocation } from './enrolment.js';
import { admitOutcome } from './outcomes.js';
import { codeOf, refuse } from './respond.js';
import { admitScore } from './scores.js';
import { admitTemplate } from './templates.js';

/** Starts the links of `options.federation` (undefined without peers); what they receive goes through `admitFromPeer`. */
export function startLinks(ctx: BrokerContext): Federation | undefined {
  const f = ctx.options.federation;
  if (f === undefined || f.peers.length === 0) return undefined;
  return startFederation(f, {
    store: ctx.store,
    scoreStore: ctx.scoreStore,
    logger: ctx.logger.child({ region: f.region }),
    registry: ctx.metrics.registry,
    admit: (topic, payload, origin) => admitFromPeer(ctx, topic, payload, origin),
    templates: () => ctx.templates.documents(),
    revocations: () => ctx.revocations.documents(),
    now: ctx.now,
  });
}

/** A packet received over a federation link from `origin`: the same admission as a client's publish, then local delivery. */
export function admitFromPeer(ctx: BrokerContext, topic: string, payload: Buffer, origin: string): Promise<PeerAdmission> {
  return new Promise((resolve) => {
    const packet = { cmd: 'publish', topic, payload, qos: 1, retain: true, dup: false, messageId: 0 } as unknown as AedesPublishPacket;
    const cb = (e?: Error | null): void => {
      if (e) return resolve({ result: 'refused', code: codeOf(e), message: e.message });
      if (packet.topic === DROP_TOPIC) return resolve({ result: 'stale' });
      const stored = (): void => resolve({ result: 'stored' });
      ctx.publish({ topic: packet.topic, payload, qos: 1, retain: packet.retain }).then(stored, stored);
    };
    const failed =
      (what: string) =>
      (e: unknown): void => {
        ctx.logger.error({ err: e, origin }, what);
        cb(e instanceof Error ? e : new Error(String(e)));
      };
    if (topic.startsWith('qis/1/t/')) return admitTemplate(ctx, null, packet, cb, origin);
    if (topic.startsWith('qis/1/r/')) return void admitRevocation(ctx, null, packet, cb, origin).catch(failed('admission of a peer revocation list failed'));
    // A peer's score packet: the same admission as a client's (PROTOCOL §9: §6 applies).
    if (topic.startsWith('qis/1/s/')) return void admitScore(ctx, null, packet, cb, origin).catch(failed('admission of a peer score packet failed'));
    if (!topic.startsWith('qis/1/o/')) return resolve({ result: 'refused', code: 'ERR_TOPIC_INVALID', message: `${topic} is not forwarded between regions` });
    admitOutcome(ctx, null, packet, cb, origin).catch(failed('admission of a peer packet failed'));
  });
}

/** A peer's link asks for digests or packets, or sends a batch: acknowledged at once, answered on qis/1/f/res/<its clientId>. */
export function federationRequest(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done): void {
  const id = client?.id ?? '';
  if (!ctx.auth.isPeer(id, ctx.auth.identity(client)) || packet.topic !== `${FED_REQ}${id}` || packet.retain) {
    return refuse(ctx, client, packet.topic, 'ERR_NOT_AUTHORIZED', `only a federation link (client id ${LINK_CLIENT_PREFIX}…) may publish on ${FED_REQ}<its client id>, not retained`, cb);
  }
  const payload = packet.payload as Buffer;
  packet.topic = DROP_TOPIC; // acknowledged, delivered to nobody
  packet.retain = false;
  const put = parsePut(payload);
  if (put) {
    cb(null);
    void admitBatch(ctx, id, put.items).then((counts) => answer(ctx, id, Buffer.from(JSON.stringify({ id: put.id, ...counts }))));
    return;
  }
  let res: Buffer | undefined;
  try {
    // Without links of its own a broker still answers the peers that link to it.
    res = answerPayload(ctx.store, payload, ctx.scoreStore);
    if (!res) ctx.logger.warn({ clientId: id }, 'malformed federation catch-up request ignored');
  } catch (e) {
    ctx.logger.warn({ clientId: id, err: (e as Error).message }, 'federation catch-up request failed');
  }
  cb(null);
  if (res) answer(ctx, id, res);
}

/**
 * Forwarded packets in a batch: each through admission (concurrently, so they share disk
 * syncs), under the same per-client rate limit as single publishes.
 */
async function admitBatch(ctx: BrokerContext, id: string, items: [string, Buffer][]): Promise<Record<PeerAdmission['result'], number>> {
  const counts = { stored: 0, stale: 0, refused: 0 };
  await Promise.all(
    items.map(async ([topic, payload]) => {
      if (!ctx.rate.take(id, ctx.now())) {
        ctx.metrics.refused.inc({ code: 'ERR_RATE_LIMITED' });
        counts.refused++;
        return;
      }
      // An echo or a loop (not newer than what is held) ends here, before any signature work.
      if (notNewer(ctx.store, ctx.scoreStore, topic, payload)) {
        ctx.metrics.dropped.inc({ code: 'ERR_SEQ_STALE' });
        counts.stale++;
        return;
      }
      const r = await admitFromPeer(ctx, topic, payload, id);
      counts[r.result]++;
    }),
  );
  return counts;
}

function answer(ctx: BrokerContext, clientId: string, payload: Buffer): void {
  ctx.publish({ topic: `${FED_RES}${clientId}`, payload, qos: 1, retain: false }).catch(() => undefined);
}
