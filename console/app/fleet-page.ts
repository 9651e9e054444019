/**
 * Page 2, Fleet: templates held (verified here), and the broker's own counters from /metrics on
 * the origin that served this page (admitted and refused per minute by code, storage use).
 * The counters are the broker's word, shown as such; the templates are checked by this page.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import { checkPacket, checkPacketEnrolment, parseOutcomeTopic, readEnrolment, type EnrolmentReason, type ErrorCode } from '../../src/browser.js';
import { TimeChart, html, type View } from './charts.js';
import { POLL_MS, ratesPerMinute, useMetrics } from './metrics.js';
import { backend, topicIds, type Session } from './session.js';
import { useVerifiedMessages } from './verified-stream.js';

/** One outcome message as the Fleet page checks it: the packet's signature, then its enrolment's. */
export interface FleetEntry {
  readonly tplId: string;
  readonly nodeId: string;
  readonly code?: ErrorCode;
  /** The operator whose valid enrolment the packet carries (label 13). */
  readonly operator?: string;
  /** Why the packet counts as not enrolled ('missing': it carries none). */
  readonly notEnrolled?: EnrolmentReason;
}

/** src/'s checkPacket, then checkPacketEnrolment (any operator: the page trusts none in particular). */
export function checkFleetMessage(topic: string, payload: Uint8Array, now: number): FleetEntry {
  const ids = topicIds(parseOutcomeTopic, topic);
  const r = checkPacket(topic, payload, { backend, now });
  if (!r.ok) return { ...ids, code: r.code };
  const e = checkPacketEnrolment({ ...r.packet, tplId: ids.tplId }, { now, backend });
  return e.ok ? { ...ids, operator: e.enrolment.operatorId } : { ...ids, notEnrolled: e.reason };
}

/** The enrolment a packet carries, for WebCrypto to check with the batch (external_aad empty). */
const enrolmentOf = (payload: Uint8Array): { topic: string; payload: Uint8Array } | undefined => {
  const e = readEnrolment(payload);
  return e ? { topic: '', payload: e } : undefined;
};

interface Counts {
  /** Per template: nodes and packets verified. */
  readonly templates: ReadonlyMap<string, { nodes: Set<string>; packets: number }>;
  /** Per operator: the nodes whose packets carry its valid enrolment. */
  readonly operators: ReadonlyMap<string, Set<string>>;
  readonly notEnrolled: Set<string>;
  readonly refused: number;
}

function countFleet(entries: Iterable<FleetEntry>): Counts {
  const templates = new Map<string, { nodes: Set<string>; packets: number }>();
  const operators = new Map<string, Set<string>>();
  const notEnrolled = new Set<string>();
  let refused = 0;
  for (const m of entries) {
    if (m.code) {
      refused++;
      continue;
    }
    const t = templates.get(m.tplId) ?? { nodes: new Set<string>(), packets: 0 };
    t.nodes.add(m.nodeId);
    t.packets++;
    templates.set(m.tplId, t);
    if (m.operator) operators.set(m.operator, (operators.get(m.operator) ?? new Set<string>()).add(m.nodeId));
    else notEnrolled.add(m.nodeId);
  }
  return { templates, operators, notEnrolled, refused };
}

export function FleetPage({ session }: { session: Session }): View {
  const { samples, error } = useMetrics();
  const heard = useVerifiedMessages(session, 'qis/1/o/#', checkFleetMessage, enrolmentOf);
  const fleet = useMemo(() => countFleet(heard.messages.values()), [heard.version]);
  const counts = fleet.templates;
  const admitted = useMemo(() => ratesPerMinute(samples, 'qis_admitted_total'), [samples]);
  const refused = useMemo(() => ratesPerMinute(samples, 'qis_refused_total'), [samples]);
  const last = samples[samples.length - 1]?.values;
  const templates = [...session.templates.values()];
  const total = (name: string): number => [...(last?.entries() ?? [])].filter(([k]) => k.startsWith(`${name}{`) || k === name).reduce((a, [, v]) => a + v, 0);
  return html`<section aria-labelledby="h-fleet">
    <h2 id="h-fleet">Fleet</h2>
    <table class="templates" data-testid="templates"><caption>Templates held (documents and packets verified in this page${fleet.refused > 0 ? `; ${fleet.refused} packets refused` : ''})</caption>
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
    <table class="operators" data-testid="operators"><caption>Enrolment operators (PROTOCOL §10: enrolments verified in this page) and their nodes</caption>
      <thead><tr><th scope="col">operator</th><th scope="col">nodes</th></tr></thead>
      <tbody>${[...fleet.operators].sort((a, b) => b[1].size - a[1].size || (a[0] < b[0] ? -1 : 1)).map(([op, nodes]) => html`<tr data-operator=${op}><th scope="row"><code>${op}</code></th><td data-testid="operator-nodes">${nodes.size}</td></tr>`)}
        <tr data-operator="none"><th scope="row">not enrolled</th><td data-testid="operator-nodes">${fleet.notEnrolled.size}</td></tr></tbody>
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
