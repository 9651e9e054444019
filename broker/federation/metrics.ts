/** Prometheus metrics of the federation links, labelled by peer, on the broker's registry. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LATENCY_BUCKETS } from '../metrics.js';

export interface FedMetrics {
  up: Gauge<'peer'>;
  forwarded: Counter<'peer' | 'direction'>;
  refused: Counter<'peer' | 'code'>;
  dropped: Counter<'peer' | 'code'>;
  catchUpBytes: Counter<'peer'>;
  catchUps: Counter<'peer' | 'mode'>;
  lastCatchUp: Gauge<'peer'>;
  lag: Gauge<'peer'>;
  pending: Gauge<'peer'>;
  /** Send to the peer's acknowledgement of a forwarded packet or batch (one series per configured peer). */
  hop: Histogram<'peer'>;
}

export function fedMetrics(registry: Registry): FedMetrics {
  const r = [registry];
  return {
    up: new Gauge({ name: 'qis_federation_link_up', help: 'federation link connected (1) or not (0), by peer', labelNames: ['peer'] as const, registers: r }),
    forwarded: new Counter({ name: 'qis_federation_forwarded_total', help: 'packets forwarded over a link: out (sent to the peer, acknowledged) and in (received and stored here)', labelNames: ['peer', 'direction'] as const, registers: r }),
    refused: new Counter({ name: 'qis_federation_refused_total', help: 'packets received over a link that admission refused, by error code', labelNames: ['peer', 'code'] as const, registers: r }),
    dropped: new Counter({ name: 'qis_federation_dropped_total', help: 'packets received over a link and dropped: not newer than the stored one (ERR_SEQ_STALE) or over the link rate limit (ERR_RATE_LIMITED)', labelNames: ['peer', 'code'] as const, registers: r }),
    catchUpBytes: new Counter({ name: 'qis_federation_catchup_bytes_total', help: 'payload bytes of catch-up exchanges (digests, lists and packets, both directions)', labelNames: ['peer'] as const, registers: r }),
    catchUps: new Counter({ name: 'qis_federation_catchups_total', help: 'catch-ups completed, by mode (digest, or full retained exchange with a non-qis peer)', labelNames: ['peer', 'mode'] as const, registers: r }),
    lastCatchUp: new Gauge({ name: 'qis_federation_last_catchup_seconds', help: 'when the last catch-up with the peer completed, Unix seconds (absent before the first)', labelNames: ['peer'] as const, registers: r }),
    lag: new Gauge({ name: 'qis_federation_lag_ms', help: 'time from admission here to the peer acknowledging the last forwarded packet, ms', labelNames: ['peer'] as const, registers: r }),
    pending: new Gauge({ name: 'qis_federation_pending', help: 'packets forwarded to the peer and not yet acknowledged', labelNames: ['peer'] as const, registers: r }),
    hop: new Histogram({ name: 'qis_federation_hop_seconds', help: "one federation hop: a forward sent to the peer's acknowledgement, by peer", labelNames: ['peer'] as const, buckets: [...LATENCY_BUCKETS], registers: r }),
  };
}

const received = new WeakMap<Registry, Counter<'kind'>>();

/**
 * Packets that arrived over federation links, whichever side opened the link (live, 'put'
 * batches, catch-up), before any check: what the topology costs (a ring of 3 takes 4 per update).
 */
export function receivedCounter(registry: Registry): Counter<'kind'> {
  let c = received.get(registry);
  if (!c) {
    c = new Counter({ name: 'qis_federation_received_total', help: 'packets received over federation links (live, batches, catch-up) before any check, by kind (o, t, s, r)', labelNames: ['kind'] as const, registers: [registry] });
    received.set(registry, c);
  }
  return c;
}

/** The kind label of a forwarded topic (qis/1/<kind>/…). */
export const kindOf = (topic: string): string => topic.slice('qis/1/'.length, 'qis/1/'.length + 1);
