/**
 * Page 2, Fleet: templates held (verified here), and the broker's own counters from /metrics on
 * the origin that served this page (admitted and refused per minute by code, storage use).
 * The counters are the broker's word, shown as such; the templates are checked by this page.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import { parseOutcomeTopic } from '../../src/index.js';
import { TimeChart, html, type View } from './charts.js';
import { POLL_MS, ratesPerMinute, useMetrics } from './metrics.js';
import { MAX_MESSAGES, type Session } from './session.js';

/** Nodes and packets retained per template, counted from topics (the Cohort explorer verifies them). */
function useRetainedCounts(session: Session): ReadonlyMap<string, { nodes: Set<string>; packets: number }> {
  const [counts, setCounts] = useState(new Map<string, { nodes: Set<string>; packets: number }>());
  useEffect(() => {
    const topics = new Set<string>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stop = session.watch('qis/1/o/#', (topic, payload) => {
      if (payload.length === 0) topics.delete(topic);
      else if (topics.size < MAX_MESSAGES) topics.add(topic);
      timer ??= setTimeout(() => {
        timer = undefined;
        const c = new Map<string, { nodes: Set<string>; packets: number }>();
        for (const t of topics) {
          try {
            const p = parseOutcomeTopic(t);
            const e = c.get(p.tplId) ?? { nodes: new Set<string>(), packets: 0 };
            e.nodes.add(p.nodeId);
            e.packets++;
            c.set(p.tplId, e);
          } catch {
            // not an outcome topic: not counted
          }
        }
        setCounts(c);
      }, 200);
    });
    return () => {
      stop();
      if (timer) clearTimeout(timer);
    };
  }, [session]);
  return counts;
}

export function FleetPage({ session }: { session: Session }): View {
  const { samples, error } = useMetrics();
  const counts = useRetainedCounts(session);
  const admitted = useMemo(() => ratesPerMinute(samples, 'qis_admitted_total'), [samples]);
  const refused = useMemo(() => ratesPerMinute(samples, 'qis_refused_total'), [samples]);
  const last = samples[samples.length - 1]?.values;
  const templates = [...session.templates.values()];
  const total = (name: string): number => [...(last?.entries() ?? [])].filter(([k]) => k.startsWith(`${name}{`) || k === name).reduce((a, [, v]) => a + v, 0);
  return html`<section aria-labelledby="h-fleet">
    <h2 id="h-fleet">Fleet</h2>
    <table class="templates" data-testid="templates"><caption>Templates held (documents verified in this page)</caption>
      <thead><tr><th scope="col">name</th><th scope="col">version</th><th scope="col">curator</th><th scope="col">nodes</th><th scope="col">packets</th><th scope="col">verification</th></tr></thead>
      <tbody>${templates.map((e) => {
        const c = counts.get(e.tplId);
        return html`<tr data-tpl=${e.tplId}>
          <td>${e.template?.doc.name ?? e.tplId}</td><td>${e.template?.doc.version ?? ''}</td>
          <td><code title=${e.curator}>${e.curator ? `${e.curator.slice(0, 10)}…` : ''}</code></td>
          <td data-testid="nodes">${c?.nodes.size ?? 0}</td><td data-testid="packets">${c?.packets ?? 0}</td>
          <td>${e.refused ? html`<span class="bad">✗ refused ${e.refused.code}</span>` : html`<span class="good">✓ verified</span>`}</td>
        </tr>`;
      })}</tbody>
    </table>
    <h3>Broker counters <small>(the broker's /metrics, as it reports them)</small></h3>
    ${error ? html`<p role="alert" class="error">${error}</p>` : null}
    <dl class="storage" data-testid="storage">
      <dt>packets stored</dt><dd data-testid="stored">${last?.get('qis_store_packets') ?? '–'}</dd>
      <dt>store log on disk</dt><dd>${last ? `${((last.get('qis_store_log_bytes') ?? 0) / 1024).toFixed(1)} KiB` : '–'}</dd>
      <dt>clients connected</dt><dd>${last?.get('qis_clients_connected') ?? '–'}</dd>
      <dt>admitted (total)</dt><dd data-testid="admitted-total">${last ? total('qis_admitted_total') : '–'}</dd>
      <dt>refused (total)</dt><dd data-testid="refused-total">${last ? total('qis_refused_total') : '–'}</dd>
    </dl>
    ${last ? html`<table class="codes" data-testid="refused-codes"><caption>Refused by code (total)</caption><thead><tr><th scope="col">code</th><th scope="col">count</th></tr></thead>
      <tbody>${[...last.entries()].filter(([k]) => k.startsWith('qis_refused_total{')).map(([k, v]) => html`<tr><td>${/"([^"]*)"/.exec(k)?.[1]}</td><td>${v}</td></tr>`)}</tbody></table>` : null}
    ${(admitted.data[0]?.length ?? 0) >= 2 ? html`<${TimeChart} title="Admitted per minute, by kind" series=${admitted.series} data=${admitted.data} />` : html`<p>Rates appear after three readings of /metrics (${POLL_MS / 1000} s apart).</p>`}
    ${refused.series.length > 0 && (refused.data[0]?.length ?? 0) >= 2 ? html`<div data-testid="refused-chart"><${TimeChart} title="Refused per minute, by code" series=${refused.series} data=${refused.data} /></div>` : null}
  </section>`;
}
