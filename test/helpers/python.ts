// Runs a Python script with Debian's interpreter (/usr/bin/python3 sees the Debian packages
// python3-cbor2 and python3-cryptography that .ci/run installs): an independent implementation
// to check ours against.
import { existsSync } from 'node:fs';
import { run } from './run.js';

export const PYTHON = '/usr/bin/python3';

export async function python(script: string, input: string): Promise<string> {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} not found: install Debian's python3 with python3-cbor2 and python3-cryptography (.ci/run does)`);
  const r = await run(PYTHON, ['-c', script], { input });
  if (r.status !== 0) throw new Error(`python exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}
