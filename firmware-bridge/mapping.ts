/**
 * The mapping language at run time, shared by the Modbus and Sparkplug bridges: a machine's
 * current readings go in, and the outcome packets its triggers ask for come out (situation,
 * context, outcome, template). Pure: no I/O and no clock of its own.
 *
 * Triggers fire on edges: `change` when a reading's value differs from the previous one (and
 * matches `from` / `to` when given), `threshold` when a reading crosses `above` upwards or
 * `below` downwards. A reading's first value is only a baseline and fires nothing. `every`
 * fires when the bridge's timer asks (`periodic`).
 */
import type { Outcome, Situation, Template } from '../src/index.js';
import type { Machine, Rule, Scalar, ValueSpec } from './config.js';

export type ReadingValue = number | boolean | string;

/** One packet a trigger asks for. */
export interface Emission {
  readonly machine: string;
  readonly rule: string;
  readonly template: Template;
  readonly situation: Situation;
  readonly ctx?: Record<string, number>;
  readonly outcome: Outcome;
  readonly conf?: number;
  readonly n?: number;
}

/** A trigger fired but the packet cannot be built yet (a reading it needs has no value). */
export interface Skip {
  readonly machine: string;
  readonly rule: string;
  readonly reason: string;
}

const same = (a: ReadingValue | undefined, b: Scalar | undefined): boolean => a === b;

export class MachineMapper {
  private readonly current = new Map<string, ReadingValue>();

  constructor(readonly machine: Machine<unknown>) {}

  get readings(): ReadonlyMap<string, ReadingValue> {
    return this.current;
  }

  /** Forget a reading's value (its source died): the next value is a fresh baseline. */
  forget(names: Iterable<string>): void {
    for (const n of names) this.current.delete(n);
  }

  /**
   * Applies new values (only readings that were read; the others keep theirs) and returns what
   * the change and threshold triggers ask for.
   */
  update(values: ReadonlyMap<string, ReadingValue>): (Emission | Skip)[] {
    const fired: Rule[] = [];
    for (const rule of this.machine.rules) {
      const w = rule.when;
      if (w.kind === 'every' || !values.has(w.reading)) continue;
      const prev = this.current.get(w.reading);
      const next = values.get(w.reading);
      if (prev === undefined || next === undefined) continue; // the first value is a baseline
      if (w.kind === 'change') {
        if (prev !== next && (w.from === undefined || same(prev, w.from)) && (w.to === undefined || same(next, w.to))) fired.push(rule);
      } else if (typeof prev === 'number' && typeof next === 'number') {
        if (w.above !== undefined && prev <= w.above && next > w.above) fired.push(rule);
        if (w.below !== undefined && prev >= w.below && next < w.below) fired.push(rule);
      }
    }
    for (const [k, v] of values) this.current.set(k, v);
    return fired.map((r) => this.build(r));
  }

  /** What rule `rule` (an `every` rule, or any rule for `--check`) would publish from the current readings. */
  build(rule: Rule): Emission | Skip {
    const missing: string[] = [];
    const value = (spec: ValueSpec): Scalar | undefined => {
      if ('const' in spec) return spec.const;
      const v = this.current.get(spec.reading);
      if (v === undefined) missing.push(spec.reading);
      return v;
    };
    const situation: Record<string, Scalar> = {};
    for (const f of rule.template.fields) {
      const v = value(this.machine.situation.get(f.name)!);
      if (v !== undefined) situation[f.name] = v;
    }
    const outcome = value(rule.outcome);
    const allowed = new Set(rule.template.doc.context ?? []);
    const ctx: Record<string, number> = {};
    for (const [k, spec] of this.machine.context) {
      if (!allowed.has(k)) continue;
      // Context is optional: a context reading without a value is left out, not waited for.
      const v = 'const' in spec ? spec.const : this.current.get(spec.reading);
      if (typeof v === 'number' && Number.isFinite(v)) ctx[k] = v;
    }
    if (missing.length > 0 || outcome === undefined) {
      return { machine: this.machine.name, rule: rule.key, reason: `no value yet for ${[...new Set(missing)].join(', ')}` };
    }
    if (typeof outcome === 'boolean') return { machine: this.machine.name, rule: rule.key, reason: `the outcome's reading is ${outcome}, not a label or a number` };
    return {
      machine: this.machine.name,
      rule: rule.key,
      template: rule.template,
      situation,
      ...(Object.keys(ctx).length > 0 ? { ctx } : {}),
      outcome,
      ...(rule.conf === undefined ? {} : { conf: rule.conf }),
      ...(rule.n === undefined ? {} : { n: rule.n }),
    };
  }
}

export const isSkip = (e: Emission | Skip): e is Skip => 'reason' in e;
