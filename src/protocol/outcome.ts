/**
 * From a situation and an outcome to a signed packet on the right topic: the step a node (or
 * `qis packet sign`) takes, with the outcome and context checked against the template.
 */
import { QisError } from './errors.js';
import { address, outcomeTopic, type Address, type Situation } from './fingerprint.js';
import type { Ed25519Backend, NodeKey } from './identity.js';
import { checkOutcome, signPacket, type Outcome, type PacketFields } from './packet.js';
import type { Template } from './template.js';

export interface OutcomePacketInput {
  readonly key: NodeKey;
  readonly template: Template;
  readonly situation: Situation;
  /** Required unless `del` is true. */
  readonly outcome?: Outcome;
  readonly seq: number;
  readonly ts: number;
  readonly conf?: number;
  readonly n?: number;
  readonly ctx?: { readonly [key: string]: number };
  readonly exp?: number;
  readonly del?: boolean;
  readonly backend?: Ed25519Backend;
}

export interface OutcomePacket {
  readonly topic: string;
  readonly packet: Uint8Array;
  readonly address: Address;
}

/**
 * Checks an outcome against the template's outcome spec and returns it as it will be signed
 * (category labels in NFC).
 * @throws QisError ERR_OUTCOME_INVALID
 */
export function checkOutcomeFits(template: Template, outcome: unknown): Outcome {
  const spec = template.doc.outcome;
  const bad = (what: string): never => {
    throw new QisError('ERR_OUTCOME_INVALID', `outcome ${JSON.stringify(outcome)}: ${what}`);
  };
  switch (spec.kind) {
    case 'category': {
      if (typeof outcome !== 'string') return bad(`expected one of the labels ${spec.labels.join(', ')}`);
      const label = outcome.normalize('NFC');
      if (!spec.labels.some((l) => l.normalize('NFC') === label)) return bad(`not one of the labels ${spec.labels.join(', ')}`);
      return label;
    }
    case 'number':
      if (typeof outcome !== 'number' || !Number.isFinite(outcome)) return bad('expected a finite number');
      return outcome;
    case 'map': {
      if (typeof outcome !== 'object' || outcome === null || Array.isArray(outcome)) return bad('expected a map of name to text or number');
      const map = checkOutcome(outcome, 'ERR_OUTCOME_INVALID') as Readonly<Record<string, string | number>>;
      const keys = Object.keys(map);
      if (keys.length === 0) return bad('map is empty');
      const unknown = spec.keys && keys.find((k) => !spec.keys?.includes(k));
      if (unknown) return bad(`"${unknown}" is not one of the keys ${spec.keys?.join(', ')}`);
      return map;
    }
  }
}

/**
 * Addresses a situation, checks outcome and context against the template, and signs the packet.
 * @throws QisError ERR_FIELD_MISSING | ERR_FIELD_VALUE | ERR_OUTCOME_INVALID | ERR_PACKET_FIELD | ERR_PACKET_TOO_LARGE
 * @example
 * const { topic, packet } = createOutcomePacket({ key, template, situation, outcome: 'failure',
 *   seq: 7, ts: Date.now(), conf: 0.94 })
 */
export function createOutcomePacket(input: OutcomePacketInput): OutcomePacket {
  const addr = address(input.template, input.situation);
  const del = input.del === true;
  if (!del && input.outcome === undefined) {
    throw new QisError('ERR_OUTCOME_INVALID', 'an outcome is required unless the packet is a tombstone (del)');
  }
  const out = input.outcome === undefined ? undefined : checkOutcomeFits(input.template, input.outcome);
  if (input.ctx !== undefined) {
    const allowed = input.template.doc.context ?? [];
    for (const k of Object.keys(input.ctx)) {
      if (!allowed.includes(k)) {
        throw new QisError('ERR_PACKET_FIELD', `ctx "${k}" is not a context value of the template (it has: ${allowed.join(', ') || 'none'})`);
      }
    }
  }
  const fields: PacketFields = {
    fp: addr.fp,
    seq: input.seq,
    ts: input.ts,
    ...(out !== undefined ? { out } : {}),
    ...(input.conf !== undefined ? { conf: input.conf } : {}),
    ...(input.n !== undefined ? { n: input.n } : {}),
    ...(input.ctx !== undefined ? { ctx: input.ctx } : {}),
    ...(input.exp !== undefined ? { exp: input.exp } : {}),
    ...(del ? { del: true } : {}),
  };
  const topic = outcomeTopic(addr, input.key.nodeId);
  const packet = signPacket(input.key, topic, fields, input.backend ? { backend: input.backend } : {});
  return { topic, packet, address: addr };
}
