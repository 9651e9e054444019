/**
 * The node's enrolment (PROTOCOL §10) at run time: loaded from `<dataDir>/enrolment.cbor` (or the
 * `enrolment` / `enrolmentFile` option), attached to every packet the node sends (outbox included:
 * it is attached when a packet is sent, so a renewed enrolment also covers packets queued before),
 * and reported on the status stream when it is about to expire or has expired.
 */
import { readFile } from 'node:fs/promises';
import { equalBytes } from '../protocol/bytes.js';
import { QisError } from '../protocol/errors.js';
import { attachEnrolment, decodeEnrolment, enrolmentExpiresIn, type Enrolment } from '../protocol/enrolment.js';
import type { NodeKey } from '../protocol/identity.js';
import { ioError } from './durable.js';
import { loadEnrolment } from './enrolment-file.js';
import type { EnrolmentState, NodeOptions, NodeStatus } from './types.js';

/** Default warning time before an enrolment expires: 7 days. */
export const ENROLMENT_WARN_S = 7 * 86_400;

export class Enrolled {
  readonly enrolment: Enrolment;
  readonly #warnS: number;
  constructor(enrolment: Enrolment, warnS: number) {
    this.enrolment = enrolment;
    this.#warnS = warnS;
  }

  /** The node's enrolment from the options or its data dir; undefined when it has none. @throws QisError ERR_NOT_ENROLLED (key-mismatch) | ERR_ENROLMENT_INVALID | ERR_FILE_IO */
  static async open(o: NodeOptions, key: NodeKey): Promise<Enrolled | undefined> {
    const warnS = o.enrolmentWarnS ?? ENROLMENT_WARN_S;
    if (!(Number.isFinite(warnS) && warnS >= 0)) throw new QisError('ERR_INVALID_ARGUMENT', `enrolmentWarnS must be a non-negative number of seconds, got ${String(warnS)}`);
    let e: Enrolment | undefined;
    if (o.enrolment !== undefined) e = decodeEnrolment(o.enrolment);
    else if (o.enrolmentFile !== undefined) {
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(await readFile(o.enrolmentFile));
      } catch (err) {
        throw ioError(o.enrolmentFile, err);
      }
      e = decodeEnrolment(bytes);
    } else e = await loadEnrolment(o.dataDir);
    if (!e) return undefined;
    if (!equalBytes(e.nodePublicKey, key.publicKey)) {
      throw new QisError('ERR_NOT_ENROLLED', `key-mismatch: the enrolment vouches for node ${e.nodeId}, this node is ${key.nodeId}`);
    }
    return new Enrolled(e, warnS);
  }

  /** The packet with the enrolment in its unprotected header (label 13). */
  attach(packet: Uint8Array): Uint8Array {
    return attachEnrolment(packet, this.enrolment.bytes);
  }

  state(now: number): EnrolmentState {
    const e = this.enrolment;
    const expiresInS = enrolmentExpiresIn(e, now);
    const state = expiresInS < 0 ? 'expired' : expiresInS <= this.#warnS ? 'expiring' : 'ok';
    const when = new Date(e.exp * 1000).toISOString();
    const message =
      state === 'expired'
        ? `the node's enrolment by operator ${e.operatorId} expired at ${when}: brokers in enrolment mode refuse its packets (ERR_NOT_ENROLLED expired); install a new one with qis enrol --install`
        : state === 'expiring'
          ? `the node's enrolment by operator ${e.operatorId} expires at ${when} (in ${describe(expiresInS)}); install a renewed one with qis enrol --install`
          : undefined;
    return { operatorId: e.operatorId, exp: e.exp, ...(e.scope ? { scope: e.scope } : {}), expiresInS, state, ...(message ? { message } : {}) };
  }

  /** The status event to show at `now`: only when it is expiring or has expired. */
  warning(now: number): NodeStatus | undefined {
    const s = this.state(now);
    if (s.state === 'ok' || s.message === undefined) return undefined;
    return { type: 'enrolment', state: s.state, operatorId: s.operatorId, exp: s.exp, expiresInS: s.expiresInS, message: s.message };
  }
}

function describe(s: number): string {
  if (s >= 86_400) return `${Math.floor(s / 86_400)} day(s)`;
  if (s >= 3600) return `${Math.floor(s / 3600)} hour(s)`;
  return `${Math.max(0, Math.floor(s / 60))} minute(s)`;
}
