/**
 * This broker and the other regions (PROTOCOL §8): its own links (`startLinks`, broker/federation.ts)
 * with this broker as their host; packets a link received (`admitFromPeer`, the same admission as
 * a client's publish); and a peer link's requests on qis/1/f/req/<its clientId>
 * (`federationRequest`): catch-up digests and packets, or a 'put' batch of forwarded packets.
 * Answers go to qis/1/f/res/<its clientId>, to it alone.
 */
import type { Client } from 'aedes';
import { RateLimiter } from '../admission.js';
import { noop } from '../store.js';
import { FED_REQ, FED_RES, LINK_CLIENT_PREFIX, TRANSIENT_CODES, answerPayload, digestReady, kindOf, notNewer, parsePut, passes, receivedCounter, startFederation, type Federation, type PeerAdmission } from '../federation.js';
import { DROP_TOPIC, type AedesPublishPacket, type BrokerContext, type Done } from './context.js';
import { admitRevocation } from './enrolment.js';
import { admitOutcome } from './outcomes.js';
import { linkPeers, tagOrigin } from './link-peers.js';
import { peerGate } from './peer-gate.js';
import { checkPublishRate } from './publish-rate.js';
import { codeOf, refuse } from './respond.js';
import { admitScore } from './scores.js';
import { admitTemplate } from './templates.js';

/** Starts the links of `options.federation` (undefined without peers); what they receive goes through `admitFromPeer`. */
export function startLinks(ctx: BrokerContext): Federation | undefined {
  const f = ctx.options.federation;
  if (f === undefined || f.peers.length === 0) return undefined;
  if (ctx.brokerKey) ctx.logger.info({ region: f.region, key: ctx.brokerKey.nodeId }, 'federation links log in with this broker key (name it in a peer\'s auth.peers or federation.peers[].identity)');
  return startFederation(f, {
    ...(ctx.brokerKey ? { key: ctx.brokerKey } : {}),
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

/**
 * A packet received over a federation link from region `origin`: the same admission as a client's
 * publish, then local delivery (to every link but those of `origin`). An outcome packet is
 * delivered and forwarded on once it is in the store's index (admitOutcome's `relay`); the
 * result, the peer's answer, waits for the durable write all the same.
 */
export function admitFromPeer(ctx: BrokerContext, topic: string, payload: Buffer, origin: string, relayed?: () => void): Promise<PeerAdmission> {
  tagOrigin(payload, origin);
  return new Promise((resolve) => {
    const packet = { cmd: 'publish', topic, payload, qos: 1, retain: true, dup: false, messageId: 0 } as unknown as AedesPublishPacket;
    let delivered: Promise<void> | undefined;
    const relay = (): void => {
      // Never rejects: the durable write may still fail, and then nothing waits for this.
      delivered = ctx.publish({ topic, payload, qos: 1, retain: true }).catch(() => undefined);
      relayed?.();
    };
    const cb = (e?: Error | null): void => {
      if (e) return resolve({ result: 'refused', code: codeOf(e), message: e.message });
      if (packet.topic === DROP_TOPIC) return resolve({ result: 'stale' });
      const stored = (): void => resolve({ result: 'stored' });
      (delivered ?? ctx.publish({ topic: packet.topic, payload, qos: 1, retain: packet.retain })).then(stored, stored);
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
    admitOutcome(ctx, null, packet, cb, origin, relay).catch(failed('admission of a peer packet failed'));
  });
}

/** A peer's link asks for digests or packets, or sends a batch: acknowledged at once, answered on qis/1/f/res/<its clientId>. */
export function federationRequest(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done): void {
  const id = client?.id ?? '';
  if (!ctx.auth.isPeer(id, ctx.auth.identity(client)) || packet.topic !== `${FED_REQ}${id}` || packet.retain) {
    return refuse(ctx, client, packet.topic, 'ERR_NOT_AUTHORIZED', `only a federation link (client id ${LINK_CLIENT_PREFIX}…) may publish on ${FED_REQ}<its client id>, not retained`, cb);
  }
  if (!peerGate(ctx).allows(client)) {
    return refuse(ctx, client, packet.topic, 'ERR_NOT_AUTHORIZED', 'federation is for configured peers: this connection comes from no address of federation.peers or federation.linksFrom', cb);
  }
  const links = linkLimits(ctx);
  const payload = packet.payload as Buffer;
  const put = parsePut(payload);
  // Batches have their own bound (the queue below); digests, lists and gets this rate.
  if (!put && !links.requests.take(id, ctx.now())) {
    // The link's request times out and its catch-up runs again later: nothing is lost.
    return refuse(ctx, client, packet.topic, 'ERR_RATE_LIMITED', `more than ${LINK_REQUESTS_PER_S} federation requests per second (burst ${LINK_REQUEST_BURST}) on one link`, cb);
  }
  packet.topic = DROP_TOPIC; // acknowledged, delivered to nobody
  packet.retain = false;
  if (put) {
    cb(null);
    // The link's next batch is admitted once this one is relayed (every item in the index or
    // settled); the answer waits for the durable write.
    const counts = links.queue(id, () => admitBatch(ctx, client, id, put.items));
    void (counts ?? Promise.resolve(overflow(ctx, put.items.length))).then((c) => answer(ctx, id, Buffer.from(JSON.stringify({ id: put.id, ...c }))));
    return;
  }
  const serve = (): void => {
    let res: Buffer | undefined;
    try {
      // Without links of its own a broker still answers the peers that link to it.
      // Packets go only where this side shares them (its share for the link's region).
      const share = linkPeers(ctx).of(client).peer?.share ?? ['*'];
      res = answerPayload(ctx.store, payload, ctx.scoreStore, (tplId) => passes(share, tplId));
      if (!res) ctx.logger.warn({ clientId: id }, 'malformed federation catch-up request ignored');
    } catch (e) {
      ctx.logger.warn({ clientId: id, err: (e as Error).message }, 'federation catch-up request failed');
    }
    cb(null);
    if (res) answer(ctx, id, res);
  };
  // The stores' digest indexes brought up to date in slices first (digest.ts), not inside the
  // answer: the first request after a restart hashes every key (8 s of a held loop at 1M keys).
  const ready = [digestReady(ctx.store), ctx.scoreStore && digestReady(ctx.scoreStore)].filter((p) => p !== undefined);
  if (ready.length === 0) serve();
  else void Promise.all(ready).then(serve, serve);
}

/** What a 'put' batch came to; `retry`: indexes of items refused for a transient reason, which the sender queues again (PROTOCOL §8). */
type BatchCounts = Record<PeerAdmission['result'], number> & { retry: number[] };

/**
 * Forwarded packets in a batch from `client`'s link: those this side accepts from its region,
 * each through admission (concurrently, so they share disk syncs), under the same per-client
 * rate limit as single publishes. `relayed` resolves once every item is in the store's index
 * (delivered here and forwarded on) or settled otherwise; `counts` once every item is durable.
 * Neither rejects.
 */
function admitBatch(ctx: BrokerContext, client: Client | null, id: string, items: [string, Buffer][]): { relayed: Promise<unknown>; counts: Promise<BatchCounts> } {
  const counts: BatchCounts = { stored: 0, stale: 0, refused: 0, retry: [] };
  const peers = linkPeers(ctx);
  const link = peers.of(client);
  const accept = link.peer?.accept ?? ['*'];
  const received = receivedCounter(ctx.metrics.registry);
  const relayed: Promise<void>[] = [];
  const all = Promise.all(
    items.map(async ([topic, payload], i) => {
      received.inc({ kind: kindOf(topic) });
      if (!peers.passes(accept, topic)) {
        // Not taken from this region (this side's accept list): a permanent refusal, never retried.
        ctx.metrics.refused.inc({ code: 'ERR_NOT_AUTHORIZED' });
        counts.refused++;
        return;
      }
      if (checkPublishRate(ctx, client).action === 'refuse') {
        counts.refused++;
        counts.retry.push(i);
        return;
      }
      // An echo or a loop (not newer than what is held) ends here, before any signature work.
      if (notNewer(ctx.store, ctx.scoreStore, topic, payload)) {
        ctx.metrics.dropped.inc({ code: 'ERR_SEQ_STALE' });
        counts.stale++;
        return;
      }
      let relay = (): void => undefined;
      relayed.push(new Promise<void>((res) => (relay = res)));
      const r = await admitFromPeer(ctx, topic, payload, link.region ?? id, relay);
      relay();
      counts[r.result]++;
      if (r.result === 'refused' && TRANSIENT_CODES.has(r.code)) counts.retry.push(i);
    }),
  ).then(() => counts);
  // Every item not relayed settles in `all`: the batch is relayed by then at the latest.
  return { relayed: Promise.race([Promise.all(relayed), all]), counts: all };
}

/** Requests (digests, lists, gets) one link may make per second, and its burst: a catch-up of 100k differing keys makes ~210. */
export const LINK_REQUESTS_PER_S = 50;
export const LINK_REQUEST_BURST = 500;
/** `put` batches of one link waiting for their turn (each once the one before is relayed) or for their answer (after the sync), at most (256 packets each: ~40 MB at most). */
export const LINK_PUTS_QUEUED = 64;

/** Per-link request rate and `put` queue of one broker. */
class LinkLimits {
  readonly requests = new RateLimiter(LINK_REQUESTS_PER_S, LINK_REQUEST_BURST);
  readonly #queues = new Map<string, { tail: Promise<unknown>; waiting: number }>();

  /**
   * Runs `job` once the link's earlier batches are relayed (their `relayed`); its `counts` keep
   * the batch's place among the LINK_PUTS_QUEUED until they resolve, so batches waiting for a
   * slow disk are bounded like those waiting for their turn. Undefined when LINK_PUTS_QUEUED
   * are waiting already.
   */
  queue<T>(id: string, job: () => { relayed: Promise<unknown>; counts: Promise<T> }): Promise<T> | undefined {
    let q = this.#queues.get(id);
    if (!q) this.#queues.set(id, (q = { tail: Promise.resolve(), waiting: 0 }));
    if (q.waiting >= LINK_PUTS_QUEUED) return undefined;
    q.waiting++;
    const queue = q;
    const run = queue.tail.then(job);
    queue.tail = run.then((j) => j.relayed).then(noop, noop);
    const counts = run.then((j) => j.counts);
    void counts.then(noop, noop).then(() => {
      if (--queue.waiting === 0 && this.#queues.get(id) === queue) this.#queues.delete(id);
    });
    return counts;
  }
}

const limits = new WeakMap<BrokerContext, LinkLimits>();
function linkLimits(ctx: BrokerContext): LinkLimits {
  let l = limits.get(ctx);
  if (!l) limits.set(ctx, (l = new LinkLimits()));
  return l;
}

/** A batch refused whole because its link has LINK_PUTS_QUEUED waiting: transient, the link sends it again later. */
function overflow(ctx: BrokerContext, n: number): BatchCounts {
  ctx.metrics.refused.inc({ code: 'ERR_RATE_LIMITED' }, n);
  return { stored: 0, stale: 0, refused: n, retry: Array.from({ length: n }, (_, i) => i) };
}

function answer(ctx: BrokerContext, clientId: string, payload: Buffer): void {
  ctx.publish({ topic: `${FED_RES}${clientId}`, payload, qos: 1, retain: false }).catch(() => undefined);
}
