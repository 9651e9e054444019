/**
 * Template documents (PROTOCOL §4), pure: a template signed by its curator as COSE_Sign1 over
 * `qis/1/t/<tplId>`, how one read back is verified (signature bound to its topic, payload hashing
 * to the id, a valid template) before it is believed, and the supersedes rule.
 *
 * A template may name the template it replaces (`supersedes: <tplId>`); {@link sameRouting} is
 * the rule that decides whether the older template's cohort can answer for the newer one.
 * The MQTT client that publishes, lists and fetches them is node/registry-session.ts.
 */
import { b32, sha256, utf8Bytes } from './bytes.js';
import { CborTag, encodeCbor } from './cbor.js';
import { QisError } from './errors.js';
import { nodeIdOf, signEd25519, type Ed25519Backend, type NodeKey } from './identity.js';
import { jcs } from './jcs.js';
import { decodeSign1, sigStructure, verifySign1, ALG_ED25519, COSE_SIGN1_TAG } from './packet.js';
import { compileTemplate, isTplId, type Template, type TplId } from './template.js';

/** Where a template document lives (PROTOCOL §4). */
export const TEMPLATE_TOPIC_PREFIX = 'qis/1/t/';

/** `qis/1/t/<tplId>`. */
export function templateTopic(tplId: string): string {
  return `${TEMPLATE_TOPIC_PREFIX}${tplId}`;
}

/**
 * The template document a curator publishes: COSE_Sign1 (PROTOCOL §5 envelope) whose payload is
 * the template's RFC 8785 canonical JSON, signed with external_aad = `qis/1/t/<tplId>`.
 * @example const doc = signTemplate(curatorKey, compileTemplate(yamlDoc))
 */
export function signTemplate(key: NodeKey, template: Template, backend?: Ed25519Backend): Uint8Array {
  const prot = encodeCbor(new Map([[1, ALG_ED25519]]));
  const payload = utf8Bytes(template.canonicalJson);
  const signature = signEd25519(key, sigStructure(prot, templateTopic(template.tplId), payload), backend);
  return encodeCbor(new CborTag(COSE_SIGN1_TAG, [prot, new Map([[4, key.publicKey]]), payload, signature]));
}

/** A template document that verified: the template and who signed it. */
export interface VerifiedTemplate {
  readonly template: Template;
  /** nodeId of the curator's key (PROTOCOL §2). */
  readonly curator: string;
  /** The curator's 32-byte public key. */
  readonly curatorKey: Uint8Array;
  /** The document exactly as received. */
  readonly bytes: Uint8Array;
}

/**
 * Verifies a template document for `tplId`: a COSE_Sign1 with a 32-byte kid whose signature
 * verifies over the topic `qis/1/t/<tplId>`, whose payload hashes to tplId and is the canonical
 * JSON of a valid template.
 * @throws QisError ERR_TEMPLATE_HASH (wrong hash, not canonical, not a valid template) | ERR_BAD_SIGNATURE | ERR_COSE_MALFORMED | ERR_CBOR_MALFORMED | ERR_UNSUPPORTED_ALG | ERR_PACKET_EMPTY
 */
export function verifyTemplateDoc(tplId: string, bytes: Uint8Array, backend?: Ed25519Backend): VerifiedTemplate {
  if (bytes.length === 0) throw new QisError('ERR_PACKET_EMPTY', `template ${tplId}: empty document`);
  const topic = templateTopic(tplId);
  const msg = decodeSign1(bytes);
  const kid = msg.unprotected.get(4);
  if (!(kid instanceof Uint8Array) || kid.length !== 32) throw new QisError('ERR_COSE_MALFORMED', `template ${tplId}: envelope lacks a 32-byte kid`);
  if (!verifySign1(msg, kid, topic, backend)) throw new QisError('ERR_BAD_SIGNATURE', `template ${tplId}: signature of curator ${nodeIdOf(kid)} does not verify`);
  if (b32(sha256(msg.payload).subarray(0, 16)) !== tplId) throw new QisError('ERR_TEMPLATE_HASH', `template document does not hash to ${tplId}`);
  let template: Template;
  try {
    template = compileTemplate(JSON.parse(Buffer.from(msg.payload).toString('utf8')));
  } catch (e) {
    throw new QisError('ERR_TEMPLATE_HASH', `template ${tplId}: payload is not a valid template: ${(e as Error).message}`, { cause: e });
  }
  if (template.tplId !== tplId) throw new QisError('ERR_TEMPLATE_HASH', `template ${tplId}: payload is not the canonical JSON of the template`);
  return { template, curator: nodeIdOf(kid), curatorKey: kid, bytes };
}

/** The template id a document says it supersedes, if it names a well-formed one. */
export function supersedesOf(template: Template): TplId | undefined {
  const s = template.doc['supersedes'];
  return typeof s === 'string' && isTplId(s) ? s : undefined;
}

/**
 * Whether `older`'s cohort can answer for `newer` (docs/registry.md): the routed fields are
 * unchanged — the same field specs (name, kind, values, bins and any other member, compared as
 * canonical JSON) in the same order — so `canon(field_i, v)` is the same for both and the older
 * template's address of a situation is computable from the same situation; and the outcome spec
 * is the same, so the two cohorts' outcomes can be synthesised together.
 */
export function sameRouting(newer: Template, older: Template): { ok: true } | { ok: false; reason: string } {
  const a = newer.fields;
  const b = older.fields;
  if (a.length !== b.length) return { ok: false, reason: `routes on ${b.length} fields, the newer template on ${a.length}` };
  for (let i = 0; i < a.length; i++) {
    if (jcs(a[i]) !== jcs(b[i])) return { ok: false, reason: `routed field ${i + 1} changed (${jcs(b[i])} → ${jcs(a[i])})` };
  }
  if (jcs(newer.doc.outcome) !== jcs(older.doc.outcome)) return { ok: false, reason: 'the outcome spec changed' };
  return { ok: true };
}
