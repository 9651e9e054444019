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

/** The layers of src/, lowest first: a file imports only from its own layer or a lower one. */
export const SRC_LAYERS = ['protocol', 'synthesis', 'elections', 'node'] as const;

/** A src/ path's layer (its index in SRC_LAYERS), 'index' for src/index, 'browser' for src/browser
 *  (the web console's surface: protocol, synthesis and elections only), undefined outside the layers. */
export function srcLayer(path: string): number | 'index' | 'browser' | undefined {
  const parts = path.split('/');
  if (parts[0] !== 'src') return undefined;
  if (parts.length === 2 && /^index(\.[cm]?[jt]s)?$/.test(parts[1] ?? '')) return 'index';
  if (parts.length === 2 && /^browser(\.[cm]?[jt]s)?$/.test(parts[1] ?? '')) return 'browser';
  if (parts.length < 3) return undefined;
  const i = (SRC_LAYERS as readonly string[]).indexOf(parts[1] ?? '');
  return i < 0 ? undefined : i;
}

const layerName = (l: number): string => `src/${SRC_LAYERS[l] ?? '?'}`;

/** Violations of the layers inside src/ (ARCHITECTURE.md "Layout") by one import: a layer imports
 *  its own files and lower layers only (protocol ← synthesis ← elections ← node ← index), and no
 *  layer imports src/index (the top). */
function srcViolations(path: string, spec: string, target: string): string[] {
  const from = srcLayer(path);
  if (from === 'index' || from === undefined || !target.startsWith('src/')) return [];
  const to = srcLayer(target);
  if (from === 'browser') {
    const node = SRC_LAYERS.indexOf('node');
    return typeof to === 'number' && to < node ? [] : [`${path} imports ${spec}: src/browser exports only src/protocol, src/synthesis and src/elections (the page bundles no node runtime)`];
  }
  if (to === 'browser') return [`${path} imports ${spec}: only the web console imports src/browser`];
  if (to === 'index') return [`${path} imports ${spec}: ${layerName(from)} must not import src/index (it is the top)`];
  if (to === undefined) return [`${path} imports ${spec}: a file outside the src/ layer folders`];
  if (to > from) return [`${path} imports ${spec}: ${layerName(from)} must not import ${layerName(to)} (one direction: ${SRC_LAYERS.join(' ← ')} ← index)`];
  return [];
}

/** Violations of: broker/ and firmware-bridge/ use only src/index; firmware-bridge never uses
 *  broker/ (nor cli/ or anything else outside it); src/ uses nothing outside src/, and inside
 *  it keeps its layers: every file but src/index.ts and src/browser.ts in a layer folder, imports as srcViolations says. cli/ may use broker/ and firmware-bridge/. */
export function boundaryViolations(files: readonly SourceFile[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    const from = top(f.path);
    if (from === 'src' && srcLayer(f.path) === undefined) problems.push(`${f.path}: every src/ file but src/index.ts and src/browser.ts belongs in a layer folder (src/${SRC_LAYERS.join('/, src/')}/)`);
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
      if (from === 'console' && f.path.startsWith('console/app/') && to === 'src' && !/^src\/browser(\.[cm]?[jt]s)?$/.test(target)) {
        problems.push(`${f.path} imports ${spec}: the page imports only src/browser (no node runtime in the bundle)`);
      }
      problems.push(...srcViolations(f.path, spec, target));
    }
  }
  return problems;
}
