/**
 * Synthesis: folds the verified outcome packets of one cohort into an answer a person can read
 * ("of 212 machines exactly like mine, 31 % failed"). Pure: no I/O, and no clock (recency is
 * measured from an injected `now`, by default the newest packet). Definitions, and why each
 * was chosen, are in docs/synthesis.md; the numbers there are the DEFAULTS of options.ts.
 *
 * This file folds; types.ts says what goes in and out, options.ts checks the options, weights.ts
 * weighs the packets, categorical.ts, numeric.ts and map.ts summarise each outcome kind, and
 * stats.ts holds the statistics they use.
 */
import type { Outcome } from '../protocol/packet.js';
import type { OutcomeSpec, Template } from '../protocol/template.js';
import { summarizeCategory } from './categorical.js';
import { cmp, finite, invalid, isRecord, type Entry, type MapValue } from './common.js';
import { summarizeMap } from './map.js';
import { summarizeNumber } from './numeric.js';
import { checkPackets, resolve } from './options.js';
import type { Synthesis, SynthesisOptions, SynthPacket } from './types.js';
import { weigh } from './weights.js';

export type * from './types.js';
export { wilson, weightedQuantile } from './stats.js';
export { capWeights } from './weights.js';

/** The value of a packet in the template's terms, or undefined when it does not fit. */
function fit(spec: OutcomeSpec, labels: ReadonlySet<string>, out: Outcome): string | number | MapValue | undefined {
  switch (spec.kind) {
    case 'category': {
      if (typeof out !== 'string') return undefined;
      // Labels compare in NFC, as the signer (checkOutcomeFits) writes them.
      const label = out.normalize('NFC');
      return labels.has(label) ? label : undefined;
    }
    case 'number':
      return finite(out) ? out : undefined;
    case 'map': {
      if (!isRecord(out)) return undefined;
      const keys = Object.keys(out);
      if (keys.length === 0) return undefined;
      // A key outside the template's list makes the whole outcome not fit, as for the signer.
      if (spec.keys && keys.some((k) => !spec.keys?.includes(k))) return undefined;
      // Null prototype: a key named "__proto__" stays data.
      const m = Object.create(null) as Record<string, string | number>;
      for (const k of keys) {
        const v: unknown = out[k];
        if (typeof v === 'string') m[k] = v.normalize('NFC');
        else if (finite(v)) m[k] = v;
        else return undefined;
      }
      return m;
    }
  }
}

/**
 * Folds the packets of one cohort into a summary of the template's outcome kind.
 * Packets that do not fit the outcome are skipped and counted; fewer contributing nodes than
 * `minCohort` give `{ kind: 'insufficient' }`. The result does not depend on packet order.
 *
 * @throws QisError ERR_INVALID_ARGUMENT for a bad option or a malformed packet record
 * @example
 * const s = synthesize(bearing, packets, { halfLifeMs: 180 * 86_400_000 })
 * if (s.kind === 'category') {
 *   const f = s.labels['failure']
 *   console.log(`of ${s.count} machines like mine, ${Math.round(100 * (f?.proportion ?? 0))} % failed`)
 * }
 */
export function synthesize(template: Template, packets: readonly SynthPacket[], options?: SynthesisOptions): Synthesis {
  if (!isRecord(template) || !isRecord(template.doc) || !isRecord(template.doc.outcome)) {
    invalid('synthesize: template must be a compiled Template (compileTemplate)');
  }
  const o = resolve(template, options);
  const spec = template.doc.outcome;
  const labels = spec.kind === 'category' ? spec.labels.map((l) => l.normalize('NFC')) : [];
  const labelSet = new Set(labels);
  // One fixed order (node ids are unique) for every sum, so the floats do not depend on input order.
  const sorted = [...checkPackets(packets)].sort((a, b) => cmp(a.nodeId, b.nodeId));
  const fitting: Array<{ p: SynthPacket; value: string | number | MapValue }> = [];
  for (const p of sorted) {
    const value = fit(spec, labelSet, p.out);
    if (value !== undefined) fitting.push({ p, value });
  }
  const skipped = sorted.length - fitting.length;
  const { factors, contextFields } = weigh(
    fitting.map((f) => f.p),
    o,
  );
  const entries = fitting.map(({ p, value }, i) => {
    const c = factors[i] as number;
    return { nodeId: p.nodeId, value, n: p.n, c, w: p.n * c };
  });
  switch (spec.kind) {
    case 'category':
      return summarizeCategory(entries as Array<Entry<string>>, labels, o, skipped, contextFields);
    case 'number':
      return summarizeNumber(entries as Array<Entry<number>>, o, skipped, contextFields, spec.unit);
    case 'map':
      return summarizeMap(entries as Array<Entry<MapValue>>, spec.keys, o, skipped, contextFields);
  }
}
