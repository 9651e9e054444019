/**
 * Node login (PROTOCOL §11): an MQTT CONNECT authenticated by the node's own key. Username = the
 * node id; password = a COSE_Sign1 by the node key over {1: 1, 4: ts, 11: clientId} with
 * external_aad "qis/1/login", carrying the node's enrolment under label 13 when it has one.
 * Pure: the verifier is given `now`.
 */
import { decodeCbor, encodeCbor, type CborValue } from './cbor.js';
import { QisError } from './errors.js';
import { nodeIdOf, type Ed25519Backend, type NodeId, type NodeKey } from './identity.js';
import { decodeSign1, encodeIntKeyMap, isUint, signEnvelope, verifySign1 } from './packet.js';
import { DEFAULT_SKEW_MS, KCWT_LABEL, attachEnrolment, checkEnrolment, type Enrolment, type EnrolmentPolicy, type EnrolmentReason } from './enrolment.js';

/** The external_aad of a login (PROTOCOL §11). */
export const LOGIN_AAD = 'qis/1/login';
/** MQTT allows 65535 bytes of password; a login is a small COSE_Sign1 and never needs more than this. */
export const MAX_LOGIN_BYTES = 1024;

export interface LoginInput {
  /** The MQTT client id the node will connect with (the login is bound to it). */
  readonly clientId: string;
  /** Unix ms (the broker refuses a login further than its skew from its clock). */
  readonly ts: number;
  /** The node's enrolment (PROTOCOL §10), for brokers in enrolment mode `required`. */
  readonly enrolment?: Uint8Array;
  readonly backend?: Ed25519Backend;
}

/** MQTT CONNECT credentials (the password is binary, as MQTT allows). */
export interface LoginCredentials {
  readonly username: NodeId;
  readonly password: Uint8Array;
}

/**
 * The username and password of a node login.
 * @throws QisError ERR_INVALID_ARGUMENT | ERR_ENROLMENT_INVALID | ERR_PACKET_TOO_LARGE
 * @example const { username, password } = createLogin(key, { clientId: 'gw-7', ts: Date.now(), enrolment })
 */
export function createLogin(key: NodeKey, input: LoginInput): LoginCredentials {
  if (typeof input.clientId !== 'string') throw new QisError('ERR_INVALID_ARGUMENT', 'clientId must be a string');
  if (!isUint(input.ts)) throw new QisError('ERR_INVALID_ARGUMENT', `ts must be Unix ms (an integer ≥ 0), not ${input.ts}`);
  const payload = encodeIntKeyMap([
    [1, 1],
    [4, input.ts],
    [11, input.clientId],
  ]);
  // signEnvelope writes the external_aad string as its UTF-8 bytes, which §11 asks for.
  const signed = signEnvelope(key, LOGIN_AAD, payload, input.backend, 'use a shorter client id');
  return { username: key.nodeId, password: input.enrolment === undefined ? signed : attachEnrolment(signed, input.enrolment) };
}

export type LoginReason = 'malformed' | 'user-mismatch' | 'bad-signature' | 'client-id' | 'stale';

export interface LoginPolicy {
  /** Unix ms. Required: no check reads the wall clock. */
  readonly now: number;
  /** Largest |now − ts| in ms; default {@link DEFAULT_SKEW_MS}. */
  readonly skewMs?: number;
  /** Enrolment mode `required`: the login must carry an enrolment valid under this policy (its `now` and skew are this one's). */
  readonly enrolment?: Omit<EnrolmentPolicy, 'now' | 'skewMs'>;
  readonly backend?: Ed25519Backend;
}

export type LoginCheck =
  | { readonly ok: true; readonly nodeId: NodeId; readonly publicKey: Uint8Array; readonly ts: number; readonly enrolment?: Enrolment }
  | { readonly ok: false; readonly code: 'ERR_LOGIN_REFUSED'; readonly reason: LoginReason; readonly message: string }
  | { readonly ok: false; readonly code: 'ERR_NOT_ENROLLED'; readonly reason: EnrolmentReason; readonly message: string };

const refused = (reason: LoginReason, message: string): LoginCheck => ({ ok: false, code: 'ERR_LOGIN_REFUSED', reason, message: `${reason}: ${message}` });

/**
 * Checks a node login of a CONNECT (PROTOCOL §11): the signature with the kid, H(kid) = username,
 * the signed clientId = the CONNECT's, |now − ts| ≤ skew, and with `policy.enrolment` a valid
 * enrolment. Never throws on hostile input.
 */
export function verifyLogin(connect: { readonly username: string | undefined; readonly password: Uint8Array | undefined; readonly clientId: string }, policy: LoginPolicy): LoginCheck {
  const { username, password, clientId } = connect;
  if (typeof username !== 'string' || !(password instanceof Uint8Array)) return refused('malformed', 'a node login needs a username and a password');
  if (password.length > MAX_LOGIN_BYTES) return refused('malformed', `password of ${password.length} bytes; a login is at most ${MAX_LOGIN_BYTES}`);
  let ts: number;
  let signedClientId: CborValue | undefined;
  let publicKey: Uint8Array;
  let kcwt: CborValue | undefined;
  try {
    const msg = decodeSign1(password);
    const kid = msg.unprotected.get(4);
    if (!(kid instanceof Uint8Array) || kid.length !== 32) return refused('malformed', 'kid (4) must be the 32-byte node key');
    publicKey = kid;
    if (nodeIdOf(kid) !== username) return refused('user-mismatch', `the key is node ${nodeIdOf(kid)}, the username ${username}`);
    if (!verifySign1(msg, kid, LOGIN_AAD, policy.backend)) return refused('bad-signature', 'the login signature does not verify');
    const m = decodeCbor(msg.payload, { markFloats: true, maxDepth: 2 });
    if (!(m instanceof Map) || m.get(1) !== 1) return refused('malformed', 'payload must be a map with version (1) = 1');
    const rawTs = m.get(4);
    if (!isUint(rawTs)) return refused('malformed', 'ts (4) must be Unix ms');
    ts = rawTs;
    signedClientId = m.get(11);
    kcwt = msg.unprotected.get(KCWT_LABEL);
  } catch (e) {
    if (e instanceof QisError) return refused('malformed', e.message);
    throw e;
  }
  if (signedClientId !== clientId) return refused('client-id', `the login is for client id ${JSON.stringify(signedClientId)}, the CONNECT says ${JSON.stringify(clientId)}`);
  const skew = policy.skewMs ?? DEFAULT_SKEW_MS;
  if (Math.abs(policy.now - ts) > skew) return refused('stale', `ts is ${policy.now - ts} ms from the broker's clock; allowed skew is ${skew} ms`);
  const nodeId = nodeIdOf(publicKey);
  if (policy.enrolment === undefined) return { ok: true, nodeId, publicKey, ts };
  const e = checkEnrolment(kcwt === undefined ? undefined : encodeCbor(kcwt), publicKey, { ...policy.enrolment, now: policy.now, skewMs: skew });
  if (!e.ok) return { ok: false, code: e.code, reason: e.reason, message: e.message };
  return { ok: true, nodeId, publicKey, ts, enrolment: e.enrolment };
}
