/**
 * The verifier pool as it was before issue 15 (structured-clone batches of up to 256 job objects,
 * every answer resolved in one turn), kept only for bench/broker.ts's A/B (`legacy` targets), so
 * that the new pool is measured against it in the same run. It uses the same worker file.
 */
import type { Worker } from 'node:worker_threads';
import type { Job, JobResult } from '../src/protocol/verify-job.js';
import { startVerifyWorker } from '../src/protocol/verify-wire.js';
import { toResult, type Verifier, type VerifyOptions, type VerifyResult } from '../broker/verifier.js';

const MAX_BATCH = 256;

interface Slot {
  worker: Worker;
  inflight: Map<number, Job>;
}

export class LegacyPool implements Verifier {
  readonly workers: number;
  readonly #slots: Slot[] = [];
  readonly #waiting = new Map<number, (r: VerifyResult) => void>();
  #queue: Job[] = [];
  #scheduled = false;
  #next = 0;

  constructor(n: number) {
    this.workers = n;
    for (let i = 0; i < n; i++) {
      const worker = startVerifyWorker();
      const slot: Slot = { worker, inflight: new Map() };
      worker.unref();
      worker.on('message', (results: JobResult[]) => {
        for (const r of results) {
          slot.inflight.delete(r.id);
          const done = this.#waiting.get(r.id);
          this.#waiting.delete(r.id);
          done?.(toResult(r));
        }
      });
      this.#slots.push(slot);
    }
  }

  verify(topic: string, bytes: Uint8Array, o: VerifyOptions): Promise<VerifyResult> {
    const id = this.#next++;
    // The former pool had no lanes: `source` (an Aedes client, which structured clone refuses) stays here.
    const { now, maxSkewMs, depth } = o;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.#queue.push({ id, topic, bytes: bytes.slice(), now, maxSkewMs, ...(depth !== undefined ? { depth } : {}) });
      if (this.#scheduled) return;
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        while (this.#queue.length > 0) {
          const slot = this.#slots.reduce((a, b) => (b.inflight.size < a.inflight.size ? b : a));
          const batch = this.#queue.splice(0, Math.min(MAX_BATCH, Math.ceil(this.#queue.length / this.#slots.length)));
          for (const j of batch) slot.inflight.set(j.id, j);
          slot.worker.postMessage(batch);
        }
      });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
