import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { boundaryViolations, specifiers, type SourceFile } from './helpers/boundaries.js';

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
    { path: 'src/bad.ts', text: "import { createBroker } from '../broker/server.js';" },
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
  t.match(v.join('\n'), /src\/bad\.ts.*must not import broker/);
});

t.test('boundaries - the repository keeps them', async (t) => {
  const files = [...sources('src'), ...sources('broker'), ...sources('firmware-bridge'), ...sources('cli')];
  t.ok(files.some((f) => f.path === 'firmware-bridge/modbus.ts'), 'walks firmware-bridge/');
  t.ok(files.some((f) => f.path === 'src/index.ts'), 'walks src/');
  t.same(boundaryViolations(files), []);
});
