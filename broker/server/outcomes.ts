/**
 * Admission of an outcome packet (qis/1/o/…, PROTOCOL §6): precheck, signature (verifier
 * threads), seq against the store, then a durable put or signed tombstone; only then does the
 * callback return, and Aedes writes the PUBACK after it. So a PUBACK always follows a durable write.
 */
import type { Client } from 'aedes';
import { decide, precheckOutcome, type Decision } from '../admission.js';
import { noop, type PutResult, type StoredPacket } from '../store.js';
import type { AedesPublishPacket, BrokerContext, Done } from './context.js';
import { enrolmentDecision } from './enrolment.js';
import { accept, carryOut, drop, precheck } from './respond.js';

/**
 * A tombstone for a (template, node) this broker never held, refused because the store keeps
 * `max` such cold floors already (limits.maxColdFloors; issue 13 item 5). Acknowledged and
 * dropped, like a stale packet: the node loses nothing it ever stored here, and a client that
 * mints keys for free cannot make the broker keep them.
 */
export function coldFloorRefusal(max: number): Extract<Decision, { action: 'drop' }> {
  return { action: 'drop', code: 'ERR_TOMBSTONE_LIMIT', message: `a tombstone for a key this broker never held: ${max} such floors are kept already (limits.maxColdFloors)` };
}

/**
 * `origin`: the federation link the packet came from (it is not forwarded back there). `relay`
 * (a peer's packet): called once the packet is in the store's index, before its record is
 * durable; it delivers the packet here, and the packet is forwarded on to the other links at the
 * same moment. `cb`, which answers the peer, still follows the durable write. So a hop costs a
 * verification, not also a disk sync; the region where the packet entered holds it durably, and
 * a link left unanswered by a crash catches up (docs/protocol-choices.md, "Federation").
 */
export async function admitOutcome(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done, origin?: string, relay?: () => void): Promise<void> {
  const { store, options: o } = ctx;
  const topic = packet.topic;
  const start = precheck(ctx, store, client, packet, cb, (t, size) => precheckOutcome(t, size, o.admission, (id) => ctx.templates.depthOf(id)));
  if (!start) return;
  const { pre, bytes } = start;
  // The source (the client, or the federation link's region) gives each publisher its own lane in the verifier: a burst from one does not delay another's packet.
  const source = client ?? origin;
  const v = await ctx.verifier.verify(topic, bytes, { now: ctx.now(), maxSkewMs: o.admission.maxSkewMs, ...(pre.depth !== undefined ? { depth: pre.depth } : {}), ...(source !== undefined ? { source } : {}) });
  const d = (v.ok ? enrolmentDecision(ctx, bytes, pre.tplId) : undefined) ?? decide(v, store.seqOf(pre.tplId, pre.nodeId));
  if (carryOut(ctx, d, client, packet, cb) || !v.ok) return;
  const key = `${pre.tplId}/${pre.nodeId}`;
  const unsynced = unsyncedOf(ctx);
  if (v.packet.del) {
    // The signed tombstone is kept (for the tombstone TTL) as the proof a federation peer needs.
    const release = hold(unsynced, key);
    try {
      return await removeAndAccept(ctx, client, packet, cb, origin, { pre, seq: v.packet.seq, topic, bytes });
    } finally {
      release();
    }
  }
  // The store copies the bytes out of Aedes' read buffer.
  const stored: StoredPacket = { tplId: pre.tplId, nodeId: pre.nodeId, topic, seq: v.packet.seq, packet: bytes, ...(v.packet.exp !== undefined ? { exp: v.packet.exp } : {}) };
  let relayed = false;
  const early =
    relay &&
    ((x: PutResult): void => {
      // Not ahead of an earlier packet or tombstone of this key still waiting for its sync: that
      // one goes out first (after the sync), and this one after it, in seq order.
      if (!x.stored || unsynced.has(key)) return;
      relayed = true;
      ctx.federation?.admitted(topic, bytes, origin);
      relay();
    });
  const putting = store.put(stored, early);
  // Not relayed: this key's later packets are not relayed ahead of this one's delivery either.
  const release = relayed ? noop : hold(unsynced, key);
  try {
    const r = await putting;
    if (!r.stored) return drop(ctx, client, packet, 'ERR_SEQ_STALE', 'a newer packet was stored meanwhile', cb);
    ctx.metrics.admitted.inc({ kind: r.replaced && r.replaced.topic !== topic ? 'move' : 'packet' });
    if (!relayed) return accept(ctx, client, packet, bytes, origin, cb, true);
    packet.retain = true;
    cb(null);
  } finally {
    release();
  }
}

/** A signed tombstone accepted by admission: removed from the store, then delivered and forwarded (after the sync). */
async function removeAndAccept(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done, origin: string | undefined, t: { pre: { tplId: string; nodeId: string }; seq: number; topic: string; bytes: Uint8Array }): Promise<void> {
  const { store, options: o } = ctx;
  const { pre, topic, bytes } = t;
  const r = await store.remove({ tplId: pre.tplId, nodeId: pre.nodeId, seq: t.seq, topic, packet: bytes });
  if ('stale' in r) return drop(ctx, client, packet, 'ERR_SEQ_STALE', 'tombstone not newer than the stored seq', cb);
  if ('full' in r) {
    const full = coldFloorRefusal(o.limits.maxColdFloors);
    ctx.limits.episodes.hit(full.code, full.message, { clientId: client?.id });
    carryOut(ctx, full, client, packet, cb);
    return;
  }
  ctx.metrics.admitted.inc({ kind: 'tombstone' });
  // Live watchers see the withdrawal; nothing is retained (storeRetained skips qis/1/o/). The
  // flag stays set so that Aedes takes the same path as for a packet: its per-subscriber
  // dedupe drops any message whose counter is below one already delivered, and a non-retained
  // publish skips the storeRetained step, overtook the packet published just before it and
  // made Aedes drop that packet for every live subscriber (moscajs/aedes#994;
  // docs/protocol-choices.md, "Federation": the lost-forward race). Aedes clears the flag on
  // live delivery to MQTT 3.1.1 subscribers.
  accept(ctx, client, packet, bytes, origin, cb, true);
}

/**
 * Keys (`tplId/nodeId`) with an admission that was not relayed early and has not gone out yet (it
 * waits for its sync), and how many: a peer's packet of such a key is not relayed ahead of it.
 */
const unsyncedKeys = new WeakMap<BrokerContext, Map<string, number>>();
function unsyncedOf(ctx: BrokerContext): Map<string, number> {
  let m = unsyncedKeys.get(ctx);
  if (!m) unsyncedKeys.set(ctx, (m = new Map()));
  return m;
}

/** Counts one admission of `key` in `m` until the returned function is called (once). */
function hold(m: Map<string, number>, key: string): () => void {
  m.set(key, (m.get(key) ?? 0) + 1);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    const n = (m.get(key) ?? 1) - 1;
    if (n === 0) m.delete(key);
    else m.set(key, n);
  };
}
