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

/**
 * On SIGINT/SIGTERM: run the cleanups and exit 130. Returns a flag the bench's own error handler
 * reads, to stay quiet while the signal handler ends the process.
 */
export function cleanupOnSignals(what = 'cleaning up'): { readonly interrupted: boolean } {
  const state = { interrupted: false };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      state.interrupted = true;
      process.stderr.write(`bench: ${sig}, ${what}\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  return state;
}
