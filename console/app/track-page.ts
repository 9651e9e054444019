/**
 * Page 4, Track records: rival templates ranked by their score packets (PROTOCOL §9), each
 * verified in this page like an outcome packet, pooled and ranked by src/'s rankTemplates (what
 * `qis templates rank` prints), with the calibration chart of src/'s calibrationPoints.
 */
import { useMemo, useState } from 'preact/hooks';
import { calibrationPoints, checkScorePacket, parseScoreTopic, rankTemplates, type ErrorCode, type RankRow, type TrackRecord, type VerifiedScore } from '../../src/browser.js';
import { CalibrationChart, fmt, html, pct, type View } from './charts.js';
import { backend, topicIds, backendName, type Session } from './session.js';
import { useVerifiedMessages } from './verified-stream.js';

/** Every node's score packet of every template: `qis/1/s/<tplId>/<nodeId>`. */
const SCORES = 'qis/1/s/+/+';

/** One score message and what the page's own verification made of it. */
export interface CheckedScore {
  readonly topic: string;
  readonly tplId: string;
  readonly nodeId: string;
  readonly score?: VerifiedScore;
  readonly code?: ErrorCode;
}

/** Checks one score message as `qis templates rank` does (src/'s checkScorePacket, the same backend rules). */
export function checkScoreMessage(topic: string, payload: Uint8Array, now: number): CheckedScore {
  const ids = topicIds(parseScoreTopic, topic);
  const r = checkScorePacket(topic, payload, { backend, now });
  return r.ok ? { topic, ...ids, score: r.score } : { topic, ...ids, code: r.code };
}

const f3 = (v: number): string => v.toFixed(3);
const interval = (v: number | undefined, i: readonly [number, number] | undefined, f: (x: number) => string): string => (v !== undefined && i ? `${f(v)} (${f(i[0])} – ${f(i[1])})` : '–');

export function TrackPage({ session }: { session: Session }): View {
  const heard = useVerifiedMessages(session, SCORES, checkScoreMessage);
  const [left, setLeft] = useState<ReadonlySet<string>>(new Set());
  const templates = [...session.templates.values()].flatMap((e) => (e.template ? [{ tplId: e.tplId, name: `${e.template.doc.name} v${e.template.doc.version}` }] : []));
  const names = new Map(templates.map((t) => [t.tplId, t.name]));
  const all = [...heard.messages.values()];
  const refused = all.filter((m) => m.code !== undefined);
  const unknown = all.filter((m) => m.score && !names.has(m.tplId)).length;
  const rows = useMemo<RankRow[]>(() => {
    const records: TrackRecord[] = templates
      .filter((t) => !left.has(t.tplId))
      .map((t) => ({ tplId: t.tplId, name: t.name, scores: all.flatMap((m) => (m.score && m.tplId === t.tplId ? [m.score] : [])) }));
    return rankTemplates(records);
  }, [heard.version, left, templates.map((t) => t.tplId).join()]);
  const toggle = (tplId: string): void => {
    const next = new Set(left);
    if (!next.delete(tplId)) next.add(tplId);
    setLeft(next);
  };
  return html`<section aria-labelledby="h-track">
    <h2 id="h-track">Track records</h2>
    <p>Rival templates ranked by what their nodes scored (PROTOCOL §9): the hit rate's posterior mean, then the lower Brier score (numeric outcomes: the lower mean absolute error). Intervals are 95 %.</p>
    <p class="summary" aria-live="polite" data-testid="score-summary">
      <span data-testid="scores-received">${all.length}</span>${' score packets heard, '}<span data-testid="scores-refused">${refused.length}</span>${" refused by this page's verification ("}${backendName()})${heard.pending > 0 ? `, ${heard.pending} waiting` : ''}${unknown > 0 ? `, ${unknown} for templates not held` : ''}.
    </p>
    ${templates.length === 0
      ? html`<p role="status">No verified template heard yet on <code>qis/1/t/+</code>.</p>`
      : html`<fieldset class="rivals"><legend>Rivals compared</legend>
          ${templates.map((t) => html`<label class="level"><input type="checkbox" checked=${!left.has(t.tplId)} onChange=${() => toggle(t.tplId)} /> ${t.name} <code>${t.tplId.slice(0, 8)}…</code></label>`)}
        </fieldset>`}
    ${rows.length > 0
      ? html`<table class="ranking" data-testid="ranking"><caption>Ranking</caption>
      <thead><tr><th scope="col">rank</th><th scope="col">template</th><th scope="col">nodes</th><th scope="col">predictions</th><th scope="col">hits</th><th scope="col">hit rate</th><th scope="col">Brier</th><th scope="col">MAE</th></tr></thead>
      <tbody>${rows.map((r, i) => html`<tr data-tpl=${r.tplId}>
        <td data-testid="rank">${i + 1}</td><th scope="row">${r.name ?? r.tplId}</th>
        <td data-testid="nodes">${r.nodes}</td><td data-testid="k">${r.k}</td><td data-testid="hits">${r.hits}</td>
        <td>${r.kHits > 0 ? interval(r.hitRate, r.hitInterval, pct) : '–'}</td>
        <td>${interval(r.brier, r.brierInterval, f3)}</td><td>${interval(r.mae, r.maeInterval, fmt)}</td>
      </tr>`)}</tbody></table>`
      : null}
    ${rows.some((r) => r.rel)
      ? html`<div data-testid="calibration"><${CalibrationChart} title="Reliability of rival templates" templates=${rows.filter((r) => r.rel).map((r) => ({ name: r.name ?? r.tplId, points: calibrationPoints(r.rel as number[]) }))} /></div>`
      : rows.length > 0 ? html`<p>No node sent a reliability histogram (score key 25): no calibration chart.</p>` : null}
    ${refused.length > 0
      ? html`<table class="packets" data-testid="refused-scores"><caption>Score packets refused by this page</caption>
      <thead><tr><th scope="col">template</th><th scope="col">node</th><th scope="col">verification (in this page)</th></tr></thead>
      <tbody>${refused.slice(0, 200).map((m) => html`<tr class="refused" data-node=${m.nodeId}><td>${names.get(m.tplId) ?? m.tplId}</td><td><code title=${m.nodeId}>${m.nodeId.slice(0, 10)}…</code></td><td data-testid="verdict"><span class="bad">✗ refused ${m.code}</span></td></tr>`)}</tbody></table>`
      : null}
  </section>`;
}
