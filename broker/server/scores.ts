/**
 * Admission of a score packet (qis/1/s/<tplId>/<nodeId>, PROTOCOL §9): §6's rules (topic,
 * registry, size, owner, signature with the topic as aad, skew, seq), stored in the broker's
 * score store under an outcome-shaped key.
 */
import type { Client } from 'aedes';
import { QisError, verifyScorePacket, type ErrorCode } from '../../src/index.js';
import { decide, precheckScore, scoreStoreTopic } from '../admission.js';
import type { AedesPublishPacket, BrokerContext, Done } from './context.js';
import { enrolmentDecision } from './enrolment.js';
import { accept, carryOut, drop, precheck } from './respond.js';

/** `origin`: the federation link the packet came from (it is not forwarded back there). */
export async function admitScore(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, cb: Done, origin?: string): Promise<void> {
  const { scoreStore, options: o } = ctx;
  const topic = packet.topic;
  const start = precheck(ctx, scoreStore, client, packet, cb, (t, size) => precheckScore(t, size, o.admission, (id) => ctx.templates.has(id)));
  if (!start) return;
  const { pre, bytes } = start;
  let v: { ok: true; packet: { seq: number; del: boolean } } | { ok: false; code: ErrorCode; message: string };
  try {
    // Score packets are few (one per node per template, sent after an observation): verified
    // on the main thread, not by the outcome verifier threads.
    v = { ok: true, packet: { seq: verifyScorePacket(topic, bytes, { now: ctx.now(), maxSkewMs: o.admission.maxSkewMs }).seq, del: false } };
  } catch (e) {
    if (!(e instanceof QisError)) throw e;
    v = { ok: false, code: e.code, message: e.message };
  }
  const d = (v.ok ? enrolmentDecision(ctx, bytes, pre.tplId) : undefined) ?? decide(v, scoreStore.seqOf(pre.tplId, pre.nodeId));
  if (carryOut(ctx, d, client, packet, cb, scoreStore) || !v.ok) return;
  const r = await scoreStore.put({ tplId: pre.tplId, nodeId: pre.nodeId, topic: scoreStoreTopic(pre.tplId, pre.nodeId), seq: v.packet.seq, packet: bytes });
  if (!r.stored) return drop(ctx, client, packet, 'ERR_SEQ_STALE', 'a newer score packet was stored meanwhile', cb, scoreStore);
  ctx.metrics.admitted.inc({ kind: 'score' });
  accept(ctx, client, packet, bytes, origin, cb);
}
