/**
 * The summary of a map outcome: each key summarised as a category (text) or a number, by the
 * kind most of its contributing nodes use.
 */
import { cmp, insufficient, plural, type Entry, type MapValue } from './common.js';
import { summarizeCategory } from './categorical.js';
import { summarizeNumber } from './numeric.js';
import type { Resolved } from './options.js';
import type { InsufficientSummary, KeySummary, MapSummary } from './types.js';

export function summarizeMap(
  all: ReadonlyArray<Entry<MapValue>>,
  templateKeys: readonly string[] | undefined,
  o: Resolved,
  skipped: number,
  contextFields: readonly string[],
): MapSummary | InsufficientSummary {
  const live = all.filter((e) => e.w > 0);
  const zeroWeight = all.length - live.length;
  // Every key would be insufficient too; one top-level answer is simpler to act on.
  if (live.length < o.minCohort) return insufficient(live.length, o.minCohort, skipped, zeroWeight);
  const keys = templateKeys ? [...templateKeys] : [...new Set(all.flatMap((e) => Object.keys(e.value)))].sort(cmp);
  const out = keys.map((key): [string, KeySummary] => {
    const texts: Array<Entry<string>> = [];
    const nums: Array<Entry<number>> = [];
    for (const e of all) {
      if (!Object.hasOwn(e.value, key)) continue;
      const v = e.value[key] as string | number;
      if (typeof v === 'string') texts.push({ ...e, value: v });
      else nums.push({ ...e, value: v });
    }
    // A key read as text by some nodes and as numbers by others: the kind more contributing
    // nodes use wins and the other values are skipped, so one odd node cannot blank out a key.
    const liveTexts = texts.filter((e) => e.w > 0).length;
    const liveNums = nums.filter((e) => e.w > 0).length;
    if (liveTexts > 0 && liveTexts === liveNums) {
      return [
        key,
        {
          kind: 'insufficient',
          reason: 'mixed-kinds',
          count: liveTexts + liveNums,
          minCohort: o.minCohort,
          excluded: 0,
          skipped: 0,
          zeroWeight: texts.length + nums.length - liveTexts - liveNums,
          message: `insufficient evidence: key "${key}" is text from ${plural(liveTexts, 'node')} and a number from ${liveNums}`,
        },
      ];
    }
    if (liveTexts > liveNums) {
      const labels = [...new Set(texts.filter((e) => e.w > 0).map((e) => e.value))].sort(cmp);
      return [key, summarizeCategory(texts, labels, o, nums.length, contextFields)];
    }
    return [key, summarizeNumber(nums, o, texts.length, contextFields, undefined)];
  });
  return { kind: 'map', count: live.length, keys: Object.fromEntries(out), skipped, zeroWeight, contextFields };
}
