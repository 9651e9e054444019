// Runs a Python script with Debian's interpreter (/usr/bin/python3 sees the Debian packages
// python3-cbor2 and python3-cryptography that .ci/run installs): an independent implementation
// to check ours against.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

export const PYTHON = '/usr/bin/python3';

export function python(script: string, input: string): Promise<string> {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} not found: install Debian's python3 with python3-cbor2 and python3-cryptography (.ci/run does)`);
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (status) => (status === 0 ? resolve(out) : reject(new Error(`python exited ${status}: ${err}`))));
    child.stdin.end(input);
  });
}
