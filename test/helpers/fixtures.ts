// Shared fixtures: the bearing-failure template of PROTOCOL §3 (examples/bearing-failure.yaml,
// whose id is the shared vector's) and a deterministic key.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { compileTemplate, keyFromSeed, type Template, type TemplateDoc } from '../../src/index.js';

interface BearingDoc extends TemplateDoc {
  readonly fields: readonly [
    { readonly name: 'machine_model'; readonly kind: 'category' },
    { readonly name: 'bearing_type'; readonly kind: 'category'; readonly values: readonly string[] },
    { readonly name: 'load_kn'; readonly kind: 'number'; readonly bins: readonly number[] },
    { readonly name: 'sealed'; readonly kind: 'boolean' },
  ];
}

export const bearingDoc = parse(readFileSync(new URL('../../examples/bearing-failure.yaml', import.meta.url), 'utf8')) as BearingDoc;
export const bearing: Template = compileTemplate(bearingDoc);
export const situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true } as const;

/** A key from a fixed seed byte, so failures reproduce. */
export const fixedKey = (byte: number) => keyFromSeed(new Uint8Array(32).fill(byte));
