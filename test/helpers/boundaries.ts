// The layering rules of ARCHITECTURE.md, as a pure function over source texts so that the rule
// itself can be tested on made-up files as well as applied to the real tree.
import { posix } from 'node:path';

export interface SourceFile {
  /** Repository-relative path with forward slashes, e.g. 'broker/server.ts'. */
  readonly path: string;
  readonly text: string;
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;(=])import\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|[\s;])import\s*['"]([^'"]+)['"]|require\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** Every module specifier a file imports, re-exports, dynamically imports or requires. */
export function specifiers(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const s = m[1] ?? m[2] ?? m[3] ?? m[4];
    if (s) out.push(s);
  }
  return out;
}

const top = (p: string): string => p.split('/')[0] ?? '';

/** Violations of: broker/ and firmware-bridge/ use only src/index; firmware-bridge never uses
 *  broker/ (nor cli/ or anything else outside it); src/ uses nothing outside src/. cli/ may use
 *  broker/ and firmware-bridge/. */
export function boundaryViolations(files: readonly SourceFile[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    const from = top(f.path);
    for (const spec of specifiers(f.text)) {
      if (!spec.startsWith('.')) continue;
      const target = posix.normalize(posix.join(posix.dirname(f.path), spec));
      const to = top(target);
      const srcIndex = /^src\/index(\.[cm]?[jt]s)?$/.test(target);
      if ((from === 'broker' || from === 'firmware-bridge') && to === 'src' && !srcIndex) {
        problems.push(`${f.path} imports ${spec}: outside src/, import only src/index`);
      }
      if (from === 'firmware-bridge' && to === 'broker') problems.push(`${f.path} imports ${spec}: firmware-bridge must not import broker/`);
      else if (from === 'firmware-bridge' && to !== 'src' && to !== 'firmware-bridge') problems.push(`${f.path} imports ${spec}: firmware-bridge imports only src/index and its own files`);
      if (from === 'src' && to !== 'src') problems.push(`${f.path} imports ${spec}: src/ must not import ${to}/`);
    }
  }
  return problems;
}
