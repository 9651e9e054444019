/**
 * Bundles the web console (console/app) into static files under dist/console/www with esbuild:
 * one script, one stylesheet, one page; no CDN, nothing fetched at run time. Run by `npm run build`.
 * The console imports src/index.ts itself; src/'s few Node imports are swapped for browser forms
 * here (console/app/shims), so no src/ file knows about the browser.
 */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Metafile, type Plugin } from 'esbuild';

function repoRoot(from: string): string {
  for (let d = from; d !== dirname(d); d = dirname(d)) if (existsSync(join(d, 'package.json'))) return d;
  throw new Error(`no package.json above ${from}`);
}

const root = repoRoot(dirname(fileURLToPath(import.meta.url)));
const app = join(root, 'console', 'app');
export const OUT_DIR = join(root, 'dist', 'console', 'www');

const SHIMS: Record<string, string> = {
  'node:crypto': join(app, 'shims', 'node-crypto.ts'),
  'node:fs/promises': join(app, 'shims', 'node-fs.ts'),
  'node:fs': join(app, 'shims', 'node-fs.ts'),
  'node:path': join(app, 'shims', 'node-fs.ts'),
};

const nodeShims: Plugin = {
  name: 'qis-node-shims',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => {
      const to = SHIMS[args.path];
      if (!to) return { errors: [{ text: `${args.path} has no browser form (imported by ${args.importer})` }] };
      return { path: to };
    });
  },
};

export async function buildConsole(options: { minify?: boolean } = {}): Promise<Metafile> {
  mkdirSync(OUT_DIR, { recursive: true });
  const result = await build({
    entryPoints: { app: join(app, 'main.ts'), style: join(app, 'style.css') },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox115', 'safari16'],
    outdir: OUT_DIR,
    minify: options.minify ?? true,
    sourcemap: true,
    legalComments: 'linked',
    inject: [join(app, 'shims', 'buffer.ts')],
    define: { 'process.env.NODE_ENV': '"production"' },
    plugins: [nodeShims],
    logLevel: 'warning',
    metafile: true,
  });
  copyFileSync(join(app, 'index.html'), join(OUT_DIR, 'index.html'));
  return result.metafile;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildConsole();
}
