/**
 * Charts as plain SVG where the picture is a handful of bars (label shares with their intervals,
 * a histogram): readable by a screen reader through their titles and the table beside them.
 * Time series (Fleet, Links) and the calibration chart (Track records) use uPlot.
 */
import htm from 'htm';
import { h, type RefObject } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { REL_BINS, type CalibrationPoint, type CategorySummary, type NumberSummary } from '../../src/browser.js';

export const html = htm.bind(h);
/** What an htm template gives: one node, or several (main.ts's header and main). */
export type View = ReturnType<typeof html>;

const W = 560;
const ROW = 30;
const LEFT = 150;

/** Label shares (weighted proportion) as bars, with the 95 % interval as a whisker. */
export function ShareChart({ s, title }: { s: CategorySummary; title: string }): View {
  const labels = Object.entries(s.labels).sort((a, b) => b[1].proportion - a[1].proportion);
  const height = labels.length * ROW + 24;
  const x = (p: number): number => LEFT + p * (W - LEFT - 60);
  return html`<svg role="img" aria-labelledby="share-title" class="chart" viewBox=${`0 0 ${W} ${height}`} width=${W} height=${height}>
    <title id="share-title">${title}</title>
    ${[0, 0.25, 0.5, 0.75, 1].map((t) => html`<g><line x1=${x(t)} x2=${x(t)} y1="0" y2=${height - 20} class="grid" /><text x=${x(t)} y=${height - 6} class="tick" text-anchor="middle">${Math.round(t * 100)} %</text></g>`)}
    ${labels.map(([label, st], i) => {
      const y = i * ROW + 4;
      return html`<g data-label=${label}>
        <text x=${LEFT - 8} y=${y + 16} text-anchor="end" class="label">${label}</text>
        <rect x=${x(0)} y=${y} width=${x(st.proportion) - x(0)} height=${ROW - 10} class=${label === s.top ? 'bar top' : 'bar'} />
        <line x1=${x(st.low)} x2=${x(st.high)} y1=${y + 10} y2=${y + 10} class="whisker" />
        <line x1=${x(st.low)} x2=${x(st.low)} y1=${y + 4} y2=${y + 16} class="whisker" />
        <line x1=${x(st.high)} x2=${x(st.high)} y1=${y + 4} y2=${y + 16} class="whisker" />
        <text x=${x(Math.max(st.high, st.proportion)) + 6} y=${y + 16} class="value">${pct(st.proportion)}</text>
      </g>`;
    })}
  </svg>`;
}

export const pct = (p: number): string => `${(p * 100).toFixed(1)} %`;

/** Histogram of the cohort's numbers with the median and the p10–p90 band of the synthesis. */
export function Histogram({ values, s, title }: { values: readonly number[]; s: NumberSummary; title: string }): View {
  const H = 200;
  const lo = Math.min(s.min, ...values);
  const hi = Math.max(s.max, ...values);
  const nb = Math.max(1, Math.min(30, Math.ceil(Math.sqrt(values.length))));
  const span = hi - lo || 1;
  const counts = new Array<number>(nb).fill(0);
  for (const v of values) counts[Math.min(nb - 1, Math.floor(((v - lo) / span) * nb))]! += 1;
  const top = Math.max(1, ...counts);
  const x = (v: number): number => 40 + ((v - lo) / span) * (W - 60);
  const bw = (W - 60) / nb;
  return html`<svg role="img" aria-labelledby="hist-title" class="chart" viewBox=${`0 0 ${W} ${H + 30}`} width=${W} height=${H + 30}>
    <title id="hist-title">${title}</title>
    <rect x=${x(s.p10)} y="0" width=${Math.max(1, x(s.p90) - x(s.p10))} height=${H} class="band" />
    ${counts.map((c, i) => html`<rect x=${40 + i * bw + 1} y=${H - (c / top) * H} width=${Math.max(1, bw - 2)} height=${(c / top) * H} class="bar"><title>${c} nodes</title></rect>`)}
    <line x1=${x(s.median)} x2=${x(s.median)} y1="0" y2=${H} class="median" />
    <text x=${x(s.median) + 4} y="14" class="value">median ${fmt(s.median)}${s.unit ? ` ${s.unit}` : ''}</text>
    <text x="40" y=${H + 20} class="tick">${fmt(lo)}</text>
    <text x=${W - 20} y=${H + 20} class="tick" text-anchor="end">${fmt(hi)}</text>
  </svg>`;
}

export const fmt = (v: number): string => (Number.isInteger(v) ? String(v) : v.toPrecision(4));

const COLOURS = ['#1f5fa8', '#b3261e', '#2e7d32', '#7b1fa2', '#e65100', '#00695c'];

/** A uPlot chart, made again when `key` changes and fed new data otherwise. */
function usePlot(make: (el: HTMLDivElement) => uPlot, key: string, data: uPlot.AlignedData): RefObject<HTMLDivElement | null> {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!el.current) return;
    plot.current = make(el.current);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [key]);
  useEffect(() => plot.current?.setData(data), [data]);
  return el;
}

/**
 * Reliability (calibration) of rival templates: observed frequency of a label against the
 * probability it was given, per bin of src/'s calibrationPoints (the CLI's SVG draws the same
 * points), with the diagonal of perfect calibration.
 */
export function CalibrationChart({ templates, title }: { templates: readonly { name: string; points: readonly CalibrationPoint[] }[]; title: string }): View {
  const x = Array.from({ length: REL_BINS }, (_, i) => (i + 0.5) / REL_BINS);
  const data: uPlot.AlignedData = [x, x, ...templates.map((t) => x.map((_, i) => t.points.find((q) => q.bin === i)?.observed ?? null))];
  const el = usePlot(
    (node) =>
      new uPlot(
        {
          title,
          width: W,
          height: 360,
          scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
          series: [
            { label: 'predicted' },
            { label: 'perfectly calibrated', stroke: '#757575', dash: [4, 4], width: 1, points: { show: false } },
            ...templates.map((t, i) => ({ label: t.name, stroke: COLOURS[i % COLOURS.length] as string, width: 2, spanGaps: true, points: { show: true, size: 8 } })),
          ],
          axes: [{ label: 'predicted probability' }, { label: 'observed frequency' }],
        },
        data,
        node,
      ),
    templates.map((t) => t.name).join('\u0000'),
    data,
  );
  return html`<div ref=${el} role="img" aria-label=${`${title}: ${templates.map((t) => `${t.name}, ${t.points.map((q) => `${fmt(q.predicted)} predicted, ${pct(q.observed)} observed`).join('; ') || 'no reliability data'}`).join('. ')}`}></div>`;
}

/** A uPlot time series; `data[0]` is Unix seconds. */
export function TimeChart({ data, series, title }: { data: uPlot.AlignedData; series: readonly string[]; title: string }): View {
  const el = usePlot(
    (node) =>
      new uPlot(
        {
          title,
          width: W + 120,
          height: 220,
          // At least the last ten minutes on the x axis: one or two readings would otherwise span years.
          scales: { x: { time: true, range: (_u, min, max) => [Math.min(min, max - 600), max] } },
          series: [{}, ...series.map((label, i) => ({ label, stroke: COLOURS[i % COLOURS.length] as string, width: 2 }))],
          axes: [{}, { label: 'per minute' }],
        },
        data,
        node,
      ),
    series.join('\u0000'),
    data,
  );
  return html`<div ref=${el} role="img" aria-label=${title}></div>`;
}
