/**
 * Templates (PROTOCOL §3): the expert's definition of which situations are "the same".
 * Validated once at the boundary; `tplId` from the RFC 8785 canonical JSON; `canon()` gives
 * the canonical value string of each routed field.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { b32, isB32Id16, sha256, utf8Bytes } from './bytes.js';
import { QisError } from './errors.js';
import { jcs } from './jcs.js';

declare const tplIdBrand: unique symbol;
/** 26-character lowercase base32 template id: `b32(H(JCS(template))[0..16])`. */
export type TplId = string & { readonly [tplIdBrand]: true };

export type CategoryField = { readonly name: string; readonly kind: 'category'; readonly values?: readonly string[] };
export type NumberField = { readonly name: string; readonly kind: 'number'; readonly bins: readonly number[] };
export type BooleanField = { readonly name: string; readonly kind: 'boolean' };
/** One routed field; its position in `fields` is its topic level. */
export type FieldSpec = CategoryField | NumberField | BooleanField;

export type OutcomeSpec =
  | { readonly kind: 'category'; readonly labels: readonly string[] }
  | { readonly kind: 'number'; readonly unit?: string }
  | { readonly kind: 'map'; readonly keys?: readonly string[] };

/** A template document as an expert writes it. Extra top-level members are allowed and hashed. */
export interface TemplateDoc {
  readonly name: string;
  readonly version: number;
  readonly fields: readonly FieldSpec[];
  readonly context?: readonly string[];
  readonly outcome: OutcomeSpec;
  readonly [extra: string]: unknown;
}

/** A validated template with its id. Build with {@link compileTemplate} or {@link loadTemplate}. */
export interface Template {
  readonly doc: TemplateDoc;
  readonly tplId: TplId;
  /** The raw 16 bytes behind `tplId` (`T` of PROTOCOL §4). */
  readonly idBytes: Uint8Array;
  /** The RFC 8785 canonical JSON of `doc`: the bytes a curator signs on `qis/1/t/<tplId>`. */
  readonly canonicalJson: string;
  readonly fields: readonly FieldSpec[];
  /** NFC forms of each closed category set, by field name. */
  readonly closedSets: ReadonlyMap<string, ReadonlySet<string>>;
}

/** True when `text` is a well-formed template id. */
export function isTplId(text: string): text is TplId {
  return isB32Id16(text);
}

// Members that belong to one kind. Any other extra member (a unit, a description) is allowed,
// hashed into the id and otherwise ignored, as another implementation would; but a member of
// another kind (bins on a category) is a mistake and refused.
const FIELD_KIND_KEYS: Record<FieldSpec['kind'], readonly string[]> = { category: ['values'], number: ['bins'], boolean: [] };
const OUTCOME_KIND_KEYS: Record<OutcomeSpec['kind'], readonly string[]> = { category: ['labels'], number: ['unit'], map: ['keys'] };
/** Most routed fields a template may have (each is a topic level). */
export const MAX_FIELDS = 32;

function bad(where: string, what: string): never {
  throw new QisError('ERR_TEMPLATE_INVALID', `template ${where}: ${what}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKindKeys<K extends string>(o: Record<string, unknown>, kind: K, byKind: Record<K, readonly string[]>, where: string): void {
  for (const [other, keys] of Object.entries(byKind) as Array<[K, readonly string[]]>) {
    if (other === kind) continue;
    for (const k of keys) if (k in o) bad(where, `"${k}" belongs to kind ${other}, not ${kind}`);
  }
}

function nonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.isWellFormed();
}

/** A list of distinct non-empty strings (distinct after NFC); returns their NFC forms. */
function stringSet(v: unknown, where: string): Set<string> {
  if (!Array.isArray(v) || v.length === 0) bad(where, 'must be a non-empty list of strings');
  const set = new Set<string>();
  for (const s of v) {
    if (!nonEmptyString(s)) bad(where, `${JSON.stringify(s)} is not a non-empty string`);
    const n = s.normalize('NFC');
    if (set.has(n)) bad(where, `"${s}" is listed twice`);
    set.add(n);
  }
  return set;
}

function validateField(f: unknown, i: number, closedSets: Map<string, ReadonlySet<string>>): FieldSpec {
  const at = `fields[${i}]`;
  if (!isObject(f)) bad(at, 'must be an object with name and kind');
  if (!nonEmptyString(f.name)) bad(at, 'name must be a non-empty string');
  const where = `field "${f.name}"`;
  const kind = f.kind;
  if (kind !== 'category' && kind !== 'number' && kind !== 'boolean') {
    bad(where, `kind must be category, number or boolean, not ${JSON.stringify(kind)}`);
  }
  checkKindKeys(f, kind, FIELD_KIND_KEYS, where);
  if (kind === 'category' && f.values !== undefined) {
    closedSets.set(f.name, stringSet(f.values, `${where} values`));
  }
  if (kind === 'number') {
    const bins = f.bins;
    if (!Array.isArray(bins) || bins.length === 0) bad(where, 'bins must be a non-empty list of numbers');
    bins.forEach((e: unknown, j: number) => {
      if (typeof e !== 'number' || !Number.isFinite(e)) bad(where, `bins[${j}] must be a finite number`);
      if (j > 0 && !(e > (bins[j - 1] as number))) bad(where, `bins must be strictly increasing (bins[${j}] = ${e})`);
    });
  }
  return f as FieldSpec;
}

function validateOutcome(o: unknown): void {
  if (!isObject(o)) bad('outcome', 'must be an object with a kind');
  const kind = o.kind;
  if (kind !== 'category' && kind !== 'number' && kind !== 'map') {
    bad('outcome', `kind must be category, number or map, not ${JSON.stringify(kind)}`);
  }
  checkKindKeys(o, kind, OUTCOME_KIND_KEYS, 'outcome');
  if (kind === 'category') stringSet(o.labels, 'outcome labels');
  if (kind === 'number' && o.unit !== undefined && typeof o.unit !== 'string') bad('outcome', 'unit must be a string');
  if (kind === 'map' && o.keys !== undefined) stringSet(o.keys, 'outcome keys');
}

/**
 * Validates a template document and computes its id. The document is hashed exactly as given
 * (no defaults added), so the same document gives the same id in every implementation.
 *
 * @throws QisError ERR_TEMPLATE_INVALID naming the offending field
 * @example
 * const t = compileTemplate({ name: 'pump', version: 1,
 *   fields: [{ name: 'model', kind: 'category' }], outcome: { kind: 'number', unit: 'h' } })
 * t.tplId // 26 base32 characters
 */
export function compileTemplate(input: unknown): Template {
  // Canonicalise first: it refuses what JSON cannot carry, and parsing the canonical text back
  // gives a private deep copy, so what is validated and frozen is exactly what was hashed.
  const canonicalJson = jcs(input, { safeIntegers: true });
  const doc = JSON.parse(canonicalJson) as unknown;
  if (!isObject(doc)) bad('', 'must be an object with name, version, fields and outcome');
  if (!nonEmptyString(doc.name)) bad('name', 'must be a non-empty string');
  if (typeof doc.version !== 'number' || !Number.isSafeInteger(doc.version)) bad('version', 'must be an integer');
  if (!Array.isArray(doc.fields) || doc.fields.length === 0) bad('fields', 'must be a non-empty list');
  if (doc.fields.length > MAX_FIELDS) bad('fields', `at most ${MAX_FIELDS} routed fields`);
  const closedSets = new Map<string, ReadonlySet<string>>();
  const fields = doc.fields.map((f: unknown, i: number) => validateField(f, i, closedSets));
  const names = new Set<string>();
  for (const f of fields) {
    if (names.has(f.name)) bad(`field "${f.name}"`, 'is defined twice (field names must be unique)');
    names.add(f.name);
  }
  if (doc.context !== undefined) {
    for (const c of stringSet(doc.context, 'context')) {
      if (names.has(c)) bad('context', `"${c}" is also a routed field`);
    }
  }
  validateOutcome(doc.outcome);
  deepFreeze(doc);
  const idBytes = sha256(utf8Bytes(canonicalJson)).slice(0, 16);
  return Object.freeze({
    doc: doc as unknown as TemplateDoc,
    tplId: b32(idBytes) as TplId,
    idBytes,
    canonicalJson,
    fields,
    closedSets,
  });
}

function deepFreeze(v: unknown): void {
  if (typeof v !== 'object' || v === null) return;
  Object.freeze(v);
  for (const x of Object.values(v)) deepFreeze(x);
}

/**
 * Parses template text, YAML 1.2 or JSON (duplicate keys refused).
 * @throws QisError ERR_TEMPLATE_PARSE | ERR_TEMPLATE_INVALID
 */
export function parseTemplate(text: string, source = 'template'): Template {
  let doc: unknown;
  try {
    // JSON is YAML 1.2, so one parser reads both and refuses duplicate keys in both.
    doc = parseYaml(text, { uniqueKeys: true, prettyErrors: true });
  } catch (e) {
    throw new QisError('ERR_TEMPLATE_PARSE', `${source}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return compileTemplate(doc);
  } catch (e) {
    if (e instanceof QisError) throw new QisError(e.code, `${source}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * Loads a template from a YAML or JSON file.
 * @throws QisError ERR_FILE_IO | ERR_TEMPLATE_PARSE | ERR_TEMPLATE_INVALID
 */
export async function loadTemplate(path: string): Promise<Template> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new QisError('ERR_FILE_IO', `${path}: ${(e as Error).message}`, { cause: e });
  }
  return parseTemplate(text, path);
}

/**
 * `canon(field, v)` of PROTOCOL §3: the canonical value string a field contributes to the fingerprint.
 * @throws QisError ERR_FIELD_VALUE
 * @example canon({ name: 'load_kn', kind: 'number', bins: [0, 10, 50] }, 42.5) // 'b1'
 */
export function canon(field: FieldSpec, value: unknown, closedSet?: ReadonlySet<string>): string {
  // A compiled template passes its NFC set; a bare field spec gets one made here.
  if (!closedSet && field.kind === 'category' && field.values) closedSet = new Set(field.values.map((v) => v.normalize('NFC')));
  const bad = (what: string): never => {
    throw new QisError('ERR_FIELD_VALUE', `field "${field.name}": ${what}`);
  };
  switch (field.kind) {
    case 'category': {
      if (typeof value !== 'string') return bad(`expected a string, got ${JSON.stringify(value)}`);
      if (!value.isWellFormed()) return bad('string has a lone surrogate');
      const s = value.normalize('NFC');
      if (s.length === 0) return bad('empty string');
      if (closedSet && !closedSet.has(s)) return bad(`"${s}" is not one of ${[...closedSet].join(', ')}`);
      return s;
    }
    case 'boolean':
      if (typeof value !== 'boolean') return bad(`expected true or false, got ${JSON.stringify(value)}`);
      return value ? 'true' : 'false';
    case 'number': {
      if (typeof value !== 'number') return bad(`expected a number, got ${JSON.stringify(value)}`);
      if (Number.isNaN(value)) return bad('NaN has no bin');
      const bins = field.bins;
      if (value < (bins[0] as number)) return 'b-';
      if (value >= (bins[bins.length - 1] as number)) return 'b+';
      // Largest i with e_i <= v (binary search; bins are strictly increasing).
      let lo = 0;
      let hi = bins.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if ((bins[mid] as number) <= value) lo = mid;
        else hi = mid;
      }
      return `b${lo}`;
    }
  }
}
