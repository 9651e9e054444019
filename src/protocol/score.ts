/**
 * Score packets (PROTOCOL §9): a node's running track record for one template, retained on
 * `qis/1/s/<tplId>/<nodeId>`. Same COSE_Sign1 envelope as outcome packets (packet.ts
 * `signEnvelope` / `openEnvelope`), a different payload: keys 1, 3, 4 and 20..24, no fp or out.
 *
 * Key 25 (`rel`, a reliability histogram) is this implementation's optional extension, an unknown
 * key to other implementations (kept and ignored, PROTOCOL §5): docs/protocol-choices.md.
 */
import { decodeCbor, encodeWith, type CborValue } from './cbor.js';
import { QisError, type ErrorCode } from './errors.js';
import { isNodeId, type Ed25519Backend, type NodeId, type NodeKey } from './identity.js';
import { encodeIntKeyMap, isUint, num, openEnvelope, signEnvelope } from './packet.js';
import { isTplId, type TplId } from './template.js';

/** Bins of the reliability histogram (key 25): predicted probability in [i/10, (i+1)/10). */
export const REL_BINS = 10;

/** What a node signs in a score packet. Means are over the `k` scored predictions. */
export interface ScoreFields {
  readonly seq: number;
  readonly ts: number;
  /** Predictions scored so far (key 20). */
  readonly k: number;
  /** Mean Brier score, categorical outcomes (key 21). */
  readonly brier?: number;
  /** Predictions whose most probable label came true (key 22). */
  readonly hits?: number;
  /** Mean absolute error, numeric outcomes (key 23). */
  readonly mae?: number;
  /** Unix s of the first scored prediction (key 24). */
  readonly since?: number;
  /**
   * Key 25 (extension): `[n_0, y_0, …, n_9, y_9]`: of all (prediction, label) pairs, n_i had the
   * label's predicted probability in bin i, and y_i of those the label came true.
   */
  readonly rel?: readonly number[];
}

/** A score packet that passed {@link verifyScorePacket}. */
export interface VerifiedScore extends ScoreFields {
  readonly topic: string;
  readonly tplId: TplId;
  readonly nodeId: NodeId;
  readonly publicKey: Uint8Array;
  readonly bytes: Uint8Array;
  /** Payload keys this implementation does not know, kept as received. */
  readonly extra: ReadonlyMap<CborValue, CborValue>;
}

const SCORE_TOPIC_RE = /^qis\/1\/s\/([a-z2-7]{25}[aeimquy4])\/([a-z2-7]{25}[aeimquy4])$/;

/** `qis/1/s/<tplId>/<nodeId>`. @throws QisError ERR_INVALID_ARGUMENT */
export function scoreTopic(tplId: string, nodeId: string): string {
  if (!isTplId(tplId)) throw new QisError('ERR_INVALID_ARGUMENT', `${JSON.stringify(tplId)} is not a template id`);
  if (!isNodeId(nodeId)) throw new QisError('ERR_INVALID_ARGUMENT', `${JSON.stringify(nodeId)} is not a node id`);
  return `qis/1/s/${tplId}/${nodeId}`;
}

/** The track record of a template: `qis/1/s/<tplId>/+`. */
export function scoreFilter(tplId: string): string {
  if (!isTplId(tplId)) throw new QisError('ERR_INVALID_ARGUMENT', `${JSON.stringify(tplId)} is not a template id`);
  return `qis/1/s/${tplId}/+`;
}

/** Parses `qis/1/s/<tplId>/<nodeId>`. @throws QisError ERR_TOPIC_INVALID */
export function parseScoreTopic(topic: string): { tplId: TplId; nodeId: NodeId } {
  const m = typeof topic === 'string' ? SCORE_TOPIC_RE.exec(topic) : null;
  if (!m) {
    const shown = typeof topic === 'string' ? JSON.stringify(topic.slice(0, 200)) : `(a ${typeof topic})`;
    throw new QisError('ERR_TOPIC_INVALID', `topic ${shown} is not a score topic qis/1/s/<tplId>/<nodeId>`);
  }
  return { tplId: m[1] as TplId, nodeId: m[2] as NodeId };
}

function refuse(code: ErrorCode, message: string): never {
  throw new QisError(code, message);
}

const finiteNonNeg = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

function checkRel(rel: unknown, code: ErrorCode): number[] {
  if (!Array.isArray(rel) || rel.length !== 2 * REL_BINS) refuse(code, `rel (25) must be an array of ${2 * REL_BINS} unsigned integers`);
  const out: number[] = [];
  for (let i = 0; i < rel.length; i += 2) {
    const n = rel[i] as unknown;
    const y = rel[i + 1] as unknown;
    if (!isUint(n) || !isUint(y) || y > n) refuse(code, `rel (25) bin ${i / 2}: counts must be unsigned integers with y ≤ n`);
    out.push(n, y);
  }
  return out;
}

/** Checks score fields (signer side and decoder side share the rules). */
function checkFields(f: ScoreFields, code: ErrorCode): void {
  if (!isUint(f.seq)) refuse(code, `seq must be an integer from 0 to 2^53-1, not ${String(f.seq)}`);
  if (!isUint(f.ts)) refuse(code, `ts must be Unix milliseconds (an integer ≥ 0), not ${String(f.ts)}`);
  if (!isUint(f.k)) refuse(code, `k (20) must be an unsigned integer, not ${String(f.k)}`);
  if (f.brier !== undefined && !(finiteNonNeg(f.brier) && f.brier <= 2)) refuse(code, `brier (21) must be a number from 0 to 2, not ${String(f.brier)}`);
  if (f.hits !== undefined && !(isUint(f.hits) && f.hits <= f.k)) refuse(code, `hits (22) must be an unsigned integer ≤ k, not ${String(f.hits)}`);
  if (f.mae !== undefined && !finiteNonNeg(f.mae)) refuse(code, `mae (23) must be a finite number ≥ 0, not ${String(f.mae)}`);
  if (f.since !== undefined && !isUint(f.since)) refuse(code, `since (24) must be Unix seconds, not ${String(f.since)}`);
}

/**
 * The deterministic CBOR payload of a score packet (keys ascending, v = 1).
 * @throws QisError ERR_PACKET_FIELD
 */
export function encodeScorePayload(f: ScoreFields): Uint8Array {
  checkFields(f, 'ERR_PACKET_FIELD');
  const rel = f.rel === undefined ? undefined : checkRel(f.rel, 'ERR_PACKET_FIELD');
  const entries: Array<[number, CborValue | undefined]> = [
    [1, 1],
    [3, f.seq],
    [4, f.ts],
    [20, f.k],
    [21, f.brier],
    [22, f.hits],
    [23, f.mae],
    [24, f.since],
    [25, rel],
  ];
  return encodeIntKeyMap(entries);
}

/**
 * Signs a score packet for `key`'s node on `qis/1/s/<tplId>/<nodeId>`.
 * @throws QisError ERR_INVALID_ARGUMENT | ERR_PACKET_FIELD | ERR_PACKET_TOO_LARGE
 * @example const { topic, bytes } = signScorePacket(key, tpl.tplId, { seq: 1, ts: Date.now(), k: 4, brier: 0.21, hits: 3, since: 1790000000 })
 */
export function signScorePacket(key: NodeKey, tplId: string, fields: ScoreFields, options: { backend?: Ed25519Backend } = {}): { topic: string; bytes: Uint8Array } {
  const topic = scoreTopic(tplId, key.nodeId);
  return { topic, bytes: signEnvelope(key, topic, encodeScorePayload(fields), options.backend, 'the score payload is too large') };
}

/**
 * Decodes and type-checks a score payload (PROTOCOL §9 table).
 * @throws QisError ERR_CBOR_MALFORMED | ERR_PAYLOAD_INVALID | ERR_UNSUPPORTED_VERSION
 */
export function decodeScorePayload(payload: Uint8Array): ScoreFields & { extra: ReadonlyMap<CborValue, CborValue> } {
  const m = decodeCbor(payload, { markFloats: true });
  if (!(m instanceof Map)) refuse('ERR_PAYLOAD_INVALID', 'payload must be a CBOR map');
  const uint = (key: number, name: string): number | undefined => {
    const v = m.get(key);
    if (v === undefined) return undefined;
    if (!isUint(v)) refuse('ERR_PAYLOAD_INVALID', `${name} (${key}) must be an unsigned integer`);
    return v;
  };
  const v = uint(1, 'version');
  if (v === undefined) refuse('ERR_PAYLOAD_INVALID', 'payload has no version (1)');
  if (v !== 1) refuse('ERR_UNSUPPORTED_VERSION', `payload version ${v} is not 1`);
  const seq = uint(3, 'seq');
  const ts = uint(4, 'ts');
  const k = uint(20, 'k');
  if (seq === undefined || ts === undefined || k === undefined) refuse('ERR_PAYLOAD_INVALID', 'a score payload needs seq (3), ts (4) and k (20)');
  const brier = num(m.get(21));
  const mae = num(m.get(23));
  if (brier !== undefined && typeof brier !== 'number') refuse('ERR_PAYLOAD_INVALID', 'brier (21) must be a number');
  if (mae !== undefined && typeof mae !== 'number') refuse('ERR_PAYLOAD_INVALID', 'mae (23) must be a number');
  const hits = uint(22, 'hits');
  const since = uint(24, 'since');
  const relRaw = m.get(25);
  const rel = relRaw === undefined ? undefined : checkRel(relRaw, 'ERR_PAYLOAD_INVALID');
  const f: { -readonly [K in keyof ScoreFields]: ScoreFields[K] } = { seq, ts, k };
  if (brier !== undefined) f.brier = brier;
  if (hits !== undefined) f.hits = hits;
  if (mae !== undefined) f.mae = mae;
  if (since !== undefined) f.since = since;
  if (rel !== undefined) f.rel = rel;
  checkFields(f, 'ERR_PAYLOAD_INVALID');
  const extra = new Map<CborValue, CborValue>();
  for (const [key, val] of m) if (!(typeof key === 'number' && [1, 3, 4, 20, 21, 22, 23, 24, 25].includes(key))) extra.set(key, val);
  return { ...f, extra };
}

export interface ScoreVerifyOptions {
  readonly backend?: Ed25519Backend;
  /** Unix ms for the skew check. Default `Date.now()`. */
  readonly now?: number;
  /** Refuse with ERR_TS_FUTURE when ts is more than this many ms ahead of `now`. */
  readonly maxSkewMs?: number;
}

/**
 * Verifies a score packet received on `topic`: the shared envelope checks (size, COSE, owner =
 * H(kid), signature with the topic as external_aad), then the §9 payload, then skew if asked.
 * @throws QisError with the code of the first check that fails
 */
export function verifyScorePacket(topic: string, bytes: Uint8Array, options: ScoreVerifyOptions = {}): VerifiedScore {
  const parsed = parseScoreTopic(topic);
  const { msg, publicKey, nodeId } = openEnvelope(topic, parsed.nodeId, bytes, options.backend);
  const f = decodeScorePayload(msg.payload);
  const now = options.now ?? Date.now();
  if (options.maxSkewMs !== undefined && f.ts > now + options.maxSkewMs) {
    refuse('ERR_TS_FUTURE', `ts is ${f.ts - now} ms in the future; allowed skew is ${options.maxSkewMs} ms`);
  }
  return { ...f, topic, tplId: parsed.tplId, nodeId, publicKey, bytes };
}

/** {@link verifyScorePacket} without throwing. */
export function checkScorePacket(topic: string, bytes: Uint8Array, options: ScoreVerifyOptions = {}): { ok: true; score: VerifiedScore } | { ok: false; code: ErrorCode; message: string } {
  try {
    return { ok: true, score: verifyScorePacket(topic, bytes, options) };
  } catch (e) {
    if (e instanceof QisError) return { ok: false, code: e.code, message: e.message };
    throw e;
  }
}
