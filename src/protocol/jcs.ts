/**
 * RFC 8785 JSON Canonicalization Scheme. ECMAScript's own number and string serialisation is
 * what JCS specifies (RFC 8785 §3.2.2), so JSON.stringify does the leaves; this adds the member
 * order (UTF-16 code units, §3.2.3) and the I-JSON checks (no lone surrogates, finite numbers).
 */
import { QisError } from './errors.js';

function fail(path: string, what: string): never {
  throw new QisError('ERR_TEMPLATE_INVALID', `${path || 'document'}: ${what} cannot be canonicalized (RFC 8785)`);
}

function walk(v: unknown, path: string, depth: number, safeIntegers: boolean): string {
  if (depth > 64) fail(path, 'nesting deeper than 64');
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) fail(path, `the number ${v}`);
      if (safeIntegers && Number.isInteger(v) && Math.abs(v) > Number.MAX_SAFE_INTEGER) fail(path, `the integer ${v}, beyond 2^53-1,`);
      return JSON.stringify(v);
    case 'string':
      if (!v.isWellFormed()) fail(path, 'a string with a lone surrogate');
      return JSON.stringify(v);
    case 'object': {
      // Array.from visits holes (as undefined, refused below), where map() would skip them.
      if (Array.isArray(v)) return `[${Array.from(v, (x, i) => walk(x, `${path}[${i}]`, depth + 1, safeIntegers)).join(',')}]`;
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) fail(path, 'a non-JSON object');
      const keys = Object.keys(v);
      for (const k of keys) if (!k.isWellFormed()) fail(path, 'a member name with a lone surrogate');
      // Default sort compares UTF-16 code units, exactly RFC 8785 §3.2.3.
      keys.sort();
      const rec = v as Record<string, unknown>;
      return `{${keys.map((k) => `${JSON.stringify(k)}:${walk(rec[k], path ? `${path}.${k}` : k, depth + 1, safeIntegers)}`).join(',')}}`;
    }
    default:
      return fail(path, `a value of type ${typeof v}`);
  }
}

/**
 * The RFC 8785 canonical JSON text of a JSON value. With `safeIntegers` (I-JSON, RFC 7493 §2.2) an
 * integer beyond 2^53-1 is refused too: a parser may already have rounded it, and another
 * implementation would hash the digits as written.
 * @throws QisError ERR_TEMPLATE_INVALID for values JSON cannot carry (NaN, Infinity, undefined, lone surrogates)
 * @example jcs({ b: 1, a: [4.50, 'x'] }) // '{"a":[4.5,"x"],"b":1}'
 */
export function jcs(value: unknown, options: { safeIntegers?: boolean } = {}): string {
  return walk(value, '', 0, options.safeIntegers ?? false);
}
