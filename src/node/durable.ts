/**
 * Small crash-safe file steps shared by the node's data directory: a file is either its old
 * content or its new content after a crash at any instant, never a torn mix.
 */
import { randomBytes } from 'node:crypto';
import { link, open, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { QisError } from '../protocol/errors.js';
import { mkdirs } from '../protocol/mkdirs.js';

/** Wraps an fs failure as ERR_FILE_IO naming the path and the errno code. */
export function ioError(path: string, e: unknown): QisError {
  if (e instanceof QisError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  const message = (e as Error).message;
  // Node's fs messages already begin with the code ("ENOENT: no such file…"): say it once.
  return new QisError('ERR_FILE_IO', `${path}: ${message.startsWith(`${code}:`) ? message : `${code}: ${message}`}`, { cause: e });
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
    await mkdirs(dir, 0o700);
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

/**
 * What identifies a process beyond its pid, which the kernel reuses (after a power cut the
 * booting system soon hands the dead holder's pid to another process): the boot id and the
 * process's start time in clock ticks since boot (/proc/<pid>/stat field 22). Undefined where
 * there is no /proc (then the pid alone decides, as before).
 */
async function processStamp(pid: number): Promise<{ start: string; boot: string } | undefined> {
  try {
    const [stat, boot] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile('/proc/sys/kernel/random/boot_id', 'utf8'),
    ]);
    // Field 2 (comm) is in parentheses and may hold spaces or ')': count from the last ')'.
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    return start !== undefined && /^\d+$/.test(start) ? { start, boot: boot.trim() } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a lock file holds to name its owner, this process: `pid starttime bootid\n` (Linux; the
 * pid alone elsewhere).
 */
export async function lockOwnerText(): Promise<string> {
  const me = await processStamp(process.pid);
  return me === undefined ? `${process.pid}\n` : `${process.pid} ${me.start} ${me.boot}\n`;
}

/**
 * The pid a lock file's text names and whether that process still runs: not when its pid is
 * gone, nor when the pid now belongs to another process (another start time or boot id). A text
 * of the older form (the pid alone) is decided by the pid. `pid` is undefined for an empty or
 * garbled text.
 */
export async function lockOwner(text: string): Promise<{ pid: number | undefined; alive: boolean }> {
  const [pidText, start, boot] = text.trim().split(/\s+/);
  const pid = /^\d+$/.test(pidText ?? '') ? Number(pidText) : NaN;
  if (!(Number.isSafeInteger(pid) && pid > 0)) return { pid: undefined, alive: false };
  if (!pidAlive(pid)) return { pid, alive: false };
  if (start === undefined || boot === undefined) return { pid, alive: true };
  const now = await processStamp(pid);
  // Unreadable: it exited just now (or there is no /proc here, where the pid alone decides).
  if (now === undefined) return { pid, alive: !existsSync('/proc/self/stat') };
  return { pid, alive: now.boot === boot && now.start === start };
}

/** Directories this process holds the lock of (real paths). */
const lockedHere = new Set<string>();

/**
 * Takes `dir/lock` for this process: two processes on one data directory would hand out the
 * same seq twice. The file holds `pid starttime bootid` (lockOwnerText). A lock
 * left by a dead process (kill -9, power cut) is taken over, also when its pid now belongs to
 * another process (another boot id or start time); so is one holding this process's own pid when
 * this process does not hold it (a container restarts its main process as pid 1 every time).
 * A kernel lock (flock) would need a native addon: Node has none, and the maintained packages
 * that add it build native code at install, which npm 11 does not run.
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
  const mine = await lockOwnerText();
  let waitedOn = ''; // the garbled lock file (inode, mtime, size) already given its second
  for (let tries = 0; tries < 20; tries++) {
    try {
      await writeFile(path, mine, { flag: 'wx', mode: 0o600 });
      lockedHere.add(real);
      return async () => {
        lockedHere.delete(real);
        // Only remove a lock that is still ours.
        const now = await readFile(path, 'utf8').catch(() => '');
        if (now === mine) await unlink(path).catch(() => undefined);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(path, e);
    }
    const text = await readFile(path, 'utf8').catch(() => '');
    const { pid, alive } = await lockOwner(text);
    if (pid === undefined) {
      // Empty or garbled: another process may have just created it and not written its pid yet.
      // Wait once on our own timer, then take over what is still the same garbled file. Not by
      // comparing its mtime with our clock: after a clock step (a Pi without a real-time clock
      // syncing NTP) the file can look a year old or a year in the future.
      const seen = await stat(path).then((st) => `${st.ino}:${st.mtimeMs}:${st.size}`, () => '');
      if (seen !== '' && seen !== waitedOn) {
        waitedOn = seen;
        await new Promise((r) => setTimeout(r, 1_010));
        continue;
      }
    } else if (pid !== process.pid && alive) {
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
