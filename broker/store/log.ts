/**
 * Appending to the log: group commit (records queue into a batch written with one write(2) and,
 * under fsync 'always', one fdatasync), the fsync policies, and the failure that stops writes.
 * The compaction (compaction.ts) captures what is appended while it runs and switches files here.
 */
import type { FileHandle } from 'node:fs/promises';
import type { QisError } from '../../src/index.js';
import { ioError, noop } from './common.js';
import { writeAll } from './files.js';
import type { FsyncPolicy } from './types.js';

interface Batch {
  readonly bufs: Buffer[];
  bytes: number;
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class Log {
  /** Size of the log: appends go here. */
  pos = 0;
  /** While a compaction runs: what was appended to the old log since it started. */
  capture: Buffer[] | null = null;
  private batch: Batch | null = null;
  /** Serialises log writes, syncs and the compaction's switch of files. */
  private chain: Promise<void> = Promise.resolve();
  private failed: QisError | null = null;
  private unsynced = false;
  private timer: NodeJS.Timeout | null = null;

  /** @param written called after each batch is written (the compaction rule runs there) */
  constructor(
    private fh: FileHandle,
    readonly path: string,
    private readonly fsync: FsyncPolicy,
    private readonly written: () => void,
  ) {}

  get failure(): QisError | null {
    return this.failed;
  }

  /** Under fsync 'interval': sync every `ms`. */
  startTimer(ms: number): void {
    this.timer = setInterval(() => void this.exclusive(() => this.syncNow()), ms);
    this.timer.unref();
  }

  stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Queues a record; resolves when it is durable per the fsync policy (group commit). */
  append(rec: Buffer): Promise<void> {
    let b = this.batch;
    if (b === null) {
      let resolve = noop;
      let reject: (e: unknown) => void = noop;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const batch: Batch = { bufs: [], bytes: 0, done, resolve, reject };
      this.batch = b = batch;
      // The batch stays open (collecting records) until the writes before it are done.
      void this.exclusive(() => this.flush(batch));
    }
    b.bufs.push(rec);
    b.bytes += rec.length;
    return b.done;
  }

  durable(): Promise<void> {
    if (this.failed !== null) return Promise.reject(this.failed);
    // An open batch is flushed after everything queued before it; otherwise wait for the chain.
    if (this.batch !== null) return this.batch.done;
    return this.exclusive(async () => {
      if (this.failed !== null) throw this.failed;
    });
  }

  /** Runs fn after every write, sync and switch queued before it, and before any queued after. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.then(noop, noop);
    return p;
  }

  private async flush(b: Batch): Promise<void> {
    if (this.batch === b) this.batch = null;
    if (this.failed !== null) return b.reject(this.failed);
    const data = b.bufs.length === 1 ? (b.bufs[0] as Buffer) : Buffer.concat(b.bufs, b.bytes);
    try {
      await writeAll(this.fh, data, this.pos);
      this.pos += data.length;
      this.capture?.push(data);
      if (this.fsync === 'always') await this.fh.datasync();
      else this.unsynced = true;
    } catch (e) {
      this.fail(e);
      return b.reject(this.failed);
    }
    b.resolve();
    this.written();
  }

  /** After a failed write or sync the page cache cannot be trusted: refuse everything from now on. */
  fail(e: unknown): QisError {
    return (this.failed ??= ioError(`store log ${this.path} failed; the store accepts no more writes (close and reopen it)`, e));
  }

  private async syncNow(): Promise<void> {
    if (!this.unsynced || this.failed !== null) return;
    this.unsynced = false;
    try {
      await this.fh.datasync();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Appends go to `fh` (synced, `pos` bytes) from now on; returns the old handle. Call inside exclusive(). */
  switchTo(fh: FileHandle, pos: number): FileHandle {
    const old = this.fh;
    this.fh = fh;
    this.pos = pos;
    this.unsynced = false;
    return old;
  }

  /** Stops the timer, waits for queued writes, syncs (a clean close is durable whatever the policy) and closes the file. */
  async close(): Promise<void> {
    this.stopTimer();
    let error: QisError | undefined;
    await this.exclusive(async () => {
      try {
        if (this.failed === null) await this.fh.datasync();
      } catch (e) {
        error = ioError(`final sync of ${this.path} failed`, e);
      }
      await this.fh.close().catch(noop);
    });
    if (error !== undefined) throw error;
  }
}
