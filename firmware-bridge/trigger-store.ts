/** A machine's trigger state on disk, so edges survive a restart of the bridge. */
import { open } from 'node:fs/promises';
import { writeFileDurable } from '../src/index.js';
import type { BridgeEvent } from './events.js';
import type { MachineMapper } from './mapping.js';

/** Where a machine's trigger state lives: beside its node's key and outbox. */
export const STATE_FILE = 'bridge-triggers.json';
/** A trigger state file larger than this is not read (the config bounds what the bridge writes). */
const MAX_STATE_BYTES = 1 << 20;

/**
 * Persists a machine's trigger state (last values, threshold states) whenever it changes, so a
 * restart keeps edges: a fault that appeared while the bridge was down fires on its first poll.
 * Writes are durable (temp file, fsync, rename) and one at a time.
 */
export class TriggerStore {
  private chain: Promise<void> = Promise.resolve();
  private last = '';
  constructor(private readonly file: string, private readonly mapper: MachineMapper, private readonly emit: (e: BridgeEvent) => void) {}

  /** Restores the state saved by a previous run, if any; a corrupt file is reported and ignored. */
  async load(): Promise<void> {
    const m = this.mapper.machine.name;
    let text: string;
    try {
      const fh = await open(this.file, 'r');
      try {
        const size = (await fh.stat()).size;
        if (size > MAX_STATE_BYTES) return this.emit({ type: 'state-ignored', machine: m, code: 'ERR_FILE_IO', message: `${this.file}: ${size} bytes, more than ${MAX_STATE_BYTES}` });
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      return this.emit({ type: 'state-ignored', machine: m, code: 'ERR_FILE_IO', message: (e as Error).message });
    }
    try {
      this.mapper.restore(JSON.parse(text));
    } catch (e) {
      return this.emit({ type: 'state-ignored', machine: m, code: 'ERR_FILE_IO', message: `${this.file}: ${(e as Error).message}` });
    }
    this.last = this.key();
    this.emit({ type: 'state-restored', machine: m, readings: this.mapper.readings.size });
  }

  /** What decides a write: values and threshold states, not observation times (every poll). */
  private key(): string {
    const s = this.mapper.snapshot();
    return JSON.stringify([Object.entries(s.readings).map(([k, r]) => [k, r.value]), s.thresholds]);
  }

  save(): void {
    const key = this.key();
    if (key === this.last) return;
    this.last = key;
    const text = JSON.stringify(this.mapper.snapshot());
    this.chain = this.chain.then(() =>
      writeFileDurable(this.file, text).catch((e: unknown) => this.emit({ type: 'state-ignored', machine: this.mapper.machine.name, code: 'ERR_FILE_IO', message: `cannot save ${this.file}: ${(e as Error).message}` })),
    );
  }

  idle(): Promise<void> {
    return this.chain;
  }
}
