/**
 * Fingerprints and topic addresses (PROTOCOL §4).
 *
 *   L_i = b32(H(T || enc(c_1) || … || enc(c_i)))[0..10]
 *   fp  = H(T || enc(c_1) || … || enc(c_k))[0..16]
 */
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { b32, enc } from './bytes.js';
import { QisError } from './errors.js';
import { isNodeId, type NodeId } from './identity.js';
import { canon, isTplId, type Template, type TplId } from './template.js';

/** Where a situation lives: its template, topic levels and full fingerprint. */
export interface Address {
  readonly tplId: TplId;
  /** L_1 … L_k, most significant first, 10 base32 characters each. */
  readonly levels: readonly string[];
  /** The 16-byte full fingerprint carried in packets (payload key 2). */
  readonly fp: Uint8Array;
  /** The canonical value strings c_1 … c_k. */
  readonly canon: readonly string[];
}

/** A situation: routed field name → value (context values may ride along and are ignored here). */
export type Situation = Readonly<Record<string, unknown>>;

export const LEVEL_LENGTH = 10;
const LEVEL_RE = /^[a-z2-7]{10}$/;

/**
 * The address of a situation under a template.
 * @throws QisError ERR_FIELD_MISSING | ERR_FIELD_VALUE | ERR_INVALID_ARGUMENT
 * @example address(tpl, { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true }).levels
 */
export function address(tpl: Template, situation: Situation): Address {
  if (typeof situation !== 'object' || situation === null || Array.isArray(situation)) {
    throw new QisError('ERR_INVALID_ARGUMENT', 'a situation is an object of field name → value');
  }
  const h = nobleSha256.create().update(tpl.idBytes);
  const levels: string[] = [];
  const values: string[] = [];
  let digest: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < tpl.fields.length; i++) {
    const field = tpl.fields[i] as Template['fields'][number];
    if (!Object.hasOwn(situation, field.name) || situation[field.name] === undefined) {
      throw new QisError('ERR_FIELD_MISSING', `situation lacks field "${field.name}" (template ${tpl.doc.name} v${tpl.doc.version} routes on it)`);
    }
    const c = canon(field, situation[field.name], tpl.closedSets.get(field.name));
    values.push(c);
    h.update(enc(c));
    digest = i === tpl.fields.length - 1 ? h.digest() : h.clone().digest();
    levels.push(b32(digest.subarray(0, 7)).slice(0, LEVEL_LENGTH));
  }
  return { tplId: tpl.tplId, levels, fp: digest.slice(0, 16), canon: values };
}

/** `qis/1/o/<tplId>/<L_1>/…/<L_k>/<nodeId>`: a node's outcome topic. */
export function outcomeTopic(addr: Pick<Address, 'tplId' | 'levels'>, nodeId: NodeId): string {
  return `qis/1/o/${addr.tplId}/${addr.levels.join('/')}/${nodeId}`;
}

/**
 * The cohort subscription filter. `widen: 0` is the exact cohort (`…/L_k/+`); `widen: n` drops the
 * n least significant levels and matches everything below (`…/L_(k-n)/#`).
 * @throws QisError ERR_INVALID_ARGUMENT when widen is not an integer in 0..k
 */
export function cohortFilter(addr: Pick<Address, 'tplId' | 'levels'>, widen = 0): string {
  const k = addr.levels.length;
  if (!Number.isInteger(widen) || widen < 0 || widen > k) {
    throw new QisError('ERR_INVALID_ARGUMENT', `widen must be an integer from 0 to ${k}, not ${widen}`);
  }
  if (widen === 0) return `qis/1/o/${addr.tplId}/${addr.levels.join('/')}/+`;
  const kept = addr.levels.slice(0, k - widen);
  return `qis/1/o/${[addr.tplId, ...kept].join('/')}/#`;
}

/** The parts of an outcome topic. */
export interface ParsedTopic {
  readonly tplId: TplId;
  readonly levels: readonly string[];
  readonly nodeId: NodeId;
}

/**
 * Parses `qis/1/o/<tplId>/<L_1>/…/<L_k>/<nodeId>`. With `depth` (k of a known template) the
 * number of levels must match.
 * @throws QisError ERR_TOPIC_INVALID
 */
export function parseOutcomeTopic(topic: string, depth?: number): ParsedTopic {
  // A cohort's topics differ only in their node ids: one that starts with the last topic's prefix
  // (already matched by OUTCOME_TOPIC_RE) and is as long matches the pattern when its last 26
  // characters are a node id, and has the same parts.
  if (typeof topic === 'string' && topic.length === last.prefix.length + NODE_ID_LENGTH && topic.startsWith(last.prefix)) {
    NODE_ID_TAIL_RE.lastIndex = last.prefix.length;
    if (NODE_ID_TAIL_RE.test(topic)) return parsed(topic, last.tplId, last.levels, topic.slice(last.prefix.length) as NodeId, depth);
  }
  const m = typeof topic === 'string' ? OUTCOME_TOPIC_RE.exec(topic) : null;
  if (m === null) return explainBadTopic(topic);
  const levels = Object.freeze((m[2] as string).slice(1).split('/'));
  const tplId = m[1] as TplId;
  last = { prefix: topic.slice(0, topic.length - NODE_ID_LENGTH), tplId, levels };
  return parsed(topic, tplId, levels, m[3] as NodeId, depth);
}

function parsed(topic: string, tplId: TplId, levels: readonly string[], nodeId: NodeId, depth: number | undefined): ParsedTopic {
  if (depth !== undefined && levels.length !== depth) badTopic(topic, `has ${levels.length} levels, the template routes on ${depth}`);
  return { tplId, levels, nodeId };
}

const NODE_ID_LENGTH = 26;
const NODE_ID_TAIL_RE = /[a-z2-7]{25}[aeimquy4]$/y;
/**
 * The last topic matched by OUTCOME_TOPIC_RE: everything before its node id, and its parts. The
 * topics of one cohort share one frozen `levels` array (a structured clone of a batch of their
 * packets then writes it once).
 */
let last: { prefix: string; tplId: TplId; levels: readonly string[] } = { prefix: '\0', tplId: '' as TplId, levels: [] };

// The whole outcome topic in one pattern (ids: 26 base32 characters encoding 16 bytes, see isB32Id16).
const OUTCOME_TOPIC_RE = /^qis\/1\/o\/([a-z2-7]{25}[aeimquy4])((?:\/[a-z2-7]{10})+)\/([a-z2-7]{25}[aeimquy4])$/;

function badTopic(topic: unknown, what: string): never {
  const shown = typeof topic === 'string' ? JSON.stringify(topic.slice(0, 200)) : `(a ${typeof topic})`;
  throw new QisError('ERR_TOPIC_INVALID', `topic ${shown}: ${what}`);
}

/** Says which part of a topic that failed OUTCOME_TOPIC_RE is wrong. */
function explainBadTopic(topic: string): never {
  if (typeof topic !== 'string') return badTopic(topic, 'not a string');
  const parts = topic.split('/');
  if (parts[0] !== 'qis' || parts[1] !== '1' || parts[2] !== 'o') return badTopic(topic, 'does not start with qis/1/o/');
  if (parts.length < 6) return badTopic(topic, 'needs a template id, at least one level and a node id');
  const tplId = parts[3] as string;
  const nodeId = parts[parts.length - 1] as string;
  if (!isTplId(tplId)) return badTopic(topic, `"${tplId}" is not a template id`);
  if (!isNodeId(nodeId)) return badTopic(topic, `"${nodeId}" is not a node id`);
  const level = parts.slice(4, -1).find((l) => !LEVEL_RE.test(l));
  return badTopic(topic, level === undefined ? 'is not an outcome topic' : `"${level}" is not a level (10 base32 characters)`);
}
