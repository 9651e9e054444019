/**
 * Bundles the CLI and its runtime with esbuild (`npm run build` runs this after tsc): the entry
 * dist/cli/qis.mjs and, beside it, the chunks it loads on demand (dist/cli/chunk-*.mjs).
 * `node dist/cli/qis.mjs publish …` starts faster and smaller than loading dist/cli/qis.js and its
 * ~100 modules from node_modules one by one: a few files with no module resolution, and nothing
 * read or compiled that the command does not use. Each command group is a dynamic import() in
 * cli/qis.ts, so the broker (aedes, ioredis, pino, prom-client), the firmware bridge (Sparkplug,
 * protobufjs) and the demo are chunks of their own that `qis publish` never reads. One file with
 * everything (the first build) had `qis publish` compile 1.3 MB, the broker's code included, on
 * every start: split, it reads ~0.65 MB, and took 7–10 % less CPU and 2 MiB less RSS per publish
 * (14 interleaved rounds each, load ~9; /work/notes/build-single.mjs rebuilt the one-file arm).
 *
 * Why dist/cli/ and not dist/: the code finds package.json, examples/ and dist/console/www by
 * paths relative to its own file (import.meta.url); beside dist/cli/qis.js those paths hold.
 *
 * What stays out of the build, and why:
 * - The verification worker (the broker's pool and a query's): a Worker is started from a file
 *   (`new URL('./verify-worker.js', import.meta.url)`), so it is bundled as its own entry,
 *   dist/cli/verify-worker.js, next to the bundle where that URL points.
 * - modbus-serial (and serialport's native addon under it): firmware-bridge/serial.ts loads it with
 *   createRequire at run time, which esbuild does not follow, so it comes from node_modules when an
 *   RTU bridge starts; mqemitter-redis and aedes-persistence-redis (Redis cluster) the same way.
 * - ws's optional native speed-ups (bufferutil, utf-8-validate): ws requires them in a try and
 *   works without them.
 */
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type BuildOptions, type Plugin } from 'esbuild';

function repoRoot(from: string): string {
  for (let d = from; d !== dirname(d); d = dirname(d)) if (existsSync(join(d, 'package.json'))) return d;
  throw new Error(`no package.json above ${from}`);
}

const root = repoRoot(dirname(fileURLToPath(import.meta.url)));
export const BUNDLE = join(root, 'dist', 'cli', 'qis.mjs');
/** The chunks' file names beside the entry (esbuild's chunkNames below). */
const CHUNK = /^chunk-[^/]*\.mjs$/;

/** The build's files: the entry, then the chunks it loads on demand (whole paths). */
export function bundleFiles(): string[] {
  const dir = dirname(BUNDLE);
  return [BUNDLE, ...readdirSync(dir).filter((f) => CHUNK.test(f)).map((f) => join(dir, f))];
}
const WORKER = join(root, 'dist', 'cli', 'verify-worker.js');

/**
 * src/protocol/template.ts imports `yaml` statically, and every command reaches it; yet a command
 * given a JSON template or none never needs the YAML parser. Here the import becomes a stub that
 * loads yaml (bundled as a lazily run CommonJS module) on the first parse.
 */
const lazyYaml: Plugin = {
  name: 'qis-lazy-yaml',
  setup(b) {
    b.onResolve({ filter: /^yaml$/ }, (args) => (args.namespace === 'qis-lazy' ? undefined : { path: 'yaml', namespace: 'qis-lazy' }));
    b.onLoad({ filter: /.*/, namespace: 'qis-lazy' }, () => ({
      resolveDir: root,
      loader: 'js',
      contents: [
        'let y;',
        "const yaml = () => (y ??= require('yaml'));",
        'export const parse = (...a) => yaml().parse(...a);',
        'export const parseDocument = (...a) => yaml().parseDocument(...a);',
        'export const stringify = (...a) => yaml().stringify(...a);',
      ].join('\n'),
    }));
  },
};

// Bundled CommonJS (mqtt, ioredis…) calls require() for Node's own modules; an ES module has none.
const REQUIRE_BANNER = "import { createRequire as __qisCreateRequire } from 'node:module'; const require = __qisCreateRequire(import.meta.url);";

export async function buildBundle(): Promise<{ bytes: number; chunks: number }> {
  const common: BuildOptions = {
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    minify: true,
    sourcemap: 'linked',
    legalComments: 'linked',
    external: ['bufferutil', 'utf-8-validate'],
    banner: { js: REQUIRE_BANNER },
    plugins: [lazyYaml],
    logLevel: 'warning',
  };
  // Lazy chunks: each command group (cli/qis.ts imports them with import()) and what only it uses
  // go to files of their own beside the bundle, so `qis publish` never reads or compiles the
  // broker, Aedes, ioredis, ws, prom-client or the bridge. They sit in dist/cli/ itself (not a
  // subfolder) because code finds package.json, examples/ and the worker relative to its own file.
  for (const f of bundleFiles().slice(1)) for (const x of [f, `${f}.map`]) rmSync(x, { force: true });
  // esbuild keeps cli/qis.ts's #! line first.
  await build({
    ...common,
    entryPoints: { qis: join(root, 'cli', 'qis.ts') },
    outdir: dirname(BUNDLE),
    splitting: true,
    chunkNames: 'chunk-[hash]',
    outExtension: { '.js': '.mjs' },
  });
  await build({ ...common, entryPoints: [join(root, 'src', 'protocol', 'verify-worker.ts')], outfile: WORKER });
  const files = bundleFiles();
  return { bytes: files.reduce((n, f) => n + statSync(f).size, 0), chunks: files.length - 1 };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { bytes, chunks } = await buildBundle();
  process.stdout.write(`bundle: ${BUNDLE} and ${chunks} chunks beside it (${(bytes / 1024).toFixed(0)} KiB in all)\n`);
}
