// Runs the built `qis` (dist/cli/qis.js, made by `npm run build`, which `npm test` runs first).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { fileURLToPath } from 'node:url';
import { run, type Run } from './run.js';

export const QIS = fileURLToPath(new URL('../../dist/cli/qis.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export function qis(args: string[], input?: Uint8Array | string): Promise<Run> {
  if (!existsSync(QIS)) throw new Error(`${QIS} is missing: run npm run build (npm test does)`);
  return run(process.execPath, [QIS, ...args], { cwd: ROOT, ...(input !== undefined ? { input } : {}) });
}

/** A temp directory removed when the test ends. */
export function tempDir(t: Test, prefix = 'qis-cli-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
