/**
 * mkdir -p that ends. Node's `mkdir(dir, { recursive: true })` spins forever where a missing
 * directory cannot be made and its parent exists (under /proc mkdir says ENOENT, its parent says
 * EEXIST, and libuv goes round again): `qis publish --data-dir /proc/x` hung at 100 % CPU.
 * Here each missing ancestor is made once, from the top down, and the first failure is thrown.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** Creates `dir` and its missing parents with `mode`; throws the first Node error (ENOENT, EACCES, ENOTDIR, …). */
export async function mkdirs(dir: string, mode = 0o700): Promise<void> {
  const missing: string[] = [];
  // The walk up stops at the root: one step per path component, so it is bounded.
  for (let d = resolve(dir); ; d = dirname(d)) {
    const r = await made(d, mode);
    if (r === true) break;
    if (dirname(d) === d) throw r;
    missing.push(d);
  }
  for (const d of missing.reverse()) {
    const r = await made(d, mode);
    // The parent exists now, so ENOENT here means this place takes no directories (/proc).
    if (r !== true) throw r;
  }
}

/** true: `d` is now a directory; the ENOENT error: its parent is missing; anything else throws. */
async function made(d: string, mode: number): Promise<true | Error> {
  try {
    await mkdir(d, { mode });
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return e as Error;
    if (code !== 'EEXIST') throw e;
    if ((await stat(d)).isDirectory()) return true;
    throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${d}'`), { code: 'ENOTDIR', path: d });
  }
}
