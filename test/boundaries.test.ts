import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { boundaryViolations, specifiers, SRC_LAYERS, type SourceFile } from './helpers/boundaries.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function sources(dir: string): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.[cm]?[jt]sx?$/.test(name)) out.push({ path: relative(root, p).split('\\').join('/'), text: readFileSync(p, 'utf8') });
    }
  };
  walk(join(root, dir));
  return out;
}

t.test('boundaries - specifiers finds static, re-export, side-effect, dynamic and require imports', async (t) => {
  const text = [
    "import { a } from '../src/a.js';",
    "import type { B } from \"../src/b.js\";",
    "export * from '../src/c.js';",
    "import '../src/d.js';",
    "const e = await import('../src/e.js');",
    "const f = require('../src/f.js');",
    "import {\n  g,\n  h,\n} from '../src/g.js';",
  ].join('\n');
  t.same(specifiers(text), ['../src/a.js', '../src/b.js', '../src/c.js', '../src/d.js', '../src/e.js', '../src/f.js', '../src/g.js']);
});

t.test('boundaries - the rules flag each forbidden edge and allow src/index', async (t) => {
  const files: SourceFile[] = [
    { path: 'broker/ok.ts', text: "import { verifyPacket } from '../src/index.js';" },
    { path: 'broker/sub/ok.ts', text: "import { x } from '../../src/index.js'; import { y } from './local.js';" },
    { path: 'broker/bad.ts', text: "import { decodeCbor } from '../src/protocol/cbor.js';" },
    { path: 'firmware-bridge/bad1.ts', text: "import { store } from '../broker/store.js';" },
    { path: 'firmware-bridge/bad2.ts', text: "const p = await import('../src/protocol/packet.js');" },
    { path: 'src/node/bad.ts', text: "import { createBroker } from '../../broker/server.js';" },
    { path: 'cli/ok.ts', text: "import { main } from '../broker/server.js';" },
    { path: 'cli/ok2.ts', text: "const b = await import('../firmware-bridge/index.js');" },
    { path: 'firmware-bridge/ok.ts', text: "import { x } from './modbus.js'; import { y } from '../src/index.js';" },
    { path: 'firmware-bridge/bad3.ts', text: "import { usage } from '../cli/run.js';" },
  ];
  const v = boundaryViolations(files);
  t.equal(v.length, 5, v.join('\n'));
  t.match(v.join('\n'), /firmware-bridge\/bad3\.ts.*imports only src\/index/);
  t.match(v.join('\n'), /broker\/bad\.ts.*src\/protocol\/cbor/);
  t.match(v.join('\n'), /firmware-bridge\/bad1\.ts.*must not import broker/);
  t.match(v.join('\n'), /firmware-bridge\/bad2\.ts.*src\/protocol\/packet/);
  t.match(v.join('\n'), /src\/node\/bad\.ts.*must not import broker/);
});

t.test('boundaries - src/ layers import only downwards (protocol ← synthesis ← elections ← node ← index)', async (t) => {
  const ok: SourceFile[] = [
    { path: 'src/index.ts', text: "export { createNode } from './node/node.js'; export { jcs } from './protocol/jcs.js';" },
    { path: 'src/protocol/a.ts', text: "import { QisError } from './errors.js';" },
    { path: 'src/synthesis/a.ts', text: "import type { Outcome } from '../protocol/packet.js'; import { cmp } from './common.js';" },
    { path: 'src/elections/a.ts', text: "import { capWeights } from '../synthesis/index.js'; import { REL_BINS } from '../protocol/score.js';" },
    { path: 'src/node/a.ts', text: "import { thompsonChoose } from '../elections/darwin.js'; import { synthesize } from '../synthesis/index.js'; import { checkPacket } from '../protocol/packet.js'; import { Outbox } from './outbox.js';" },
    { path: 'src/node/deep/a.ts', text: "import { Channel } from '../channel.js'; import { jcs } from '../../protocol/jcs.js';" },
  ];
  t.same(boundaryViolations(ok), [], 'every downward or same-layer import is allowed');
  const bad: SourceFile[] = [
    { path: 'src/protocol/up1.ts', text: "import { synthesize } from '../synthesis/index.js';" },
    { path: 'src/protocol/up2.ts', text: "const n = await import('../node/tls.js');" },
    { path: 'src/synthesis/up.ts', text: "import type { Prediction } from '../elections/darwin.js';" },
    { path: 'src/elections/up.ts', text: "export { ensureDir } from '../node/durable.js';" },
    { path: 'src/node/top.ts', text: "import { createNode } from '../index.js';" },
    { path: 'src/protocol/deep/up.ts', text: "import { Outbox } from '../../node/outbox.js';" },
    { path: 'src/stray.ts', text: "import { jcs } from './protocol/jcs.js';" },
    { path: 'src/misc/x.ts', text: '' },
    { path: 'src/node/b.ts', text: "import { x } from '../stray.js';" },
  ];
  const v = boundaryViolations(bad);
  t.equal(v.length, 9, v.join('\n'));
  const all = v.join('\n');
  t.match(all, /src\/protocol\/up1\.ts imports \.\.\/synthesis\/index\.js: src\/protocol must not import src\/synthesis/);
  t.match(all, /src\/protocol\/up2\.ts imports \.\.\/node\/tls\.js: src\/protocol must not import src\/node/);
  t.match(all, /src\/synthesis\/up\.ts .*src\/synthesis must not import src\/elections/);
  t.match(all, /src\/elections\/up\.ts .*src\/elections must not import src\/node/);
  t.match(all, /src\/node\/top\.ts .*must not import src\/index/);
  t.match(all, /src\/protocol\/deep\/up\.ts .*src\/protocol must not import src\/node/);
  t.match(all, /src\/stray\.ts: every src\/ file but src\/index\.ts and src\/browser\.ts belongs in a layer folder/);
  t.match(all, /src\/misc\/x\.ts: every src\/ file/);
  t.match(all, /src\/node\/b\.ts imports \.\.\/stray\.js: a file outside the src\/ layer folders/);
});

t.test('boundaries - src/browser carries no node runtime; the page imports only it', async (t) => {
  const ok: SourceFile[] = [
    { path: 'src/browser.ts', text: "export { checkPacket } from './protocol/packet.js'; export { synthesize } from './synthesis/index.js'; export { rankTemplates } from './elections/darwin.js';" },
    { path: 'console/app/page.ts', text: "import { checkPacket } from '../../src/browser.js';" },
    { path: 'console/build.ts', text: "import { x } from '../src/index.js';" },
  ];
  t.same(boundaryViolations(ok), [], 'protocol, synthesis and elections may be re-exported; console/build (node) may use src/index');
  const bad: SourceFile[] = [
    { path: 'src/browser.ts', text: "export { createNode } from './node/node.js'; export * from './index.js';" },
    { path: 'console/app/page.ts', text: "import { createNode } from '../../src/index.js';" },
    { path: 'src/node/x.ts', text: "import { checkPacket } from '../browser.js';" },
  ];
  const v = boundaryViolations(bad);
  t.equal(v.length, 4, v.join('\n'));
  const all = v.join('\n');
  t.match(all, /src\/browser\.ts imports \.\/node\/node\.js: src\/browser exports only/);
  t.match(all, /src\/browser\.ts imports \.\/index\.js: src\/browser exports only/);
  t.match(all, /console\/app\/page\.ts imports .*: the page imports only src\/browser/);
  t.match(all, /src\/node\/x\.ts imports \.\.\/browser\.js: only the web console imports src\/browser/);
});

t.test('boundaries - the repository keeps them', async (t) => {
  const files = [...sources('src'), ...sources('broker'), ...sources('firmware-bridge'), ...sources('cli'), ...sources('console/app')];
  t.ok(files.some((f) => f.path === 'src/browser.ts'), 'walks src/browser.ts');
  t.ok(files.some((f) => f.path.startsWith('console/app/')), 'walks console/app/');
  t.ok(files.some((f) => f.path === 'firmware-bridge/modbus.ts'), 'walks firmware-bridge/');
  t.ok(files.some((f) => f.path === 'src/index.ts'), 'walks src/');
  for (const layer of SRC_LAYERS) t.ok(files.some((f) => f.path.startsWith(`src/${layer}/`)), `walks src/${layer}/`);
  t.same(boundaryViolations(files), []);
});
