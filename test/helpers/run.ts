// Runs a program to completion with the given stdin and collects what it printed.
import { spawn } from 'node:child_process';

export interface Run { status: number | null; stdout: string; stderr: string; out: Buffer }

export function run(command: string, args: readonly string[], options: { input?: Uint8Array | string; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (status) => {
      const o = Buffer.concat(out);
      resolve({ status, stdout: o.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), out: o });
    });
    // A child that exits without reading all its input closes the pipe (EPIPE): its status and
    // output say what happened, so that is not an error of the run itself.
    child.stdin.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') reject(e);
    });
    child.stdin.end(options.input ?? '');
  });
}
