/**
 * Enrolment (PROTOCOL §10): an operator's CWT vouching for a node key, carried in a packet's
 * unprotected header under label 13, and the operator's revocation list on `qis/1/r/<operatorId>`.
 *
 * An operator is an Ed25519 key pair like a node's (same key file, `operatorId` = its `nodeId`
 * formula). Nothing here does I/O except {@link installEnrolment} / {@link loadEnrolment}; every
 * time check takes an explicit `now`.
 */
import { CborTag, decodeCbor, encodeCbor, encodeWith, type CborValue } from './cbor.js';
import { b32, b32decode, equalBytes, fromHex } from './bytes.js';
import { QisError, type ErrorCode } from './errors.js';
import { isNodeId, nodeIdOf, type Ed25519Backend, type NodeId, type NodeKey } from './identity.js';
import {
  COSE_SIGN1_TAG,
  MAX_PACKET_BYTES,
  decodeSign1,
  encodeIntKeyMap,
  isUint,
  openEnvelope,
  signEnvelope,
  verifySign1,
  type Sign1,
} from './packet.js';

declare const operatorIdBrand: unique symbol;
/** `operatorId = b32(H(operator public key)[:16])`, the node id formula (PROTOCOL §10). */
export type OperatorId = string & { readonly [operatorIdBrand]: true };

/** The operator id of an operator public key. */
export function operatorIdOf(publicKey: Uint8Array): OperatorId {
  return nodeIdOf(publicKey) as string as OperatorId;
}

/** Header label of the enrolment in a packet's unprotected header (`kcwt`, RFC 9528). */
export const KCWT_LABEL = 13;
/** CWT claim keys (RFC 8392) and the scope claim of PROTOCOL §10. */
export const CLAIM_EXP = 4;
export const CLAIM_NBF = 5;
export const CLAIM_CNF = 8;
export const CLAIM_SCOPE = -70001;
/** The clock skew of §6 that §10 reuses for nbf/exp, and §11 for a login's ts. */
export const DEFAULT_SKEW_MS = 300_000;
/** The file under a node's data dir that holds its enrolment (raw CBOR). */
export const ENROLMENT_FILE = 'enrolment.cbor';
export const REVOCATION_TOPIC_PREFIX = 'qis/1/r/';

/** Why an enrolment is not valid for a packet or a login (PROTOCOL §10's conditions, in its order). */
export type EnrolmentReason =
  | 'missing'
  | 'invalid'
  | 'key-mismatch'
  | 'not-yet-valid'
  | 'expired'
  | 'out-of-scope'
  | 'unknown-operator'
  | 'revoked';
export const ENROLMENT_REASONS: readonly EnrolmentReason[] = ['missing', 'invalid', 'key-mismatch', 'not-yet-valid', 'expired', 'out-of-scope', 'unknown-operator', 'revoked'];

/** A decoded enrolment whose operator signature verified. */
export interface Enrolment {
  /** The CWT as CBOR bytes (what a packet carries under label 13 and `qis enrol` writes). */
  readonly bytes: Uint8Array;
  readonly operatorPublicKey: Uint8Array;
  readonly operatorId: OperatorId;
  /** The cnf key: the node key the operator vouches for. */
  readonly nodePublicKey: Uint8Array;
  readonly nodeId: NodeId;
  /** Unix s: not valid after. */
  readonly exp: number;
  /** Unix s: not valid before. */
  readonly nbf?: number;
  /** Template ids the node may publish under; absent: any. */
  readonly scope?: readonly string[];
}

export interface EnrolmentInput {
  /** The node's public key (32 bytes). */
  readonly node: Uint8Array;
  /** Unix s: not valid after. */
  readonly exp: number;
  /** Unix s: not valid before. */
  readonly nbf?: number;
  /** Template ids the node may publish under; absent: any. */
  readonly scope?: readonly string[];
}

/** A verifier's view: trusted operators and what they revoked. */
export interface EnrolmentPolicy {
  /** Unix ms. Required: no check reads the wall clock. */
  readonly now: number;
  /** Allowed clock skew in ms on nbf and exp; default {@link DEFAULT_SKEW_MS}. */
  readonly skewMs?: number;
  /** Trusted operator ids; absent: any operator (only signature, key, time and scope are checked). */
  readonly operators?: ReadonlySet<string>;
  /** Revoked node ids per operator id (see {@link revocationIndex}). */
  readonly revoked?: ReadonlyMap<string, ReadonlySet<string>>;
  readonly backend?: Ed25519Backend;
}

export type EnrolmentCheck =
  | { readonly ok: true; readonly enrolment: Enrolment }
  | { readonly ok: false; readonly code: 'ERR_NOT_ENROLLED'; readonly reason: EnrolmentReason; readonly message: string; readonly enrolment?: Enrolment };

function refuse(code: ErrorCode, message: string): never {
  throw new QisError(code, message);
}

// ---------------------------------------------------------------------------------- creating

/**
 * Signs an enrolment (a CWT, PROTOCOL §10) for a node key: COSE_Sign1, protected {1: -19},
 * unprotected {4: operator key}, external_aad empty, payload the claims {4: exp, 5: nbf, 8: cnf,
 * -70001: scope}.
 * @throws QisError ERR_INVALID_ARGUMENT | ERR_PACKET_TOO_LARGE
 * @example const cwt = createEnrolment(operatorKey, { node: nodeKey.publicKey, exp: nowS + 365 * 86400 })
 */
export function createEnrolment(operator: NodeKey, input: EnrolmentInput, options: { backend?: Ed25519Backend } = {}): Uint8Array {
  if (!(input.node instanceof Uint8Array) || input.node.length !== 32) refuse('ERR_INVALID_ARGUMENT', 'node must be a 32-byte Ed25519 public key');
  if (!isUint(input.exp)) refuse('ERR_INVALID_ARGUMENT', `exp must be Unix seconds (an integer ≥ 0), not ${input.exp}`);
  if (input.nbf !== undefined && (!isUint(input.nbf) || input.nbf > input.exp)) refuse('ERR_INVALID_ARGUMENT', 'nbf must be Unix seconds, not after exp');
  if (input.scope !== undefined && (!Array.isArray(input.scope) || input.scope.some((t) => typeof t !== 'string' || t === ''))) {
    refuse('ERR_INVALID_ARGUMENT', 'scope must be an array of template ids');
  }
  const claims = new Map<CborValue, CborValue>([
    [CLAIM_EXP, input.exp],
    [CLAIM_CNF, new Map<CborValue, CborValue>([[1, new Map<CborValue, CborValue>([[1, 1], [-1, 6], [-2, input.node]])]])],
  ]);
  if (input.nbf !== undefined) claims.set(CLAIM_NBF, input.nbf);
  if (input.scope !== undefined) claims.set(CLAIM_SCOPE, [...new Set(input.scope)]);
  // The codec sorts map keys deterministically (PROTOCOL §1); the empty text topic is the empty external_aad.
  return signEnvelope(operator, '', encodeCbor(claims), options.backend, 'use fewer template ids in scope');
}

// ---------------------------------------------------------------------------------- decoding

// Verification of an enrolment (structure + operator signature) depends on its bytes only, so it
// is cached by them: a querier reading 10k enrolled nodes again pays one Map lookup each.
const CACHE_MAX = 16_384;
type Cached = { readonly enrolment: Enrolment } | { readonly error: string };
const cache = new Map<string, Cached>();

/** Empties the verification cache (benchmarks measure the cold path with it). */
export function clearEnrolmentCache(): void {
  cache.clear();
}

/** A signed payload that must be a CBOR map; anything else is `code`. markFloats: "uint" means a CBOR integer. */
function payloadMap(payload: Uint8Array, code: ErrorCode, what: string, maxDepth: number): Map<CborValue, CborValue> {
  let m: CborValue;
  try {
    m = decodeCbor(payload, { markFloats: true, maxDepth });
  } catch (e) {
    throw new QisError(code, `${what}: ${(e as Error).message}`, { cause: e });
  }
  if (!(m instanceof Map)) refuse(code, `${what} must be a CBOR map`);
  return m;
}

function claimUint(claims: Map<CborValue, CborValue>, key: number, name: string): number | undefined {
  const v = claims.get(key);
  if (v === undefined) return undefined;
  if (!isUint(v)) refuse('ERR_ENROLMENT_INVALID', `${name} (${key}) must be an unsigned integer of at most 2^53-1`);
  return v;
}

function nodeKeyOf(cnf: CborValue | undefined): Uint8Array {
  const coseKey = cnf instanceof Map ? cnf.get(1) : undefined;
  if (!(coseKey instanceof Map)) refuse('ERR_ENROLMENT_INVALID', 'cnf (8) must be {1: COSE_Key}');
  const x = coseKey.get(-2);
  if (coseKey.get(1) !== 1 || coseKey.get(-1) !== 6 || !(x instanceof Uint8Array) || x.length !== 32) {
    refuse('ERR_ENROLMENT_INVALID', 'cnf key must be an OKP Ed25519 COSE_Key {1: 1, -1: 6, -2: 32-byte key}');
  }
  return x;
}

function decodeUnchecked(bytes: Uint8Array): { msg: Sign1; enrolment: Enrolment } {
  if (!(bytes instanceof Uint8Array)) refuse('ERR_INVALID_ARGUMENT', 'an enrolment is a Uint8Array');
  if (bytes.length > MAX_PACKET_BYTES) refuse('ERR_ENROLMENT_INVALID', `an enrolment of ${bytes.length} bytes cannot fit in a ${MAX_PACKET_BYTES}-byte packet`);
  let msg: Sign1;
  try {
    msg = decodeSign1(bytes);
  } catch (e) {
    throw new QisError('ERR_ENROLMENT_INVALID', `not a COSE_Sign1 CWT: ${(e as Error).message}`, { cause: e });
  }
  const kid = msg.unprotected.get(4);
  if (!(kid instanceof Uint8Array) || kid.length !== 32) refuse('ERR_ENROLMENT_INVALID', "kid (4) must be the operator's 32-byte public key");
  const claims = payloadMap(msg.payload, 'ERR_ENROLMENT_INVALID', 'claims', 8);
  const exp = claimUint(claims, CLAIM_EXP, 'exp');
  if (exp === undefined) refuse('ERR_ENROLMENT_INVALID', 'claims have no exp (4)');
  const nbf = claimUint(claims, CLAIM_NBF, 'nbf');
  const nodePublicKey = nodeKeyOf(claims.get(CLAIM_CNF));
  const rawScope = claims.get(CLAIM_SCOPE);
  if (rawScope !== undefined && (!Array.isArray(rawScope) || rawScope.some((t) => typeof t !== 'string'))) {
    refuse('ERR_ENROLMENT_INVALID', 'scope (-70001) must be an array of template id strings');
  }
  const e: { -readonly [K in keyof Enrolment]: Enrolment[K] } = {
    bytes,
    operatorPublicKey: kid,
    operatorId: operatorIdOf(kid),
    nodePublicKey,
    nodeId: nodeIdOf(nodePublicKey),
    exp,
  };
  if (nbf !== undefined) e.nbf = nbf;
  if (rawScope !== undefined) e.scope = rawScope as string[];
  return { msg, enrolment: e };
}

/**
 * Decodes an enrolment and verifies its operator signature (with its own kid, external_aad
 * empty). Cached by its bytes (bounded, least recently used first out). Does not judge time,
 * scope, trust or revocation: see {@link checkEnrolment}.
 * @throws QisError ERR_ENROLMENT_INVALID
 */
export function decodeEnrolment(bytes: Uint8Array, options: { backend?: Ed25519Backend } = {}): Enrolment {
  const r = cachedDecode(bytes, options.backend);
  if ('error' in r) refuse('ERR_ENROLMENT_INVALID', r.error);
  return r.enrolment;
}

function cachedDecode(bytes: Uint8Array, backend?: Ed25519Backend): Cached {
  if (!(bytes instanceof Uint8Array)) refuse('ERR_INVALID_ARGUMENT', 'an enrolment is a Uint8Array');
  const id = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  const hit = cache.get(id);
  if (hit) {
    // Re-inserted: the Map's order is then least recently used first.
    cache.delete(id);
    cache.set(id, hit);
    return hit;
  }
  let r: Cached;
  try {
    const { msg, enrolment } = decodeUnchecked(new Uint8Array(bytes));
    r = verifySign1(msg, enrolment.operatorPublicKey, new Uint8Array(0), backend)
      ? { enrolment }
      : { error: "the operator's signature does not verify" };
  } catch (e) {
    if (!(e instanceof QisError)) throw e;
    r = { error: e.message };
  }
  if (cache.size >= CACHE_MAX) {
    const oldest = cache.keys().next();
    if (!oldest.done) cache.delete(oldest.value);
  }
  cache.set(id, r);
  return r;
}

// ---------------------------------------------------------------------------------- checking

function notEnrolled(reason: EnrolmentReason, message: string, enrolment?: Enrolment): EnrolmentCheck {
  return enrolment
    ? { ok: false, code: 'ERR_NOT_ENROLLED', reason, message: `${reason}: ${message}`, enrolment }
    : { ok: false, code: 'ERR_NOT_ENROLLED', reason, message: `${reason}: ${message}` };
}

/**
 * Whether `bytes` is an enrolment valid for the node key `publicKey` (and template `tplId`, when
 * given: a login has none) under `policy`, checked in PROTOCOL §10's order: operator signature,
 * cnf key = the node's key, nbf − skew ≤ now ≤ exp + skew, scope, trusted operator, not revoked.
 * Never throws on hostile input.
 */
export function checkEnrolment(bytes: Uint8Array | undefined, publicKey: Uint8Array, policy: EnrolmentPolicy, tplId?: string): EnrolmentCheck {
  if (bytes === undefined) return notEnrolled('missing', 'no enrolment (unprotected header label 13)');
  const r = cachedDecode(bytes, policy.backend);
  if ('error' in r) return notEnrolled('invalid', r.error);
  const e = r.enrolment;
  if (!equalBytes(e.nodePublicKey, publicKey)) return notEnrolled('key-mismatch', `the enrolment vouches for node ${e.nodeId}, not ${nodeIdOf(publicKey)}`, e);
  const skew = policy.skewMs ?? DEFAULT_SKEW_MS;
  if (e.nbf !== undefined && policy.now < e.nbf * 1000 - skew) {
    return notEnrolled('not-yet-valid', `the enrolment is valid from ${isoSeconds(e.nbf)}`, e);
  }
  if (policy.now > e.exp * 1000 + skew) return notEnrolled('expired', `the enrolment expired at ${isoSeconds(e.exp)}`, e);
  if (tplId !== undefined && e.scope !== undefined && !e.scope.includes(tplId)) {
    return notEnrolled('out-of-scope', `template ${tplId} is not in the enrolment's scope (${e.scope.join(', ') || 'empty'})`, e);
  }
  if (policy.operators !== undefined && !policy.operators.has(e.operatorId)) {
    return notEnrolled('unknown-operator', `operator ${e.operatorId} is not trusted here`, e);
  }
  if (policy.revoked?.get(e.operatorId)?.has(e.nodeId)) return notEnrolled('revoked', `operator ${e.operatorId} revoked node ${e.nodeId}`, e);
  return { ok: true, enrolment: e };
}

/** {@link checkEnrolment} for a decoded or verified packet (its kid, its enrolment, its tplId when known). */
export function checkPacketEnrolment(
  packet: { readonly publicKey: Uint8Array; readonly enrolment?: Uint8Array; readonly tplId?: string },
  policy: EnrolmentPolicy,
): EnrolmentCheck {
  return checkEnrolment(packet.enrolment, packet.publicKey, policy, packet.tplId);
}

function isoSeconds(s: number): string {
  const d = new Date(s * 1000);
  return Number.isNaN(d.getTime()) ? `${s} (Unix s)` : d.toISOString();
}

/** An operator named by its id (26 base32 characters) or its public key (64 hex digits). */
export function parseOperatorRef(text: string): OperatorId {
  const t = text.trim();
  if (isNodeId(t)) return t as string as OperatorId;
  const pk = /^[0-9a-fA-F]{64}$/.test(t) ? fromHex(t) : undefined;
  if (pk) return operatorIdOf(pk);
  return refuse('ERR_INVALID_ARGUMENT', `"${text}" is not an operator id (26 base32 characters) or public key (64 hex digits)`);
}

// ---------------------------------------------------------------------------------- label 13

/** The enrolment bytes in a COSE_Sign1's unprotected header (label 13), if any; never verified here. */
export function readEnrolment(sign1: Uint8Array): Uint8Array | undefined {
  const kcwt = decodeSign1(sign1).unprotected.get(KCWT_LABEL);
  return kcwt === undefined ? undefined : encodeCbor(kcwt);
}

/**
 * Puts an enrolment into a signed packet's (or login's) unprotected header: {4: kid, 13: enrolment}.
 * The node's signature does not cover the unprotected header, so it stays valid; a label 13
 * already there is replaced. Only the kid is kept besides (the signers here write no other label).
 * @throws QisError ERR_COSE_MALFORMED | ERR_ENROLMENT_INVALID | ERR_PACKET_TOO_LARGE
 */
export function attachEnrolment(sign1: Uint8Array, enrolment: Uint8Array): Uint8Array {
  const msg = decodeSign1(sign1);
  const kid = msg.unprotected.get(4);
  if (!(kid instanceof Uint8Array)) refuse('ERR_COSE_MALFORMED', 'the message has no kid (4)');
  let e: CborValue;
  try {
    e = decodeCbor(enrolment, { maxDepth: 8 });
  } catch (err) {
    throw new QisError('ERR_ENROLMENT_INVALID', `not CBOR: ${(err as Error).message}`, { cause: err });
  }
  if (!(e instanceof CborTag) || e.tag !== COSE_SIGN1_TAG) refuse('ERR_ENROLMENT_INVALID', 'an enrolment is a COSE_Sign1 (CBOR tag 18)');
  const bytes = encodeWith((w) => {
    w.head(6, COSE_SIGN1_TAG);
    w.head(4, 4);
    w.byteString(msg.protectedBytes);
    w.head(5, 2);
    w.head(0, 4);
    w.byteString(kid);
    w.head(0, KCWT_LABEL);
    w.raw(enrolment);
    w.byteString(msg.payload);
    w.byteString(msg.signature);
  });
  if (bytes.length > MAX_PACKET_BYTES) {
    refuse('ERR_PACKET_TOO_LARGE', `with its enrolment the packet would be ${bytes.length} bytes; the limit is ${MAX_PACKET_BYTES} (shorten the packet or the enrolment's scope)`);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------- revocation

export interface RevocationFields {
  readonly seq: number;
  /** Unix ms. */
  readonly ts: number;
  /** Node ids the operator revokes (any order; written sorted, without duplicates). */
  readonly revoked: readonly string[];
}

export interface VerifiedRevocation {
  readonly topic: string;
  readonly operatorId: OperatorId;
  readonly seq: number;
  readonly ts: number;
  /** Node ids, in the list's (byte) order. */
  readonly revoked: readonly NodeId[];
  readonly bytes: Uint8Array;
}

export function revocationTopic(operatorId: string): string {
  return `${REVOCATION_TOPIC_PREFIX}${operatorId}`;
}

const idBytes = (id: string): Uint8Array => {
  const b = isNodeId(id) ? b32decode(id) : undefined;
  if (!b) refuse('ERR_INVALID_ARGUMENT', `"${id}" is not a node id`);
  return b;
};

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * Signs an operator's revocation list for `qis/1/r/<operatorId>` (PROTOCOL §10): the §5 envelope
 * with the operator key, payload {1: 1, 3: seq, 4: ts, 30: [node id bytes, sorted]}.
 * @throws QisError ERR_INVALID_ARGUMENT | ERR_PACKET_TOO_LARGE
 */
export function signRevocation(operator: NodeKey, fields: RevocationFields, options: { backend?: Ed25519Backend } = {}): { topic: string; packet: Uint8Array } {
  if (!isUint(fields.seq)) refuse('ERR_INVALID_ARGUMENT', `seq must be an integer ≥ 0, not ${fields.seq}`);
  if (!isUint(fields.ts)) refuse('ERR_INVALID_ARGUMENT', `ts must be Unix ms, not ${fields.ts}`);
  const ids = [...new Set(fields.revoked)].map(idBytes).sort(compareBytes);
  const topic = revocationTopic(operator.nodeId);
  const payload = encodeIntKeyMap([
    [1, 1],
    [3, fields.seq],
    [4, fields.ts],
    [30, ids],
  ]);
  return { topic, packet: signEnvelope(operator, topic, payload, options.backend, 'a list holds about 23 node ids at most') };
}

/**
 * Verifies a revocation list received on `topic`: the envelope (kid hashing to the topic's
 * operator id, signature with the topic as external_aad, ≤ 512 bytes), the payload form, the
 * node ids sorted ascending without duplicates, and ts within the skew when `maxSkewMs` is given.
 * @throws QisError ERR_REVOCATION_INVALID | the envelope codes of verifyPacket
 */
export function verifyRevocation(topic: string, bytes: Uint8Array, options: { now?: number; maxSkewMs?: number; backend?: Ed25519Backend } = {}): VerifiedRevocation {
  if (!topic.startsWith(REVOCATION_TOPIC_PREFIX) || !isNodeId(topic.slice(REVOCATION_TOPIC_PREFIX.length))) {
    refuse('ERR_REVOCATION_INVALID', `${topic} is not qis/1/r/<operatorId>`);
  }
  const operatorId = topic.slice(REVOCATION_TOPIC_PREFIX.length) as OperatorId;
  const { msg } = openEnvelope(topic, operatorId, bytes, options.backend);
  const m = payloadMap(msg.payload, 'ERR_REVOCATION_INVALID', 'payload', 4);
  if (m.get(1) !== 1) refuse('ERR_REVOCATION_INVALID', 'payload version (1) must be 1');
  const seq = m.get(3);
  const ts = m.get(4);
  if (!isUint(seq) || !isUint(ts)) refuse('ERR_REVOCATION_INVALID', 'seq (3) and ts (4) must be unsigned integers');
  const list = m.get(30);
  if (!Array.isArray(list)) refuse('ERR_REVOCATION_INVALID', 'the revoked list (30) must be an array');
  const revoked: NodeId[] = [];
  let prev: Uint8Array | undefined;
  for (const item of list) {
    if (!(item instanceof Uint8Array) || item.length !== 16) refuse('ERR_REVOCATION_INVALID', 'each revoked node id is a 16-byte byte string');
    if (prev && compareBytes(prev, item) >= 0) refuse('ERR_REVOCATION_INVALID', 'the revoked node ids must be sorted ascending, without duplicates');
    prev = item;
    revoked.push(b32(item) as NodeId);
  }
  if (options.maxSkewMs !== undefined && ts > (options.now ?? Date.now()) + options.maxSkewMs) {
    refuse('ERR_TS_FUTURE', `ts is ${ts - (options.now ?? Date.now())} ms in the future; allowed skew is ${options.maxSkewMs} ms`);
  }
  return { topic, operatorId, seq, ts, revoked, bytes };
}

/** Revoked node ids per operator, from verified lists (the highest seq of each operator wins). */
export function revocationIndex(lists: Iterable<VerifiedRevocation>): Map<string, ReadonlySet<string>> {
  const best = new Map<string, VerifiedRevocation>();
  for (const l of lists) {
    const held = best.get(l.operatorId);
    if (!held || l.seq > held.seq) best.set(l.operatorId, l);
  }
  return new Map([...best].map(([op, l]) => [op, new Set<string>(l.revoked)]));
}

/** Seconds until an enrolment expires at `now` (Unix ms); negative once it has. For "expires in 3 days" warnings. */
export function enrolmentExpiresIn(e: Enrolment, now: number): number {
  return e.exp - Math.floor(now / 1000);
}
