/** What a bench must undo however it ends: temp dirs, child processes, brokers. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

export const cleanups: (() => Promise<void> | void)[] = [];

/** Runs every registered cleanup, newest first; a failing one is reported and the rest still run. */
export async function cleanup(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as () => Promise<void> | void;
    try {
      await fn();
    } catch (e) {
      process.stderr.write(`cleanup: ${(e as Error).message}\n`);
    }
  }
}

/** A temp directory removed by cleanup(). */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(os.tmpdir(), prefix));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
