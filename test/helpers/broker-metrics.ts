// Reading the qis broker's Prometheus counters (the same text /metrics serves) in tests.
import type { TestBroker } from './qis-broker.js';

/** `name{code="…"}` of the broker's metrics (0 when the series does not exist yet). */
export async function counter(b: TestBroker, name: string, code: string): Promise<number> {
  const m = new RegExp(`^${name}\\{code="${code}"\\} (\\d+)$`, 'm').exec(await b.broker.metricsText());
  return m ? Number(m[1]) : 0;
}

/** `qis_limit_hits_total{code}` of the broker. */
export const limitHits = (b: TestBroker, code: string): Promise<number> => counter(b, 'qis_limit_hits_total', code);
