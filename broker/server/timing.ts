/**
 * Latency histograms (metrics.ts) around the broker's slow steps: a callback or a verifier that
 * observes its own duration. One observation per admission, not a log line: a histogram's cost
 * is fixed whatever the traffic.
 */
import type { AdmissionKind } from '../metrics.js';
import type { Verifier } from '../verifier.js';
import type { BrokerContext, Done } from './context.js';

const seconds = (t0: number): number => (performance.now() - t0) / 1000;

/** `cb`, observing in `qis_admission_seconds{kind}` the time from now to its call. */
export function timedAdmission(ctx: Pick<BrokerContext, 'metrics'>, kind: AdmissionKind, cb: Done): Done {
  const t0 = performance.now();
  return (e) => {
    ctx.metrics.admissionSeconds.observe({ kind }, seconds(t0));
    cb(e);
  };
}

/** `done`, observing in `qis_sync_hold_seconds` how long the marker was held. */
export function timedSyncHold(ctx: Pick<BrokerContext, 'metrics'>, done: () => void): () => void {
  const t0 = performance.now();
  return () => {
    ctx.metrics.syncHoldSeconds.observe(seconds(t0));
    done();
  };
}

/** `v`, each verification observed in `qis_verify_seconds` (failed ones too). */
export function timedVerifier(v: Verifier, histogram: { observe(v: number): void }): Verifier {
  return {
    workers: v.workers,
    get inlined() {
      return v.inlined ?? 0;
    },
    verify(topic, bytes, o) {
      const t0 = performance.now();
      const p = v.verify(topic, bytes, o);
      void p.then(
        () => histogram.observe(seconds(t0)),
        () => histogram.observe(seconds(t0)),
      );
      return p;
    },
    close: () => v.close(),
  };
}
