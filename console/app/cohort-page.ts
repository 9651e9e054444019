/** Page 1, the Cohort explorer: a template, a situation, the live answer and the packets behind it. */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { Situation, Template } from '../../src/browser.js';
import { Histogram, ShareChart, fmt, html, pct, type View } from './charts.js';
import { cohortView, fieldChoices, type CohortView } from './cohort-model.js';
import { backendName, checkOutcomeMessage, type Checked, type Session } from './session.js';
import { useVerifiedMessages } from './verified-stream.js';

/** Rows shown in the packets table (the counts above it cover every packet). */
const MAX_ROWS = 200;

/** The page address's parameters after `#/cohort?`: `tpl=<id>` and a value per field (a link to an answer). */
const hashParams = (): URLSearchParams => new URLSearchParams(location.hash.split('?')[1] ?? '');

function initialSituation(t: Template): Record<string, string> {
  const given = hashParams();
  const s: Record<string, string> = {};
  for (const f of t.fields) {
    const c = fieldChoices(f);
    s[f.name] = given.get(f.name) ?? (c?.[0] ? String(c[0].value) : '');
  }
  return s;
}

function toSituation(t: Template, form: Record<string, string>): Situation | string {
  const s: Record<string, unknown> = {};
  for (const f of t.fields) {
    const v = form[f.name] ?? '';
    if (f.kind === 'number') {
      if (v.trim() === '' || !Number.isFinite(Number(v))) return `${f.name}: enter a number`;
      s[f.name] = Number(v);
    } else if (f.kind === 'boolean') s[f.name] = v === 'true';
    else {
      if (v === '') return `${f.name}: enter a value`;
      s[f.name] = v;
    }
  }
  return s;
}

export function CohortPage({ session }: { session: Session }): View {
  const templates = [...session.templates.values()].filter((e) => e.template);
  const [tplId, setTplId] = useState<string>(() => hashParams().get('tpl') ?? '');
  // A template named in the address is waited for (another one's packets are not fetched meanwhile).
  const entry = tplId ? session.templates.get(tplId) : templates[0];
  const template = entry?.template;
  const check = useMemo(() => (template ? (topic: string, payload: Uint8Array, now: number) => checkOutcomeMessage(template, topic, payload, now) : noCheck), [template]);
  const [form, setForm] = useState<Record<string, string>>({});
  const [widenChoice, setWidenChoice] = useState<number | undefined>(undefined);
  useEffect(() => {
    if (template) {
      setForm(initialSituation(template));
      setWidenChoice(undefined);
    }
  }, [template]);
  const heard = useVerifiedMessages(session, template ? `qis/1/o/${template.tplId}/#` : undefined, check);
  const situation = template && Object.keys(form).length > 0 ? toSituation(template, form) : undefined;
  const view = useMemo<CohortView | string | undefined>(() => {
    if (!template || situation === undefined) return undefined;
    if (typeof situation === 'string') return situation;
    try {
      return cohortView(template, situation, heard.messages.values(), widenChoice);
    } catch (e) {
      return (e as Error).message;
    }
  }, [template, JSON.stringify(situation), heard.version, widenChoice]);

  if (templates.length === 0 && !tplId) return html`<section aria-labelledby="h-cohort"><h2 id="h-cohort">Cohort explorer</h2><p role="status">No verified template heard yet on <code>qis/1/t/+</code>.</p></section>`;
  return html`<section aria-labelledby="h-cohort">
    <h2 id="h-cohort">Cohort explorer</h2>
    <form class="situation" onSubmit=${(e: Event) => e.preventDefault()}>
      <label>Template
        <select id="tpl" value=${entry?.tplId ?? tplId} onChange=${(e: Event) => setTplId((e.target as HTMLSelectElement).value)}>
          ${!entry ? html`<option value=${tplId}>waiting for ${tplId.slice(0, 8)}…</option>` : null}
          ${templates.map((t) => html`<option value=${t.tplId}>${t.template?.doc.name} v${t.template?.doc.version} (${t.tplId.slice(0, 8)}…)</option>`)}
        </select>
      </label>
      ${template?.fields.map((f) => {
        const choices = fieldChoices(f);
        const set = (v: string): void => setForm({ ...form, [f.name]: v });
        return html`<label>${f.name}${f.kind === 'number' ? ' (bin)' : ''}
          ${choices
            ? html`<select name=${f.name} value=${form[f.name] ?? ''} onChange=${(e: Event) => set((e.target as HTMLSelectElement).value)}>
                ${choices.map((c) => html`<option value=${String(c.value)}>${c.label}</option>`)}
              </select>`
            : html`<input name=${f.name} value=${form[f.name] ?? ''} onInput=${(e: Event) => set((e.target as HTMLInputElement).value)} />`}
        </label>`;
      })}
    </form>
    ${!template && entry?.refused ? html`<p role="alert" class="error">Template ${entry.tplId} refused by this page: ${entry.refused.code}</p>` : null}
    ${!entry ? html`<p role="status">Waiting for template <code>${tplId}</code> on <code>qis/1/t/+</code>…</p>` : null}
    ${typeof view === 'string' ? html`<p role="alert" class="error">${view}</p>` : view ? html`<${Answer} view=${view} template=${template as Template} heard=${heard} setWiden=${setWidenChoice} now=${session.now()} />` : null}
  </section>`;
}

function Answer({ view, template, heard, setWiden, now }: { view: CohortView; template: Template; heard: { messages: ReadonlyMap<string, Checked>; pending: number; forgotten: number }; setWiden: (w: number) => void; now: number }): View {
  const s = view.synthesis;
  const title = `${template.doc.name}: answer at widen ${view.widen}, ${view.packets.length} nodes`;
  const inView = new Set(view.packets.map((p) => p.topic));
  const rows = [...heard.messages.values()].filter((m) => m.code !== undefined || (m.packet && inView.has(m.topic))).sort((a, b) => Number(b.code !== undefined) - Number(a.code !== undefined) || b.arrivedAt - a.arrivedAt);
  return html`<div class="answer">
    <p class="summary" aria-live="polite" data-testid="summary">
      <span data-testid="received">${view.received}</span>${' packets heard for this template, '}<span data-testid="refused">${view.refused}</span>${" refused by this page's verification ("}<span data-testid="backend">${backendName()}</span>)${heard.pending > 0 ? html`, <span>${heard.pending} waiting</span>` : null}${heard.forgotten > 0 ? `, ${heard.forgotten} forgotten (over the cap)` : ''}.
    </p>
    <fieldset class="levels"><legend>Widening (nodes at each level)</legend>
      ${view.levels.map((l) => html`<label class="level"><input type="radio" name="widen" checked=${l.widen === view.widen} onChange=${() => setWiden(l.widen)} />
        <span>${l.widen === 0 ? 'exact cohort' : `widen ${l.widen}`}</span> <strong data-testid=${`level-${l.widen}`}>${l.nodes}</strong> nodes <code>${l.filter}</code></label>`)}
    </fieldset>
    <div class="chart-box" data-testid="chart" data-kind=${s.kind}>
      ${s.kind === 'category'
        ? html`<${ShareChart} s=${s} title=${title} />
            <table class="shares"><caption>Label shares with their ${Math.round(s.confidence * 100)} % intervals</caption>
              <thead><tr><th scope="col">label</th><th scope="col">nodes</th><th scope="col">share</th><th scope="col">interval</th></tr></thead>
              <tbody>${Object.entries(s.labels).map(([l, st]) => html`<tr data-label=${l}><td>${l}</td><td data-testid="count">${st.count}</td><td data-testid="share">${pct(st.proportion)}</td><td>${pct(st.low)} – ${pct(st.high)}</td></tr>`)}</tbody></table>`
        : s.kind === 'number'
          ? html`<${Histogram} values=${view.packets.flatMap((p) => (typeof p.out === 'number' ? [p.out] : []))} s=${s} title=${title} />
              <p>median <strong data-testid="median">${fmt(s.median)}</strong>${s.unit ? ` ${s.unit}` : ''}, p10–p90 ${fmt(s.p10)} – ${fmt(s.p90)}, ${s.count} nodes</p>`
          : s.kind === 'map'
            ? html`<p>Map outcome: ${Object.keys(s.keys).length} keys (${Object.keys(s.keys).join(', ')}).</p>`
            : html`<p data-testid="insufficient">${s.message}</p>`}
    </div>
    <table class="packets"><caption>Packets behind the answer, and every packet refused (${rows.length > MAX_ROWS ? `first ${MAX_ROWS} of ${rows.length}` : rows.length})</caption>
      <thead><tr><th scope="col">node</th><th scope="col">seq</th><th scope="col">age</th><th scope="col">outcome</th><th scope="col">verification (in this page)</th></tr></thead>
      <tbody>${rows.slice(0, MAX_ROWS).map((m) => html`<tr class=${m.code ? 'refused' : 'ok'} data-node=${m.nodeId}>
        <td><code title=${m.nodeId}>${m.nodeId.slice(0, 10)}…</code></td>
        <td>${m.packet?.seq ?? ''}</td>
        <td>${m.packet ? age(now - m.packet.ts) : ''}</td>
        <td>${m.packet ? JSON.stringify(m.packet.out) : ''}</td>
        <td data-testid="verdict">${m.code ? html`<span class="bad">✗ refused ${m.code}</span>` : html`<span class="good">✓ verified</span>`}</td>
      </tr>`)}</tbody>
    </table>
  </div>`;
}

const noCheck = (): never => {
  throw new Error('no template');
};

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
