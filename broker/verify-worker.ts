/** Worker thread of the verifier pool: verifies batches of packets (PROTOCOL §5 checks). */
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import { verifyJob, type Job, type JobResult } from './verify-job.js';

// Each verified key is a KeyObject holding about 1 KB of native memory but a few bytes of heap,
// so V8 sees no reason to collect them and RSS climbs during a long burst of new nodes (measured:
// +122 MiB per 60k). A collection every GC_EVERY jobs keeps it flat.
const GC_EVERY = 20_000;
let sinceGc = 0;
const gc = ((): (() => void) | undefined => {
  try {
    v8.setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
})();

parentPort?.on('message', (batch: Job[]) => {
  const out: JobResult[] = batch.map((j) => verifyJob(j));
  parentPort?.postMessage(out);
  sinceGc += batch.length;
  if (gc && sinceGc >= GC_EVERY) {
    sinceGc = 0;
    gc();
  }
});
