// The package is publishable: licensed Apache-2.0, not private, and `npm pack` (run for real, dry,
// without scripts) ships what an installed `qis` needs and nothing of the tests or benches.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './helpers/run.js';
import { ROOT } from './helpers/cli.js';

interface Pack { files: { path: string }[] }

t.test('package - Apache-2.0, publishable, npm pack ships the CLI, the licence and the demo templates', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
  t.equal(pkg.license, 'Apache-2.0');
  t.notOk('private' in pkg, 'not private');
  t.same(pkg.bin, { qis: 'dist/cli/qis.mjs' }, 'the esbuild build (cli/bundle.ts)');
  t.ok((pkg.engines as Record<string, string>).node, 'engines.node');
  const scripts = pkg.scripts as Record<string, string>;
  t.equal(scripts.prepublishOnly, 'npm test', 'prepublishOnly builds and tests (npm test = build, typecheck, tap)');
  t.match(scripts.test, /npm run build/);

  const licence = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
  t.match(licence, /Apache License\s+Version 2\.0, January 2004/);
  t.match(licence, /3\. Grant of Patent License/);
  t.match(licence, /END OF TERMS AND CONDITIONS/);

  // --ignore-scripts: the test does not rebuild; npm test built dist/ before the tests run.
  const r = await run('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], { cwd: ROOT });
  t.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as Pack[])[0]!.files.map((f) => f.path);
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/cli/qis.mjs', 'dist/cli/verify-worker.js', 'dist/cli/qis.js', 'dist/src/index.js', 'dist/src/index.d.ts',
    'examples/bearing-failure.yaml', 'examples/maize-yield.yaml', 'docs/PROTOCOL.md', 'dist/console/www/index.html', 'dist/console/www/app.js']) {
    t.ok(files.includes(f), `ships ${f}`);
  }
  t.same(files.filter((f) => /^(dist\/)?(test|bench)\//.test(f) || f.startsWith('node_modules/')), [], 'no tests, benches or node_modules');
  t.match(readFileSync(join(ROOT, 'dist/cli/qis.mjs'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'the bin has a shebang');
  t.match(readFileSync(join(ROOT, 'dist/cli/qis.js'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'so has dist/cli/qis.js');
});
