/**
 * Enrolment mode (PROTOCOL §10): with `admission.enrolment: required`, outcome and score packets
 * need a valid enrolment by a trusted operator (ERR_NOT_ENROLLED with the reason otherwise), and
 * operators' revocation lists on `qis/1/r/<operatorId>` are admitted (§6's owner and seq rules),
 * kept in `<dataDir>/revocations` and retained like template documents, and applied: the revoked
 * nodes' stored packets are removed and their new ones refused. Lists are admitted in `off` mode
 * too (queriers that trust operators read them from the broker).
 */
import { join } from 'node:path';
import type { Client } from 'aedes';
import {
  QisError,
  checkEnrolment,
  decodeSign1,
  readEnrolment,
  verifyRevocation,
  writeFileDurable,
  type EnrolmentPolicy,
  type VerifiedRevocation,
} from '../../src/index.js';
import type { Decision } from '../admission.js';
import type { Store } from '../store.js';
import type { AedesPublishPacket, BrokerContext, Done } from './context.js';
import { drop, refuse } from './respond.js';
import { MAX_REVOCATION_LISTS } from './revocation-book.js';

/** The enrolment policy of the broker's admission at `now`. */
function policyOf(ctx: BrokerContext): EnrolmentPolicy {
  const a = ctx.options.admission;
  return { now: ctx.now(), skewMs: a.maxSkewMs, operators: operatorSet(a.operators), revoked: ctx.revocations.revoked() };
}

const operatorSets = new WeakMap<readonly string[], ReadonlySet<string>>();
function operatorSet(list: readonly string[]): ReadonlySet<string> {
  let s = operatorSets.get(list);
  if (!s) operatorSets.set(list, (s = new Set(list)));
  return s;
}

/**
 * In enrolment mode `required`: a refusal (ERR_NOT_ENROLLED, the message starting with the
 * reason) unless the verified packet `bytes` carries a valid enrolment of its own key for
 * `tplId`; undefined when it may be stored. The verification is cached by the enrolment's bytes.
 */
export function enrolmentDecision(ctx: BrokerContext, bytes: Uint8Array, tplId: string): Decision | undefined {
  if (ctx.options.admission.enrolment !== 'required') return undefined;
  let kid: unknown;
  let enrolment: Uint8Array | undefined;
  try {
    kid = decodeSign1(bytes).unprotected.get(4);
    enrolment = readEnrolment(bytes);
  } catch (e) {
    return { action: 'refuse', code: 'ERR_NOT_ENROLLED', message: `invalid: ${(e as Error).message}` };
  }
  if (!(kid instanceof Uint8Array)) return { action: 'refuse', code: 'ERR_NOT_ENROLLED', message: 'invalid: the packet has no kid' };
  const c = checkEnrolment(enrolment, kid, policyOf(ctx), tplId);
  if (c.ok) return undefined;
  return { action: 'refuse', code: c.code, message: c.message };
}

/**
 * A revocation list published by a client or a peer (`origin`): verified (owner, signature, form,
 * skew), a seq not above the held list's dropped, written durably, kept, applied, retained, and
 * forwarded to peers.
 */
export async function admitRevocation(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done, origin?: string): Promise<void> {
  const topic = packet.topic;
  const o = ctx.options.admission;
  const book = ctx.revocations;
  const size = (packet.payload as Buffer).length;
  if (size === 0) return refuse(ctx, client, topic, 'ERR_PACKET_EMPTY', 'an empty retained payload cannot delete a revocation list', cb);
  if (size > 512) return refuse(ctx, client, topic, 'ERR_PACKET_TOO_LARGE', `revocation list of ${size} bytes; at most 512`, cb);
  const bytes = Uint8Array.from(packet.payload as Buffer);
  let list: VerifiedRevocation;
  try {
    list = verifyRevocation(topic, bytes, { now: ctx.now(), maxSkewMs: o.maxSkewMs });
  } catch (e) {
    if (!(e instanceof QisError)) throw e;
    return refuse(ctx, client, topic, e.code, e.message, cb);
  }
  if (o.enrolment === 'required' && !o.operators.includes(list.operatorId)) {
    return refuse(ctx, client, topic, 'ERR_NOT_ENROLLED', `unknown-operator: operator ${list.operatorId} is not trusted here`, cb);
  }
  const held = book.get(list.operatorId);
  if (held && list.seq <= held.seq) return drop(ctx, client, packet, 'ERR_SEQ_STALE', `seq ${list.seq} is not above the held list's ${held.seq}`, cb);
  if (!held && book.size >= MAX_REVOCATION_LISTS) return refuse(ctx, client, topic, 'ERR_NOT_AUTHORIZED', `this broker already holds ${MAX_REVOCATION_LISTS} revocation lists`, cb);
  try {
    await writeFileDurable(join(book.dir, `${list.operatorId}.cose`), bytes);
  } catch (e) {
    return refuse(ctx, client, topic, 'ERR_FILE_IO', (e as Error).message, cb);
  }
  // A newer list of the same operator may have been admitted while this one was written.
  const now = book.get(list.operatorId);
  if (now && now.seq >= list.seq) return drop(ctx, client, packet, 'ERR_SEQ_STALE', 'a newer revocation list was admitted meanwhile', cb);
  book.set(list);
  const removed = await removeRevoked(ctx, list);
  ctx.metrics.admitted.inc({ kind: 'revocation' });
  ctx.logger.info({ operatorId: list.operatorId, seq: list.seq, revoked: list.revoked.length, removed }, 'revocation list applied');
  packet.retain = true;
  ctx.federation?.admitted(topic, bytes, origin);
  cb(null);
}

/** Removes the stored outcome and score packets of the nodes `list` revokes; returns how many. */
export async function removeRevoked(ctx: BrokerContext, list: VerifiedRevocation): Promise<number> {
  if (list.revoked.length === 0) return 0;
  const nodes = new Set<string>(list.revoked);
  let removed = 0;
  for (const store of [ctx.store, ctx.scoreStore]) removed += await removeNodes(store, nodes);
  return removed;
}

async function removeNodes(store: Store, nodes: ReadonlySet<string>): Promise<number> {
  // Revocations are rare and a list names at most ~23 nodes: one walk of the store is enough.
  const gone = [...store.match('qis/1/o/#')].filter((p) => nodes.has(p.nodeId));
  // The removal's seq must lie above the packet's (the store keeps seq increasing); the node's own
  // next packet is refused as revoked anyway.
  for (const p of gone) await store.remove({ tplId: p.tplId, nodeId: p.nodeId, seq: p.seq + 1 });
  return gone.length;
}
