/**
 * A verify worker thread: verifies batches of packets (PROTOCOL §5 checks) for the broker's pool
 * (broker/verifier.ts: packed in a transferred buffer, src/protocol/verify-wire.ts) and for a
 * query's cohort (src/node/cohort-verify.ts: the same packing, full packets back). An array of jobs
 * (structured clone) is still understood, for the bench's A/B against the former broker pool
 * (bench/legacy-verifier.ts). The CLI bundle carries it as dist/cli/verify-worker.js.
 */
import { writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { verifyJob, type Job, type JobResult } from './verify-job.js';
import { checkPackedBatch, verifyPacked, type CheckBatch } from './verify-wire.js';

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

// The broker's verifyNice: Linux keeps a niceness per thread, and pid 0 is the calling thread, so
// this lowers this thread's priority alone. Only ever lowered (a broker already started at a higher
// niceness keeps it), which needs no privilege. Elsewhere a process has one niceness: unchanged
// (the broker warns at start).
const nice = (workerData as { nice?: unknown } | undefined)?.nice;
if (process.platform === 'linux' && typeof nice === 'number' && nice > getPriority()) setPriority(nice);

// Named, so that `top -H`, `ps -L` and /proc tell the verify threads from V8's helpers and libuv's
// pool (they are all "node" otherwise): Linux lets a process rename its own threads, and
// /proc/thread-self is this thread. Elsewhere, or if /proc is not there: unnamed, as before.
const THREAD_NAME = 'qis-verify';
if (process.platform === 'linux') {
  try {
    writeFileSync('/proc/thread-self/comm', THREAD_NAME);
  } catch {
    // no /proc (a container without it): the name is only for people and the bench
  }
}

parentPort?.on('message', (m: Job[] | { buf: ArrayBuffer; count: number } | CheckBatch) => {
  if ('check' in m) {
    // A query's batch: the verified packets themselves go back (a structured clone), their byte
    // strings as views of the batch's buffer, which goes back with them transferred, not copied.
    parentPort?.postMessage(checkPackedBatch(m), [m.buf]);
    sinceGc += m.count;
  } else if (Array.isArray(m)) {
    const out: JobResult[] = m.map((j) => verifyJob(j));
    parentPort?.postMessage(out);
    sinceGc += m.length;
  } else {
    const r = verifyPacked(m);
    parentPort?.postMessage(r, [r.buf]);
    sinceGc += m.count;
  }
  if (gc && sinceGc >= GC_EVERY) {
    sinceGc = 0;
    gc();
  }
});
