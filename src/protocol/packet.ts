/**
 * Outcome packets (PROTOCOL §5): COSE_Sign1 (RFC 9052) with Ed25519, kid = public key,
 * external_aad = the MQTT topic, at most 512 bytes.
 */
import { CborFloat, CborTag, decodeCbor, encodeCbor, encodeThen, encodeWith, type CborValue, type CborWriter } from './cbor.js';
import { equalBytes } from './bytes.js';
import { QisError, type ErrorCode } from './errors.js';
import { nodeIdOf, peerNodeId, signEd25519, verifyEd25519, type Ed25519Backend, type NodeId, type NodeKey } from './identity.js';
import { parseOutcomeTopic } from './fingerprint.js';
import { readCanonical } from './packet-fast.js';
import type { TplId } from './template.js';
import type { Outcome, PayloadFields } from './payload-fields.js';

export type { Outcome, PayloadFields } from './payload-fields.js';

/** The largest packet anyone may send or store (PROTOCOL §5). */
export const MAX_PACKET_BYTES = 512;
/** COSE algorithm ids: Ed25519 (RFC 9864, emitted) and EdDSA (RFC 9053, accepted). */
export const ALG_ED25519 = -19;
export const ALG_EDDSA = -8;
export const COSE_SIGN1_TAG = 18;

/** Payload fields a signer supplies (PROTOCOL §5 table). `v` is always 1. */
export interface PacketFields {
  readonly fp: Uint8Array;
  readonly seq: number;
  readonly ts: number;
  readonly out?: Outcome;
  readonly conf?: number;
  readonly n?: number;
  readonly ctx?: { readonly [key: string]: number };
  readonly exp?: number;
  /** true: a tombstone that withdraws the node's packet. */
  readonly del?: boolean;
}

/** The parts of a COSE_Sign1 message (RFC 9052 §4.2), as received. */
export interface Sign1 {
  readonly protectedBytes: Uint8Array;
  readonly alg: typeof ALG_ED25519 | typeof ALG_EDDSA;
  readonly unprotected: ReadonlyMap<CborValue, CborValue>;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/** A packet decoded without checking its signature (see {@link verifyPacket} for that). */
export interface DecodedPacket extends PayloadFields {
  readonly alg: Sign1['alg'];
  readonly publicKey: Uint8Array;
  /** The node id of the packet's key (not of any topic). */
  readonly nodeId: NodeId;
  readonly size: number;
  /**
   * The enrolment carried in the unprotected header under label 13 (PROTOCOL §10), as CBOR bytes
   * (the COSE_Sign1 written deterministically), unchecked: the node's signature does not cover it,
   * so it never makes a packet invalid; verify it with `checkPacketEnrolment` (enrolment.ts).
   */
  readonly enrolment?: Uint8Array;
}

/** A packet that passed every check of {@link verifyPacket}. */
export interface VerifiedPacket extends DecodedPacket {
  readonly topic: string;
  readonly tplId: TplId;
  readonly levels: readonly string[];
  /** The bytes as received (what a broker stores and forwards). */
  readonly bytes: Uint8Array;
}

export interface VerifyOptions {
  /** Ed25519 implementation; both apply the same policy. Default `node`. */
  readonly backend?: Ed25519Backend;
  /** Current time in Unix ms for the expiry and skew checks. Default `Date.now()`. */
  readonly now?: number;
  /** Refuse with ERR_FP_MISMATCH unless the packet's fp equals this (an exact-cohort query). */
  readonly expectFp?: Uint8Array;
  /** Refuse with ERR_TS_FUTURE when ts is more than this many ms ahead of `now` (a broker's skew). */
  readonly maxSkewMs?: number;
  /** Number of routed fields of the template, when known: the topic must have that many levels. */
  readonly depth?: number;
}

// PROTOCOL §5: the protected header every signer emits, {1: -19}.
const PROTECTED_ED25519 = encodeCbor(new Map([[1, ALG_ED25519]]));

function refuse(code: ErrorCode, message: string): never {
  throw new QisError(code, message);
}

// ---------------------------------------------------------------------------------- signing

export const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** Where the protocol takes any number, any width counts (§1): a decoded float is its value, and an
 *  integer beyond 2^53 (a bigint from the decoder) is the nearest number. */
export const num = (v: unknown): unknown => (v instanceof CborFloat ? v.value : typeof v === 'bigint' ? Number(v) : v);

/**
 * Checks that a value has the type of PROTOCOL §5 `out` (text, finite number, or map of text to
 * text/number) and returns it as a plain value (maps as null-prototype objects).
 */
export function checkOutcome(value: unknown, code: ErrorCode): Outcome {
  const out = num(value);
  if (typeof out === 'string') return out;
  if (typeof out === 'number') {
    if (!Number.isFinite(out)) refuse(code, `out must be a finite number, not ${out}`);
    return out;
  }
  if (isMapLike(out)) {
    return checkMap(out, code, 'out', (v): v is string | number => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v)), 'text or a finite number');
  }
  return refuse(code, 'out must be a text label, a number or a map of text to text/number');
}

function checkCtx(ctx: unknown, code: ErrorCode): { [key: string]: number } {
  if (!isMapLike(ctx)) refuse(code, 'ctx must be a map of text to number');
  return checkMap(ctx, code, 'ctx', (v): v is number => typeof v === 'number' && Number.isFinite(v), 'a finite number');
}

/** A decoded CBOR map, or a caller's plain object; not a tag, a simple value, an array or bytes. */
function isMapLike(v: unknown): v is object {
  if (v instanceof Map) return true;
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * Checks a map of text keys. A decoded `Map` becomes a null-prototype object (so a key named
 * "__proto__" stays data); a caller's plain object is checked and used as it is (no copy: it is
 * only read, by the encoder, before the call returns).
 */
function checkMap<V>(m: object, code: ErrorCode, name: string, ok: (v: unknown) => v is V, what: string): { [key: string]: V } {
  if (!(m instanceof Map)) {
    for (const k of Object.keys(m)) {
      if (!ok(num((m as Record<string, unknown>)[k]))) refuse(code, `${name}["${k}"] must be ${what}`);
    }
    return m as { [key: string]: V };
  }
  const obj = Object.create(null) as { [key: string]: V };
  for (const [k, raw] of m) {
    const v = num(raw);
    if (typeof k !== 'string') refuse(code, `${name} map keys must be text`);
    if (!ok(v)) refuse(code, `${name}["${k}"] must be ${what}`);
    obj[k] = v;
  }
  return obj;
}

/**
 * The deterministic CBOR payload of PROTOCOL §5 (keys ascending, v = 1).
 * @throws QisError ERR_PACKET_FIELD | ERR_OUTCOME_INVALID
 */
export function encodePayload(f: PacketFields): Uint8Array {
  if (!(f.fp instanceof Uint8Array) || f.fp.length !== 16) refuse('ERR_PACKET_FIELD', 'fp must be 16 bytes');
  if (!isUint(f.seq)) refuse('ERR_PACKET_FIELD', `seq must be an integer from 0 to 2^53-1, not ${f.seq}`);
  if (!isUint(f.ts)) refuse('ERR_PACKET_FIELD', `ts must be Unix milliseconds (an integer ≥ 0), not ${f.ts}`);
  if (f.out === undefined && f.del !== true) refuse('ERR_OUTCOME_INVALID', 'out is required unless the packet is a tombstone (del)');
  const out = f.out === undefined ? undefined : checkOutcome(f.out, 'ERR_OUTCOME_INVALID');
  if (f.conf !== undefined && (typeof f.conf !== 'number' || !(f.conf >= 0 && f.conf <= 1))) {
    refuse('ERR_PACKET_FIELD', `conf must be a number from 0 to 1, not ${f.conf}`);
  }
  if (f.n !== undefined && (!isUint(f.n) || f.n < 1)) refuse('ERR_PACKET_FIELD', `n must be an integer ≥ 1, not ${f.n}`);
  const ctx = f.ctx === undefined ? undefined : checkCtx(f.ctx, 'ERR_PACKET_FIELD');
  if (f.exp !== undefined && !isUint(f.exp)) refuse('ERR_PACKET_FIELD', `exp must be Unix seconds (an integer ≥ 0), not ${f.exp}`);
  if (f.del !== undefined && f.del !== true && f.del !== false) refuse('ERR_PACKET_FIELD', 'del must be a boolean (true writes a tombstone)');
  const del = f.del === true;
  // Keys written in ascending order, which is the deterministic order (PROTOCOL §1).
  const entries: Array<[number, CborValue | undefined]> = [
    [1, 1],
    [2, f.fp],
    [3, f.seq],
    [4, f.ts],
    [5, out],
    [6, f.conf],
    [7, f.n],
    [8, ctx],
    [9, f.exp],
    [10, del ? true : undefined],
  ];
  return encodeIntKeyMap(entries);
}

/**
 * A CBOR map with unsigned integer keys from `entries` given in ascending key order (the
 * deterministic order, PROTOCOL §1); entries whose value is undefined are left out.
 */
export function encodeIntKeyMap(entries: ReadonlyArray<readonly [number, CborValue | undefined]>): Uint8Array {
  return encodeWith((w) => {
    let count = 0;
    for (const [, v] of entries) if (v !== undefined) count++;
    w.head(5, count);
    for (const [k, v] of entries) {
      if (v === undefined) continue;
      w.head(0, k);
      w.value(v);
    }
  });
}

/** `Sig_structure = ["Signature1", protected, external_aad, payload]` (RFC 9052 §4.4). */
export function sigStructure(protectedBytes: Uint8Array, externalAad: Uint8Array | string, payload: Uint8Array): Uint8Array {
  return encodeWith(writeSigStructure(protectedBytes, externalAad, payload));
}

function writeSigStructure(protectedBytes: Uint8Array, externalAad: Uint8Array | string, payload: Uint8Array): (w: CborWriter) => void {
  return (w) => {
    w.head(4, 4);
    w.string(3, 'Signature1');
    w.byteString(protectedBytes);
    // PROTOCOL §5: external_aad is the UTF-8 bytes of the topic; a string is written as those bytes.
    if (typeof externalAad === 'string') w.string(2, externalAad);
    else w.byteString(externalAad);
    w.byteString(payload);
  };
}

// The topic each key last signed on, already checked (signPacket).
const checkedTopics = new WeakMap<NodeKey, string>();

/**
 * Signs payload fields for a topic and returns the COSE_Sign1 bytes.
 * The topic must be an outcome topic of this key's node.
 * @throws QisError ERR_TOPIC_INVALID | ERR_NODE_MISMATCH | ERR_PACKET_FIELD | ERR_OUTCOME_INVALID | ERR_PACKET_TOO_LARGE
 * @example const bytes = signPacket(key, outcomeTopic(addr, key.nodeId), { fp: addr.fp, seq: 1, ts: Date.now(), out: 'failure' })
 */
export function signPacket(key: NodeKey, topic: string, fields: PacketFields, options: { backend?: Ed25519Backend } = {}): Uint8Array {
  // A node signs on the same topic again and again: the last topic checked for a key is remembered.
  if (checkedTopics.get(key) !== topic) {
    const parsed = parseOutcomeTopic(topic);
    if (parsed.nodeId !== key.nodeId) refuse('ERR_NODE_MISMATCH', `topic belongs to node ${parsed.nodeId}, the key is ${key.nodeId}`);
    checkedTopics.set(key, topic);
  }
  return signEnvelope(key, topic, encodePayload(fields), options.backend, 'shorten out or ctx');
}

/**
 * The COSE_Sign1 envelope of PROTOCOL §5 around any payload (outcome packets here, score packets
 * in score.ts): protected {1: -19}, kid = public key, external_aad = the topic, ≤ 512 bytes.
 * The caller has checked that the topic belongs to `key`.
 * @throws QisError ERR_PACKET_TOO_LARGE
 */
export function signEnvelope(key: NodeKey, topic: string, payload: Uint8Array, backend?: Ed25519Backend, hint = 'shorten the payload'): Uint8Array {
  // The Sig_structure is signed straight from the encoder's buffer (no copy): signing is synchronous.
  const signature = encodeThen(writeSigStructure(PROTECTED_ED25519, topic, payload), (toSign) => signEd25519(key, toSign, backend));
  // 18([protected, {4: kid}, payload, signature]), written in order.
  const bytes = encodeWith((w) => {
    w.head(6, COSE_SIGN1_TAG);
    w.head(4, 4);
    w.byteString(PROTECTED_ED25519);
    w.head(5, 1);
    w.head(0, 4);
    w.byteString(key.publicKey);
    w.byteString(payload);
    w.byteString(signature);
  });
  if (bytes.length > MAX_PACKET_BYTES) {
    refuse('ERR_PACKET_TOO_LARGE', `packet would be ${bytes.length} bytes; the limit is ${MAX_PACKET_BYTES} (${hint})`);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------- decoding

/**
 * Decodes a COSE_Sign1 message (tag 18 required) and its protected header. Does not verify.
 * @throws QisError ERR_CBOR_MALFORMED | ERR_COSE_MALFORMED | ERR_UNSUPPORTED_ALG
 */
export function decodeSign1(bytes: Uint8Array): Sign1 {
  // markFloats: header labels and alg are integers; 1.0 is not 1 here (RFC 9052 §3).
  const top = decodeCbor(bytes, { maxDepth: 8, markFloats: true });
  if (!(top instanceof CborTag) || top.tag !== COSE_SIGN1_TAG) refuse('ERR_COSE_MALFORMED', 'not a COSE_Sign1 message (CBOR tag 18)');
  const arr = top.value;
  if (!Array.isArray(arr) || arr.length !== 4) refuse('ERR_COSE_MALFORMED', 'COSE_Sign1 must be an array of 4 items');
  const [protectedBytes, unprotected, payload, signature] = arr as [CborValue, CborValue, CborValue, CborValue];
  if (!(protectedBytes instanceof Uint8Array)) refuse('ERR_COSE_MALFORMED', 'protected header must be a byte string');
  if (!(unprotected instanceof Map)) refuse('ERR_COSE_MALFORMED', 'unprotected header must be a map');
  if (!(payload instanceof Uint8Array)) refuse('ERR_COSE_MALFORMED', 'payload must be a byte string (detached payloads are not used)');
  if (!(signature instanceof Uint8Array)) refuse('ERR_COSE_MALFORMED', 'signature must be a byte string');
  if (protectedBytes.length === 0) refuse('ERR_COSE_MALFORMED', 'protected header is empty; alg must be protected');
  let header: CborValue;
  try {
    header = decodeCbor(protectedBytes, { maxDepth: 4, markFloats: true });
  } catch (e) {
    throw new QisError('ERR_COSE_MALFORMED', `protected header: ${(e as Error).message}`, { cause: e });
  }
  if (!(header instanceof Map)) refuse('ERR_COSE_MALFORMED', 'protected header must be a map');
  if (header.has(2)) refuse('ERR_COSE_MALFORMED', 'critical header parameters (crit) are not supported');
  const alg = header.get(1);
  if (alg === undefined) refuse('ERR_COSE_MALFORMED', 'protected header has no alg (1)');
  if (alg !== ALG_ED25519 && alg !== ALG_EDDSA) {
    const shown = alg instanceof CborFloat ? `${alg.value} (a float)` : typeof alg === 'object' ? 'of a non-integer type' : String(alg);
    refuse('ERR_UNSUPPORTED_ALG', `alg ${shown} is not Ed25519 (-19) or EdDSA (-8)`);
  }
  return { protectedBytes, alg, unprotected, payload, signature };
}

/** Verifies a COSE_Sign1 signature with a given Ed25519 public key and external_aad. */
export function verifySign1(msg: Pick<Sign1, 'protectedBytes' | 'payload' | 'signature'>, publicKey: Uint8Array, externalAad: Uint8Array | string, backend?: Ed25519Backend): boolean {
  return encodeThen(writeSigStructure(msg.protectedBytes, externalAad, msg.payload), (toVerify) =>
    verifyEd25519(msg.signature, toVerify, publicKey, backend),
  );
}

function uintField(m: Map<CborValue, CborValue>, key: number, name: string): number | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v === 'bigint') refuse('ERR_PAYLOAD_INVALID', `${name} ${v} is above 2^53-1, which this implementation does not accept`);
  if (!isUint(v)) refuse('ERR_PAYLOAD_INVALID', `${name} must be an unsigned integer`);
  return v;
}

/**
 * Decodes and type-checks a payload (PROTOCOL §5 table).
 * @throws QisError ERR_CBOR_MALFORMED | ERR_PAYLOAD_INVALID | ERR_UNSUPPORTED_VERSION
 */
export function decodePayload(payload: Uint8Array): PayloadFields {
  // markFloats: "uint" fields must be CBOR integers, not floats that happen to be whole.
  const m = decodeCbor(payload, { markFloats: true });
  if (!(m instanceof Map)) refuse('ERR_PAYLOAD_INVALID', 'payload must be a CBOR map');
  const v = m.get(1);
  if (v === undefined) refuse('ERR_PAYLOAD_INVALID', 'payload has no version (1)');
  if (!isUint(v)) refuse('ERR_PAYLOAD_INVALID', 'version (1) must be an unsigned integer');
  if (v !== 1) refuse('ERR_UNSUPPORTED_VERSION', `payload version ${v} is not 1`);
  const fp = m.get(2);
  if (!(fp instanceof Uint8Array) || fp.length !== 16) refuse('ERR_PAYLOAD_INVALID', 'fp (2) must be a 16-byte byte string');
  const seq = uintField(m, 3, 'seq (3)');
  if (seq === undefined) refuse('ERR_PAYLOAD_INVALID', 'payload has no seq (3)');
  const ts = uintField(m, 4, 'ts (4)');
  if (ts === undefined) refuse('ERR_PAYLOAD_INVALID', 'payload has no ts (4)');
  // §5 writes del only as true; a false from another signer is read as "not a tombstone".
  const del = m.get(10);
  if (del !== undefined && typeof del !== 'boolean') refuse('ERR_PAYLOAD_INVALID', 'del (10) must be a boolean');
  const rawOut = m.get(5);
  if (rawOut === undefined && del !== true) refuse('ERR_PAYLOAD_INVALID', 'payload has no out (5) and is not a tombstone');
  const out = rawOut === undefined ? undefined : checkOutcome(rawOut, 'ERR_PAYLOAD_INVALID');
  const conf = num(m.get(6));
  if (conf !== undefined && !(typeof conf === 'number' && conf >= 0 && conf <= 1)) {
    refuse('ERR_PAYLOAD_INVALID', 'conf (6) must be a number from 0 to 1');
  }
  const n = uintField(m, 7, 'n (7)');
  if (n === 0) refuse('ERR_PAYLOAD_INVALID', 'n (7) must be at least 1');
  const rawCtx = m.get(8);
  const ctx = rawCtx === undefined ? undefined : checkCtx(rawCtx, 'ERR_PAYLOAD_INVALID');
  const exp = uintField(m, 9, 'exp (9)');
  const extra = new Map<CborValue, CborValue>();
  for (const [k, val] of m) {
    if (!(typeof k === 'number' && k >= 1 && k <= 10 && Number.isInteger(k))) extra.set(k, val);
  }
  // Built by assignment: on Node 20 each property after an object spread takes a slow path.
  const p: Mutable<PayloadFields> = { v: 1, fp, seq, ts, conf: conf ?? 1, n: n ?? 1, del: del === true, extra };
  if (out !== undefined) p.out = out;
  if (ctx !== undefined) p.ctx = ctx;
  if (exp !== undefined) p.exp = exp;
  return p;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Adds the envelope's facts to decoded payload fields (by assignment, see decodePayload). */
function withEnvelope(fields: PayloadFields, msg: Pick<Sign1, 'alg'> & { unprotected?: Sign1['unprotected'] }, publicKey: Uint8Array, nodeId: NodeId, size: number): DecodedPacket {
  const p = fields as Mutable<DecodedPacket>;
  p.alg = msg.alg;
  p.publicKey = publicKey;
  p.nodeId = nodeId;
  p.size = size;
  // PROTOCOL §10: label 13 (kcwt) is carried for the enrolment checks, not judged here.
  const kcwt = msg.unprotected?.get(13);
  if (kcwt !== undefined) p.enrolment = receivedSign1(kcwt) ?? encodeCbor(kcwt);
  return p;
}

/**
 * The bytes as received of a decoded COSE_Sign1 written with one-byte heads (tag 18 = d2, array
 * 84, a protected header under 24 bytes), as every conforming signer writes it: the decoder's
 * byte strings are views of the input, so the item runs from 3 bytes before its protected header
 * to the end of its signature. Undefined for any other form (the caller re-encodes it): each of
 * those three bytes is the last byte of its head only in the one-byte form.
 */
function receivedSign1(v: CborValue): Uint8Array | undefined {
  if (!(v instanceof CborTag) || v.tag !== COSE_SIGN1_TAG || !Array.isArray(v.value) || v.value.length !== 4) return undefined;
  const prot = v.value[0];
  const sig = v.value[3];
  if (!(prot instanceof Uint8Array) || !(sig instanceof Uint8Array) || prot.buffer !== sig.buffer || prot.length >= 24) return undefined;
  const start = prot.byteOffset - 3;
  if (start < 0) return undefined;
  const item = new Uint8Array(prot.buffer, start, sig.byteOffset + sig.length - start);
  return item[0] === 0xd2 && item[1] === 0x84 && item[2] === 0x40 + prot.length ? item : undefined;
}

function kidOf(msg: Sign1): Uint8Array {
  const kid = msg.unprotected.get(4);
  if (!(kid instanceof Uint8Array) || kid.length !== 32) refuse('ERR_COSE_MALFORMED', 'kid (4) must be the 32-byte Ed25519 public key');
  return kid;
}

function checkSize(bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array)) refuse('ERR_INVALID_ARGUMENT', 'packet must be a Uint8Array');
  if (bytes.length === 0) refuse('ERR_PACKET_EMPTY', 'empty payload (an MQTT retained delete); only a signed tombstone removes a packet');
  // Checked before decoding: nothing larger is ever parsed.
  if (bytes.length > MAX_PACKET_BYTES) refuse('ERR_PACKET_TOO_LARGE', `packet is ${bytes.length} bytes; the limit is ${MAX_PACKET_BYTES}`);
}

/** What {@link openEnvelope} found: the message, its key and that key's node id. */
export interface OpenedEnvelope {
  readonly msg: Sign1;
  readonly publicKey: Uint8Array;
  readonly nodeId: NodeId;
}

/**
 * The envelope checks shared by every signed qis packet (outcome §5, score §9): size, COSE
 * structure and alg, kid hashing to the topic's node id, and the signature over the bytes
 * received with the topic as external_aad. The payload is left to the caller.
 * @throws QisError ERR_PACKET_EMPTY | ERR_PACKET_TOO_LARGE | ERR_CBOR_MALFORMED | ERR_COSE_MALFORMED | ERR_UNSUPPORTED_ALG | ERR_NODE_MISMATCH | ERR_BAD_SIGNATURE
 */
export function openEnvelope(topic: string, topicNodeId: string, bytes: Uint8Array, backend?: Ed25519Backend): OpenedEnvelope {
  checkSize(bytes);
  const msg = decodeSign1(bytes);
  const publicKey = kidOf(msg);
  return { msg, publicKey, nodeId: checkSigner(topic, topicNodeId, msg, publicKey, backend) };
}

/** The key's node owns the topic and its signature verifies: the node id. */
function checkSigner(topic: string, topicNodeId: string, msg: Pick<Sign1, 'protectedBytes' | 'payload' | 'signature'>, publicKey: Uint8Array, backend?: Ed25519Backend): NodeId {
  const nodeId = peerNodeId(publicKey);
  if (nodeId !== topicNodeId) refuse('ERR_NODE_MISMATCH', `key of node ${nodeId} signed a packet on node ${topicNodeId}'s topic`);
  if (!verifySign1(msg, publicKey, topic, backend)) refuse('ERR_BAD_SIGNATURE', 'signature does not verify for this topic');
  return nodeId;
}

/**
 * Decodes a packet without a topic, so without checking its signature (`qis decode`).
 * @throws QisError (the decoding codes of {@link verifyPacket})
 */
export function decodePacket(bytes: Uint8Array): DecodedPacket {
  checkSize(bytes);
  const msg = decodeSign1(bytes);
  const publicKey = kidOf(msg);
  return withEnvelope(decodePayload(msg.payload), msg, publicKey, nodeIdOf(publicKey), bytes.length);
}

/**
 * Verifies a packet received on `topic` (PROTOCOL §5, and §6's per-packet checks): size, topic
 * form, COSE structure and alg, kid owning the topic's node id, the signature over the bytes
 * received with the topic as external_aad, payload types, then fp, expiry and skew as asked.
 *
 * @throws QisError with the code of the first check that fails
 * @example
 * const p = verifyPacket(topic, bytes, { expectFp: myAddress.fp })
 * console.log(p.nodeId, p.seq, p.out)
 */
export function verifyPacket(topic: string, bytes: Uint8Array, options: VerifyOptions = {}): VerifiedPacket {
  checkSize(bytes);
  const parsed = parseOutcomeTopic(topic, options.depth);
  // The usual form is read straight from the bytes (packet-fast.ts); anything else, and anything
  // refused, by the full decoder, whose codes come first in the same order either way.
  const fast = readCanonical(bytes);
  let fields: PayloadFields;
  let envelope: Pick<Sign1, 'alg'> & { unprotected?: Sign1['unprotected'] };
  let publicKey: Uint8Array;
  let nodeId: NodeId;
  if (fast) {
    ({ fields, publicKey } = fast);
    envelope = fast;
    nodeId = checkSigner(topic, parsed.nodeId, fast, publicKey, options.backend);
  } else {
    const opened = openEnvelope(topic, parsed.nodeId, bytes, options.backend);
    ({ publicKey, nodeId } = opened);
    envelope = opened.msg;
    fields = decodePayload(opened.msg.payload);
  }
  if (options.expectFp && !equalBytes(fields.fp, options.expectFp)) refuse('ERR_FP_MISMATCH', 'fp is not the fingerprint of this cohort');
  const now = options.now ?? Date.now();
  if (fields.exp !== undefined && now > fields.exp * 1000) {
    refuse('ERR_EXPIRED', `packet expired at ${new Date(fields.exp * 1000).toISOString()}`);
  }
  if (options.maxSkewMs !== undefined && fields.ts > now + options.maxSkewMs) {
    refuse('ERR_TS_FUTURE', `ts is ${fields.ts - now} ms in the future; allowed skew is ${options.maxSkewMs} ms`);
  }
  const p = withEnvelope(fields, envelope, publicKey, nodeId, bytes.length) as Mutable<VerifiedPacket>;
  p.topic = topic;
  p.tplId = parsed.tplId;
  p.levels = parsed.levels;
  p.bytes = bytes;
  return p;
}

/** Result form of {@link verifyPacket} for hot paths that count refusals instead of catching. */
export type CheckResult = { ok: true; packet: VerifiedPacket } | { ok: false; code: ErrorCode; message: string };

/** {@link verifyPacket} without throwing. */
export function checkPacket(topic: string, bytes: Uint8Array, options: VerifyOptions = {}): CheckResult {
  try {
    return { ok: true, packet: verifyPacket(topic, bytes, options) };
  } catch (e) {
    if (e instanceof QisError) return { ok: false, code: e.code, message: e.message };
    throw e;
  }
}
