// Shared fixtures: the bearing-failure template of PROTOCOL §3 and a deterministic key.
import { compileTemplate, keyFromSeed, type Template } from '../../src/index.js';

export const bearingDoc = {
  name: 'bearing-failure',
  version: 1,
  fields: [
    { name: 'machine_model', kind: 'category' },
    { name: 'bearing_type', kind: 'category', values: ['ball', 'roller', 'plain'] },
    { name: 'load_kn', kind: 'number', bins: [0, 10, 50, 200] },
    { name: 'sealed', kind: 'boolean' },
  ],
  context: ['ambient_c', 'rpm'],
  outcome: { kind: 'category', labels: ['no_failure', 'failure'] },
} as const;

export const bearing: Template = compileTemplate(bearingDoc);
export const situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true } as const;

/** A key from a fixed seed byte, so failures reproduce. */
export const fixedKey = (byte: number) => keyFromSeed(new Uint8Array(32).fill(byte));
