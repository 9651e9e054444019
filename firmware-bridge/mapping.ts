/**
 * The mapping language at run time, shared by the Modbus and Sparkplug bridges: a machine's
 * readings go in, and the outcome packets its triggers ask for come out (situation, context,
 * outcome, template). Pure: no I/O and no clock of its own (the caller passes `now`).
 *
 * Every reading carries its quality and the time it was observed: `good` (read in the latest
 * poll or message), `bad` (the device answered that reading with an exception) or `stale` (the
 * device is down, or the value was restored from disk at a restart). A packet is built only from
 * good readings, and its `ts` is when they were observed: a stale PLC produces no packets.
 *
 * Triggers fire on edges: `change` when a reading's value differs from the previous one (and
 * matches `from` / `to` when given); `threshold` when a reading passes `above` upwards or `below`
 * downwards and stays past it for `debounceMs`, re-armed only once it is back by `hysteresis`.
 * The previous value may be stale (a fault that appeared while the PLC or the bridge was down
 * fires on return); with no previous value at all the first one is a baseline and fires nothing.
 * `every` fires when the bridge's timer asks (`periodic`). A rule that cannot be built is
 * reported once per reason, not on every poll or period.
 */
import type { Outcome, Situation, Template } from '../src/index.js';
import type { Machine, Rule, Scalar, ValueSpec } from './config.js';

export type ReadingValue = number | boolean | string;
export type Quality = 'good' | 'bad' | 'stale';

export interface Reading {
  readonly value: ReadingValue;
  readonly quality: Quality;
  /** Unix ms when the value was observed. */
  readonly at: number;
}

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
  /** Unix ms when the readings it carries were observed (the packet's ts). */
  readonly ts: number;
}

/** A trigger fired but the packet cannot be built (a reading it needs has no good value). */
export interface Skip {
  readonly machine: string;
  readonly rule: string;
  readonly reason: string;
}

/** What survives a restart: the last values (edges across the restart) and threshold states. */
export interface TriggerState {
  readonly v: 1;
  readonly readings: Record<string, { readonly value: ReadingValue; readonly at: number }>;
  readonly thresholds: Record<string, boolean>;
}

const same = (a: ReadingValue | undefined, b: Scalar | undefined): boolean => a === b;
/** A rule's identity across restarts: its place and its trigger (a changed trigger starts afresh). */
const ruleId = (r: Rule): string => `${r.key} ${JSON.stringify(r.when)}`;

export class MachineMapper {
  private readonly current = new Map<string, Reading>();
  /** Per threshold rule: whether it has fired and is not yet re-armed. */
  private readonly active = new Map<string, boolean>();
  /** Per threshold rule: since when the limit has been passed, while debouncing. */
  private readonly since = new Map<string, number>();
  /** Per rule: the reason it was last skipped (reported once). */
  private readonly skipped = new Map<string, string>();

  constructor(readonly machine: Machine<unknown>) {}

  get readings(): ReadonlyMap<string, Reading> {
    return this.current;
  }

  /** Forget a reading's value (its source died and will be born again): the next value is a fresh baseline. */
  forget(names: Iterable<string>): void {
    for (const n of names) this.current.delete(n);
  }

  /** The device answered these readings with an exception: their values are not current. */
  markBad(names: Iterable<string>): void {
    for (const n of names) {
      const r = this.current.get(n);
      if (r) this.current.set(n, { ...r, quality: 'bad' });
    }
  }

  /** The device is down: no value is current (they stay the previous values for edges). */
  markStale(): void {
    for (const [n, r] of this.current) if (r.quality === 'good') this.current.set(n, { ...r, quality: 'stale' });
  }

  /**
   * Applies new values observed at `now` (only readings that were read; the others keep theirs)
   * and returns what the change and threshold triggers ask for.
   */
  update(values: ReadonlyMap<string, ReadingValue>, now = 0): (Emission | Skip)[] {
    const fired: Rule[] = [];
    for (const rule of this.machine.rules) {
      const w = rule.when;
      if (w.kind === 'every' || !values.has(w.reading)) continue;
      const prev = this.current.get(w.reading)?.value;
      const next = values.get(w.reading);
      if (w.kind === 'change') {
        if (prev === undefined || next === undefined) continue; // the first value is a baseline
        if (prev !== next && (w.from === undefined || same(prev, w.from)) && (w.to === undefined || same(next, w.to))) fired.push(rule);
        continue;
      }
      if (typeof next !== 'number') continue;
      const id = ruleId(rule);
      const past = w.above !== undefined ? next > w.above : next < w.below!;
      const back = w.above !== undefined ? next <= w.above - w.hysteresis : next >= w.below! + w.hysteresis;
      const active = this.active.get(id);
      if (active === undefined && typeof prev !== 'number') {
        this.active.set(id, past); // a baseline: already past the limit is not a new crossing
        continue;
      }
      if (active) {
        if (back) this.active.set(id, false);
        continue;
      }
      if (!past) {
        this.since.delete(id);
        this.active.set(id, false);
        continue;
      }
      const since = this.since.get(id) ?? now;
      this.since.set(id, since);
      if (now - since >= w.debounceMs) {
        this.since.delete(id);
        this.active.set(id, true);
        fired.push(rule);
      }
    }
    for (const [k, v] of values) this.current.set(k, { value: v, quality: 'good', at: now });
    return fired.flatMap((r) => this.once(r, this.build(r)));
  }

  /** What an `every` rule publishes now: its packet, a first skip for a reason, or nothing. */
  periodic(rule: Rule): (Emission | Skip)[] {
    return this.once(rule, this.build(rule));
  }

  /** Skips are reported once per rule and reason; a rule that publishes again is reported anew. */
  private once(rule: Rule, e: Emission | Skip): (Emission | Skip)[] {
    if (!isSkip(e)) {
      this.skipped.delete(rule.key);
      return [e];
    }
    if (this.skipped.get(rule.key) === e.reason) return [];
    this.skipped.set(rule.key, e.reason);
    return [e];
  }

  /** What rule `rule` would publish from the current good readings (also for `--check`). */
  build(rule: Rule): Emission | Skip {
    const missing: string[] = [];
    const notGood: string[] = [];
    let ts = 0;
    const value = (spec: ValueSpec): Scalar | undefined => {
      if ('const' in spec) return spec.const;
      const r = this.current.get(spec.reading);
      if (r === undefined) missing.push(spec.reading);
      else if (r.quality !== 'good') notGood.push(`${spec.reading} (${r.quality})`);
      else ts = Math.max(ts, r.at);
      return r?.value;
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
      // Context is optional: a context reading without a good value is left out, not waited for.
      const r = 'const' in spec ? { value: spec.const, quality: 'good' } : this.current.get(spec.reading);
      if (r && r.quality === 'good' && typeof r.value === 'number' && Number.isFinite(r.value)) ctx[k] = r.value;
    }
    // The trigger's own reading was observed too; a rule of constants only takes the newest good reading.
    const trigger = rule.when.kind === 'every' ? undefined : this.current.get(rule.when.reading);
    if (trigger?.quality === 'good') ts = Math.max(ts, trigger.at);
    if (ts === 0) for (const r of this.current.values()) if (r.quality === 'good') ts = Math.max(ts, r.at);
    const skip = (reason: string): Skip => ({ machine: this.machine.name, rule: rule.key, reason });
    if (missing.length > 0) return skip(`no value yet for ${[...new Set(missing)].join(', ')}`);
    if (notGood.length > 0) return skip(`no current value for ${[...new Set(notGood)].join(', ')}`);
    if (outcome === undefined) return skip('no outcome');
    if (![...this.current.values()].some((r) => r.quality === 'good')) return skip('no current reading');
    if (typeof outcome === 'boolean') return skip(`the outcome's reading is ${outcome}, not a label or a number`);
    return {
      machine: this.machine.name,
      rule: rule.key,
      template: rule.template,
      situation,
      ...(Object.keys(ctx).length > 0 ? { ctx } : {}),
      outcome,
      ...(rule.conf === undefined ? {} : { conf: rule.conf }),
      ...(rule.n === undefined ? {} : { n: rule.n }),
      ts,
    };
  }

  /** The state to persist: last values and threshold states. */
  snapshot(): TriggerState {
    const readings: Record<string, { value: ReadingValue; at: number }> = {};
    for (const [k, r] of this.current) readings[k] = { value: r.value, at: r.at };
    const thresholds: Record<string, boolean> = {};
    for (const rule of this.machine.rules) {
      const a = this.active.get(ruleId(rule));
      if (a !== undefined) thresholds[ruleId(rule)] = a;
    }
    return { v: 1, readings, thresholds };
  }

  /**
   * Restores a persisted state (from disk, so checked): values of this machine's readings come
   * back stale (edges only, never published), threshold states of rules with the same trigger.
   */
  restore(state: unknown): void {
    if (typeof state !== 'object' || state === null) return;
    const s = state as { v?: unknown; readings?: unknown; thresholds?: unknown };
    if (s.v !== 1) return;
    if (typeof s.readings === 'object' && s.readings !== null) {
      for (const [k, r] of Object.entries(s.readings as Record<string, unknown>)) {
        if (!this.machine.readings.has(k) || typeof r !== 'object' || r === null) continue;
        const { value, at } = r as { value?: unknown; at?: unknown };
        const ok = typeof value === 'boolean' || typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
        if (ok && typeof at === 'number' && Number.isFinite(at)) this.current.set(k, { value, quality: 'stale', at });
      }
    }
    if (typeof s.thresholds === 'object' && s.thresholds !== null) {
      const ids = new Set(this.machine.rules.map(ruleId));
      for (const [k, a] of Object.entries(s.thresholds as Record<string, unknown>)) if (ids.has(k) && typeof a === 'boolean') this.active.set(k, a);
    }
  }
}

export const isSkip = (e: Emission | Skip): e is Skip => 'reason' in e;
