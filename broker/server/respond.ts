/**
 * How a publish ends: refused (an error to Aedes, which disconnects the client), dropped
 * (acknowledged, delivered to nobody) or accepted (retained delivery, forwarded to peers). Every
 * refusal and drop is counted and logged with its code.
 */
import type { Client } from 'aedes';
import { QisError, type ErrorCode } from '../../src/index.js';
import { isDecision, type Decision, type Precheck } from '../admission.js';
import type { Store } from '../store.js';
import { DROP_TOPIC, type AedesPublishPacket, type BrokerContext, type Done } from './context.js';

/** The stable code of a thrown error (ERR_INTERNAL for anything not a QisError). */
export function codeOf(e: unknown): ErrorCode {
  return e instanceof QisError ? e.code : 'ERR_INTERNAL';
}

export function refuse(ctx: BrokerContext, client: Client | null, topic: string, code: ErrorCode, message: string, cb: Done): void {
  ctx.metrics.refused.inc({ code });
  ctx.logger.warn({ code, clientId: client?.id, topic }, message);
  cb(new QisError(code, message));
}

/** Acknowledged once `store` is durable, delivered to nobody. */
export function drop(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, code: ErrorCode, message: string, cb: Done, store: Store = ctx.store): void {
  const topic = packet.topic;
  // The record that made this publish stale may still be on its way to the disk: acknowledge
  // only once it is durable, or a resend could be acknowledged for a packet a crash then loses.
  store.durable().then(
    () => {
      ctx.metrics.dropped.inc({ code });
      ctx.logger.debug({ code, clientId: client?.id, topic }, message);
      // Acknowledged (Aedes writes the PUBACK after this callback) but delivered to nobody.
      packet.topic = DROP_TOPIC;
      packet.retain = false;
      cb(null);
    },
    (e: unknown) => refuse(ctx, client, topic, 'ERR_FILE_IO', (e as Error).message, cb),
  );
}

/** Carries out a refuse or drop decision (true), or leaves a pass/store to the caller (false). */
export function carryOut(ctx: BrokerContext, d: Decision, client: Client | null, packet: AedesPublishPacket, cb: Done, store: Store = ctx.store): boolean {
  if (d.action === 'refuse') refuse(ctx, client, packet.topic, d.code, d.message, cb);
  else if (d.action === 'drop') drop(ctx, client, packet, d.code, d.message, cb, store);
  else return false;
  return true;
}

/**
 * The start every packet admission shares: refused while `store` has failed, then the cheap
 * precheck `check` (a refusal or drop it decides is carried out). Returns the precheck's ids and a
 * view of the payload's bytes, or undefined when the publish has already ended.
 */
export function precheck(
  ctx: BrokerContext,
  store: Store,
  client: Client | null,
  packet: AedesPublishPacket,
  cb: Done,
  check: (topic: string, size: number) => Precheck | Decision,
): { pre: Precheck; bytes: Uint8Array } | undefined {
  const payload = packet.payload as Buffer;
  if (store.failure) {
    refuse(ctx, client, packet.topic, 'ERR_FILE_IO', store.failure.message, cb);
    return undefined;
  }
  const pre = check(packet.topic, payload.length);
  if (isDecision(pre)) {
    carryOut(ctx, pre, client, packet, cb);
    return undefined;
  }
  return { pre, bytes: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength) };
}

/** For an admission's rejected promise: logged, then refused with the error's code. */
export function refuseFailed(ctx: BrokerContext, client: Client | null, topic: string, cb: Done, what: string): (e: unknown) => void {
  return (e) => {
    ctx.logger.error({ err: e, clientId: client?.id ?? '' }, what);
    refuse(ctx, client, topic, codeOf(e), (e as Error).message, cb);
  };
}

/**
 * A stored packet is let through: retained delivery (`retain` set; storeRetained skips qis
 * topics), live delivery, and forwarding to the other regions. Aedes delivers a client's publish
 * itself, but only after writing its PUBACK: a turn later, or once a backed-up socket drained,
 * and never when the publisher left during admission (that write fails). So the broker delivers
 * it here instead when the publisher left, and with `now` (outcome packets) always, at once,
 * Aedes' own copy then going nowhere: live subscribers get a node's packets in the order
 * admission let them through, the same order as the other regions, whether they came from a
 * client or a peer (whose packets are published at once too).
 */
export function accept(ctx: BrokerContext, client: Client | null, packet: AedesPublishPacket, bytes: Uint8Array, origin: string | undefined, cb: Done, now = false): void {
  packet.retain = true;
  const here = client !== null && (now || Boolean((client as Client & { closed?: boolean }).closed));
  // retain: the same Aedes path as every qis publish (see admitOutcome's tombstones); never stored.
  if (here) ctx.publish({ topic: packet.topic, payload: packet.payload, qos: packet.qos, retain: true }).catch(() => undefined);
  ctx.federation?.admitted(packet.topic, bytes, origin);
  if (here && now) {
    packet.topic = DROP_TOPIC; // acknowledged, delivered to nobody (delivered above)
    packet.retain = false;
  }
  cb(null);
}
