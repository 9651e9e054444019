/**
 * Prometheus metrics of one broker (prom-client, on a registry of its own so several brokers in
 * one process do not collide). Refusals are labelled with the same stable codes as the logs.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from './store.js';

export interface Metrics {
  readonly registry: Registry;
  readonly admitted: Counter<'kind'>;
  readonly refused: Counter<'code'>;
  readonly dropped: Counter<'code'>;
  readonly expired: Counter;
  /** Limits hit (server/limits.ts), by error code. */
  readonly limitHits: Counter<'code'>;
}

export function createMetrics(store: Store, clients: () => number): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'qis_broker_process_' });
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
  return { registry, admitted, refused, dropped, expired, limitHits };
}
