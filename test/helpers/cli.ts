// Runs the built `qis` (dist/cli/qis.js, made by `npm run build`, which `npm test` runs first).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const QIS = fileURLToPath(new URL('../../dist/cli/qis.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface Run { status: number | null; stdout: string; stderr: string; out: Buffer }

export function qis(args: string[], input?: Uint8Array | string): Promise<Run> {
  if (!existsSync(QIS)) throw new Error(`${QIS} is missing: run npm run build (npm test does)`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [QIS, ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (status) => {
      const o = Buffer.concat(out);
      resolve({ status, stdout: o.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), out: o });
    });
    child.stdin.end(input ?? '');
  });
}
