/**
 * Small crash-safe file steps shared by the node's data directory: a file is either its old
 * content or its new content after a crash at any instant, never a torn mix.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { QisError } from '../protocol/errors.js';

/** Wraps an fs failure as ERR_FILE_IO naming the path and the errno code. */
export function ioError(path: string, e: unknown): QisError {
  if (e instanceof QisError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  return new QisError('ERR_FILE_IO', `${path}: ${code}: ${(e as Error).message}`, { cause: e });
}

/** fsync a directory, so that a rename or unlink in it survives a power cut (POSIX). */
export async function syncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * Replaces `path` with `data` atomically and durably: write a temp file in the same directory,
 * fsync it, rename it over `path`, fsync the directory.
 * @throws QisError ERR_FILE_IO
 */
export async function writeFileDurable(path: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await syncDir(dir);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw ioError(path, e);
  }
}

/** Removes a file durably; a file already gone is not an error. */
export async function unlinkDurable(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw ioError(path, e);
  }
  await syncDir(dirname(path)).catch((e: unknown) => {
    throw ioError(dirname(path), e);
  });
}

/** mkdir -p with mode 0700 (a data directory holds a private key). */
export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ioError(dir, e);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Directories this process holds the lock of (real paths). */
const lockedHere = new Set<string>();

/**
 * Takes `dir/lock` for this process: two processes on one data directory would hand out the
 * same seq twice. A lock left by a dead process (kill -9, power cut) is taken over; so is one
 * holding this process's own pid when this process does not hold it (a container restarts its
 * main process as pid 1 every time).
 * @returns a function that releases the lock
 * @throws QisError ERR_DATA_DIR_LOCKED | ERR_FILE_IO
 */
export async function lockDir(dir: string): Promise<() => Promise<void>> {
  const path = join(dir, 'lock');
  let real: string;
  try {
    real = await realpath(dir);
  } catch (e) {
    throw ioError(dir, e);
  }
  if (lockedHere.has(real)) throw new QisError('ERR_DATA_DIR_LOCKED', `${dir} is already open in this process; close the other node first`);
  for (let tries = 0; tries < 20; tries++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      lockedHere.add(real);
      return async () => {
        lockedHere.delete(real);
        // Only remove a lock that is still ours.
        const now = await readFile(path, 'utf8').catch(() => '');
        if (now.trim() === String(process.pid)) await unlink(path).catch(() => undefined);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(path, e);
    }
    const text = await readFile(path, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (!(Number.isSafeInteger(pid) && pid > 0)) {
      // Empty or garbled: another process may have just created it and not written its pid yet.
      const age = await stat(path).then((st) => Date.now() - st.mtimeMs, () => Infinity);
      if (age < 1_000) {
        await new Promise((r) => setTimeout(r, Math.min(1_000 - age, 1_000) + 10));
        continue;
      }
    } else if (pid !== process.pid && pidAlive(pid)) {
      throw new QisError('ERR_DATA_DIR_LOCKED', `${dir} is in use by process ${pid} (a node or qis command); stop it or use another --data-dir`);
    }
    // Stale: its process is gone. Take it over atomically: only one of several processes doing
    // this at once can rename the file away; a plain unlink could delete a lock another process
    // has just created.
    const aside = `${path}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
    try {
      await rename(path, aside);
    } catch {
      continue; // someone else moved or replaced it: look again
    }
    const moved = await readFile(aside, 'utf8').catch(() => '');
    if (moved !== text) {
      // Between our read and the rename, another process took the lock: give it back.
      await link(aside, path).catch(() => undefined);
    }
    await unlink(aside).catch(() => undefined);
  }
  throw new QisError('ERR_DATA_DIR_LOCKED', `${dir}: could not take the lock (another process keeps taking it)`);
}
