// Runs a Python script with Debian's interpreter (/usr/bin/python3 sees the Debian packages
// python3-cbor2 and python3-cryptography that .ci/run installs): an independent implementation
// to check ours against.
import { existsSync } from 'node:fs';
import { run } from './run.js';

export const PYTHON = '/usr/bin/python3';

/** The Debian package that brings each Python module a test peer imports (directly or through another package). */
export const DEBIAN_PACKAGE_OF: Readonly<Record<string, string>> = {
  cbor2: 'python3-cbor2',
  cryptography: 'python3-cryptography',
  pymodbus: 'python3-pymodbus',
  serial: 'python3-serial',
  serial_asyncio: 'python3-serial-asyncio',
};

// Imports each module in turn; on the first that is missing prints its name (the innermost one,
// e.g. serial_asyncio when pymodbus imports it) and exits 3.
const CHECK_PY = `import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except ModuleNotFoundError as e:
        print(e.name or m)
        sys.exit(3)
`;

const checked = new Map<string, Promise<void>>();

/**
 * Resolves when /usr/bin/python3 can import every module; otherwise rejects with one line naming
 * the missing Debian package (never a Python traceback). Checked once per set of modules.
 */
export function requirePythonModules(...modules: string[]): Promise<void> {
  const key = modules.join(' ');
  let p = checked.get(key);
  if (p === undefined) {
    p = (async () => {
      if (!existsSync(PYTHON)) throw new Error(`${PYTHON} not found: install Debian's python3 (.ci/run does)`);
      const r = await run(PYTHON, ['-c', CHECK_PY, ...modules]);
      if (r.status === 0) return;
      const missing = r.stdout.trim();
      if (r.status === 3 && missing) {
        const top = missing.split('.')[0] ?? missing;
        const pkg = DEBIAN_PACKAGE_OF[top];
        throw new Error(`test peer missing: Python module '${missing}' not found; install Debian's ${pkg ?? `package providing ${top}`} (apt-get install --no-install-recommends ${pkg ?? '…'}; .ci/run does)`);
      }
      throw new Error(`${PYTHON} could not import ${modules.join(', ')} (exit ${r.status}): ${r.stderr.trim().split('\n').pop() ?? ''}`);
    })();
    checked.set(key, p);
  }
  return p;
}

export async function python(script: string, input: string): Promise<string> {
  await requirePythonModules('cbor2', 'cryptography');
  const r = await run(PYTHON, ['-c', script], { input });
  if (r.status !== 0) throw new Error(`python exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}
