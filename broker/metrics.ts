/**
 * Prometheus metrics of one broker (prom-client, on a registry of its own so several brokers in
 * one process do not collide). Refusals are labelled with the same stable codes as the logs.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { packageVersion } from './build-info.js';
import type { Store } from './store.js';

/** Seconds, 0.5 ms to 10 s: a verification in a worker is ~0.1 ms, a sync hold may reach seconds. */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);

/** The admissions timed in `qis_admission_seconds{kind}`: a fixed set, so the label stays bounded. */
export type AdmissionKind = 'outcome' | 'score' | 'template' | 'revocation';

export interface Metrics {
  readonly registry: Registry;
  readonly admitted: Counter<'kind'>;
  readonly refused: Counter<'code'>;
  readonly dropped: Counter<'code'>;
  readonly expired: Counter;
  /** Limits hit (server/limits.ts), by error code. */
  readonly limitHits: Counter<'code'>;
  /** PUBLISH to admission's answer (verification, seq check, durable write), by {@link AdmissionKind}. */
  readonly admissionSeconds: Histogram<'kind'>;
  /** One signature verification, queueing for a worker included. */
  readonly verifySeconds: Histogram;
  /** How long a sync marker waited for the client's retained delivery (PROTOCOL §7). */
  readonly syncHoldSeconds: Histogram;
  /** Config reloads (SIGHUP), by result: applied, or refused (the running config kept). */
  readonly reloads: Counter<'result'>;
}

/** `inlined`: verifications the main thread ran so far (broker/verifier.ts), for `qis_verify_inline_total`. */
export function createMetrics(store: Store, clients: () => number, inlined: () => number = () => 0): Metrics {
  const registry = new Registry();
  // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, …) that
  // dashboards and alerts expect; each broker's registry is its own, so brokers in one process do not collide.
  collectDefaultMetrics({ register: registry });
  new Gauge({ name: 'qis_build_info', help: 'always 1; the labels say which qis-mqtt and Node.js run', labelNames: ['version', 'node'] as const, registers: [registry] }).set({ version: packageVersion(), node: process.version }, 1);
  const admitted = new Counter({
    name: 'qis_admitted_total',
    help: 'qis publishes admitted and stored, by kind (packet, move to a new bucket, tombstone, template)',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const refused = new Counter({
    name: 'qis_refused_total',
    help: 'publishes, subscriptions and connections refused, by error code (the client is disconnected for publishes)',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const dropped = new Counter({
    name: 'qis_dropped_total',
    help: 'publishes acknowledged and dropped without disconnecting (stale seq), by error code',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const expired = new Counter({ name: 'qis_expired_total', help: 'packets removed because their exp passed', registers: [registry] });
  new Gauge({
    name: 'qis_store_packets',
    help: 'packets stored (one per node and template)',
    registers: [registry],
    collect() {
      this.set(store.size);
    },
  });
  new Gauge({
    name: 'qis_store_log_bytes',
    help: 'size of the store log on disk',
    registers: [registry],
    collect() {
      this.set(store.stats().logBytes);
    },
  });
  new Gauge({
    name: 'qis_clients_connected',
    help: 'MQTT clients connected',
    registers: [registry],
    collect() {
      this.set(clients());
    },
  });
  const limitHits = new Counter({
    name: 'qis_limit_hits_total',
    help: 'limits hit (connections, packet size, keepalive, CONNECT deadline, subscriptions, retained), by error code',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const buckets = [...LATENCY_BUCKETS];
  const admissionSeconds = new Histogram({ name: 'qis_admission_seconds', help: 'qis publish to admission decision (verification, seq check, durable write), by kind', labelNames: ['kind'] as const, buckets, registers: [registry] });
  const verifySeconds = new Histogram({ name: 'qis_verify_seconds', help: 'one signature verification, waiting for a verifier thread included', buckets, registers: [registry] });
  new Counter({
    name: 'qis_verify_inline_total',
    help: 'signature verifications run on the main thread (the verify threads idle, within verifyInline a second; all of them with verifyWorkers 0)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(inlined());
    },
  });
  const syncHoldSeconds = new Histogram({ name: 'qis_sync_hold_seconds', help: "time a query's sync marker was held until the client's retained delivery was written (PROTOCOL §7)", buckets, registers: [registry] });
  const reloads = new Counter({ name: 'qis_config_reloads_total', help: 'config reloads (SIGHUP), by result: applied or refused (the running config kept)', labelNames: ['result'] as const, registers: [registry] });
  return { registry, admitted, refused, dropped, expired, limitHits, admissionSeconds, verifySeconds, syncHoldSeconds, reloads };
}
