// Sparkplug B test helpers: Eclipse Tahu's `sparkplug-payload` host-level encoder and decoder (an
// edge node's view, independent of the bridge's decoding), and the Sparkplug bridge config that
// several tests share (one machine, press-7 on edge node line-1, a fault code, load and sealed).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export interface SpMetric {
  name?: string;
  alias?: number;
  type: string;
  value: unknown;
  isHistorical?: boolean;
  isNull?: boolean;
}
interface SpPayload {
  timestamp?: number;
  seq?: number;
  metrics: SpMetric[];
}
/** Tahu's `sparkplug-payload` for namespace spBv1.0. */
export const sp = (createRequire(import.meta.url)('sparkplug-payload') as { get(ns: string): { encodePayload(p: SpPayload): Uint8Array; decodePayload(b: Uint8Array): { metrics: { name: string; type: string; value: unknown }[] } } }).get('spBv1.0');

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));

/** The default mapping of machine press-7: readings fault (Faults/Code), load (Load/kN), sealed (Sealed), a failure when the fault code leaves 0. */
export const PRESS_MAPPING = `    readings: { fault: Faults/Code, load: Load/kN, sealed: Sealed }
    situation: { machine_model: KX-200, bearing_type: roller, load_kn: { reading: load }, sealed: { reading: sealed } }
    outcomes: [{ when: { change: fault, from: 0 }, outcome: failure }]
`;

/**
 * A Sparkplug bridge config: machine press-7 (press-bearing template) fed by edge node line-1,
 * device press-7, with `mapping` (readings, situation, context, outcomes; PRESS_MAPPING by
 * default). `sparkplug` is the inside of the YAML mapping.
 */
export const sparkplugYaml = (o: { broker: string; dataDir: string; sparkplug: string; mapping?: string }): string => `broker: ${o.broker}
dataDir: ${o.dataDir}
sparkplug: { ${o.sparkplug} }
machines:
  - name: press-7
    template: ${join(examples, 'press-bearing.yaml')}
    source: { edgeNode: line-1, device: press-7 }
${o.mapping ?? PRESS_MAPPING}`;

/** Tahu's schema-level Payload codec (protobufjs generated from sparkplug_b.proto): messages as the proto defines them, e.g. a DATA metric without a datatype. */
export const tahuPayload = (createRequire(import.meta.url)('sparkplug-payload/lib/sparkplugPayloadProto.js') as { org: { eclipse: { tahu: { protobuf: { Payload: { encode(p: object): { finish(): Uint8Array } } } } } } }).org.eclipse.tahu.protobuf.Payload;
