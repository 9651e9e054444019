/**
 * The store directory's files: opening (or creating) the log, positioned writes, directory
 * fsync, and the lock that keeps one process per directory.
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { QisError, lockOwner, lockOwnerText } from '../../src/index.js';
import { ioError, noop } from './common.js';
import { HEADER_BYTES, LOCK_FILE, LOG_FILE, MAGIC, TMP_FILE } from './format.js';

/**
 * node:fs/promises, passed down from broker/store.ts, the one module that imports it: tests swap
 * it there (t.mockImport of broker/store.js) to inject I/O failures into every part.
 */
export type Fs = typeof import('node:fs/promises');

export async function writeAll(fh: FileHandle, data: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, pos + done);
    if (bytesWritten <= 0) throw new Error('write(2) wrote nothing');
    done += bytesWritten;
  }
}

export async function fsyncDir(fs: Fs, dir: string): Promise<void> {
  const d = await fs.open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Opens the log for reading and positioned writes, creating it (atomically, synced) if absent. */
export async function openLog(fs: Fs, dir: string): Promise<FileHandle> {
  const path = join(dir, LOG_FILE);
  let fh: FileHandle;
  try {
    fh = await fs.open(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(`cannot open ${path}`, e);
    const tmp = join(dir, TMP_FILE);
    await fs.writeFile(tmp, MAGIC, { flush: true });
    await fs.rename(tmp, path);
    await fsyncDir(fs, dir);
    fh = await fs.open(path, 'r+');
  }
  try {
    const head = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await fh.read(head, 0, HEADER_BYTES, 0);
    if (!head.subarray(0, bytesRead).equals(MAGIC.subarray(0, bytesRead))) {
      throw new QisError('ERR_FILE_IO', `${path} is not a qis store log (format QISLOG v1); move it away or choose another dir`);
    }
    if (bytesRead < HEADER_BYTES) {
      // Cut inside the header (it was never written whole): an empty log.
      await fh.write(MAGIC, 0, HEADER_BYTES, 0);
      await fh.truncate(HEADER_BYTES);
      await fh.datasync();
    }
    return fh;
  } catch (e) {
    await fh.close().catch(noop);
    throw e;
  }
}

// One store per directory: two writers appending at their own offsets would destroy each other's
// records. The lock file names the owner (pid, start time, boot id: lockOwnerText); a lock whose
// process is gone (kill -9, or a power cut after which its pid went to another process) is taken over.
const lockedDirs = new Set<string>();

export async function lock(fs: Fs, dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  if (lockedDirs.has(dir)) throw new QisError('ERR_FILE_IO', `store ${dir} is already open in this process`);
  const mine = await lockOwnerText();
  try {
    await fs.writeFile(path, mine, { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(`cannot create lock ${path}`, e);
    const { pid, alive } = await lockOwner(await fs.readFile(path, 'utf8').catch(() => ''));
    if (pid !== undefined && pid !== process.pid && alive) {
      throw new QisError('ERR_FILE_IO', `store ${dir} is in use by process ${pid} (${path})`);
    }
    try {
      await fs.writeFile(path, mine);
    } catch (e2) {
      throw ioError(`cannot take over lock ${path}`, e2);
    }
  }
  lockedDirs.add(dir);
}

export async function unlock(fs: Fs, dir: string): Promise<void> {
  if (!lockedDirs.delete(dir)) return;
  await fs.unlink(join(dir, LOCK_FILE)).catch(noop);
}
