/**
 * Page 3, Links: the broker's federation peers from its /metrics (qis_federation_*), as it
 * reports them: connected or not, lag, packets awaiting the peer's acknowledgement, forwarded in
 * and out, refused and dropped by code, catch-ups and when the last one completed; forwarded per
 * minute charted.
 */
import { useMemo } from 'preact/hooks';
import { TimeChart, html, type View } from './charts.js';
import { byLabel, ratesPerMinute, useMetrics } from './metrics.js';

export function LinksPage(): View {
  const { samples, error } = useMetrics();
  const last = samples[samples.length - 1]?.values;
  const forwarded = useMemo(() => ratesPerMinute(samples, 'qis_federation_forwarded_total'), [samples]);
  const up = byLabel(last, 'qis_federation_link_up', 'peer');
  const lag = byLabel(last, 'qis_federation_lag_ms', 'peer');
  const pending = byLabel(last, 'qis_federation_pending', 'peer');
  const catchUps = byLabel(last, 'qis_federation_catchups_total', 'peer');
  const lastCatchUp = byLabel(last, 'qis_federation_last_catchup_seconds', 'peer');
  const refused = byLabel(last, 'qis_federation_refused_total', 'peer');
  const dropped = byLabel(last, 'qis_federation_dropped_total', 'peer');
  const dir = (peer: string, d: string): number => last?.get(`qis_federation_forwarded_total{peer="${peer}",direction="${d}"}`) ?? 0;
  const peers = [...up.keys()].sort();
  return html`<section aria-labelledby="h-links">
    <h2 id="h-links">Links</h2>
    <p>Federation peers of the broker that served this page (its /metrics, as it reports them).</p>
    ${error ? html`<p role="alert" class="error">${error}</p>` : null}
    ${last && peers.length === 0 ? html`<p data-testid="no-links">This broker has no federation links.</p>` : null}
    ${peers.length > 0
      ? html`<table class="links" data-testid="links"><caption>Peers</caption>
      <thead><tr><th scope="col">peer</th><th scope="col">state</th><th scope="col">lag</th><th scope="col">awaiting ack</th><th scope="col">forwarded out</th><th scope="col">forwarded in</th><th scope="col">refused</th><th scope="col">dropped</th><th scope="col">catch-ups</th><th scope="col">last catch-up</th></tr></thead>
      <tbody>${peers.map((p) => html`<tr data-peer=${p}>
        <th scope="row">${p}</th>
        <td data-testid="state">${up.get(p) === 1 ? html`<span class="good">● up</span>` : html`<span class="bad">○ down</span>`}</td>
        <td>${lag.has(p) ? `${Math.round(lag.get(p) as number)} ms` : '–'}</td>
        <td>${pending.get(p) ?? 0}</td>
        <td data-testid="out">${dir(p, 'out')}</td>
        <td data-testid="in">${dir(p, 'in')}</td>
        <td>${refused.get(p) ?? 0}</td>
        <td>${dropped.get(p) ?? 0}</td>
        <td>${catchUps.get(p) ?? 0}</td>
        <td data-testid="last-catchup">${lastCatchUp.has(p) ? html`<time datetime=${new Date((lastCatchUp.get(p) as number) * 1000).toISOString()} data-unix=${lastCatchUp.get(p)}>${since(samples[samples.length - 1]?.t, lastCatchUp.get(p) as number)}</time>` : 'never'}</td>
      </tr>`)}</tbody></table>`
      : null}
    ${(forwarded.data[0]?.length ?? 0) >= 2 && forwarded.series.length > 0 ? html`<${TimeChart} title="Forwarded per minute, by peer and direction" series=${forwarded.series} data=${forwarded.data} />` : null}
  </section>`;
}

/** How long before this page's reading `at` (Unix s) the catch-up completed at broker time `t`: the two clocks are assumed close; the exact time is in the element's datetime. */
function since(at: number | undefined, t: number): string {
  const s = Math.max(0, Math.round((at ?? t) - t));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}
