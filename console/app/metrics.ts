/**
 * The broker's /metrics (Prometheus text) read from the origin that served the page, every
 * POLL_MS, bounded. These are the broker's own counters: pages show them as its word.
 */
import { useEffect, useState } from 'preact/hooks';

/** How often /metrics is read: `?poll=MS` in the page's address, 1 to 60 s; default 5 s. */
export const POLL_MS = Math.min(60_000, Math.max(1000, Number(new URLSearchParams(location.search).get('poll') ?? 5000) || 5000));
/** Samples kept (an hour at the poll interval). */
const MAX_SAMPLES = 720;
/** Largest /metrics body read. */
const MAX_METRICS_BYTES = 1 << 20;

export interface Sample {
  /** Unix seconds. */
  readonly t: number;
  /** Counter and gauge values by `name{labels}`. */
  readonly values: ReadonlyMap<string, number>;
}

/** The samples of a Prometheus text exposition (names and labels kept as written). */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

/** Per-minute rates between consecutive samples of every series named `name{...}`. */
export function ratesPerMinute(samples: readonly Sample[], name: string): { series: string[]; data: number[][] } {
  const keys = new Set<string>();
  for (const s of samples) for (const k of s.values.keys()) if (k.startsWith(`${name}{`)) keys.add(k);
  const series = [...keys].sort();
  const t: number[] = [];
  const cols: number[][] = series.map(() => []);
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1] as Sample;
    const b = samples[i] as Sample;
    const dt = (b.t - a.t) / 60;
    if (dt <= 0) continue;
    t.push(b.t);
    series.forEach((k, j) => (cols[j] as number[]).push(Math.max(0, ((b.values.get(k) ?? 0) - (a.values.get(k) ?? 0)) / dt)));
  }
  // A series is named by its label values: `ERR_BAD_SIGNATURE`, `b out`.
  return { series: series.map((k) => [...k.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join(' ') || k), data: [t, ...cols] };
}

export function useMetrics(): { samples: readonly Sample[]; error: string } {
  const [state, setState] = useState<{ samples: readonly Sample[]; error: string }>({ samples: [], error: '' });
  useEffect(() => {
    let stopped = false;
    const samples: Sample[] = [];
    const poll = async (): Promise<void> => {
      try {
        const r = await fetch('metrics', { cache: 'no-store' });
        if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
        const text = await r.text();
        if (text.length > MAX_METRICS_BYTES) throw new Error('/metrics is too large');
        samples.push({ t: Date.now() / 1000, values: parseMetrics(text) });
        if (samples.length > MAX_SAMPLES) samples.shift();
        if (!stopped) setState({ samples: [...samples], error: '' });
      } catch (e) {
        if (!stopped) setState({ samples: [...samples], error: (e as Error).message });
      }
    };
    void poll();
    const id = setInterval(() => void poll(), POLL_MS);
    return () => {
      stopped = true;
      clearInterval(id);
    };
  }, []);
  return state;
}


/** Series named `name{...}` in a reading, by the value of `label`. */
export function byLabel(values: ReadonlyMap<string, number> | undefined, name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  if (!values) return out;
  const re = new RegExp(`${label}="([^"]*)"`);
  for (const [k, v] of values) {
    if (!k.startsWith(`${name}{`)) continue;
    const l = re.exec(k)?.[1];
    if (l !== undefined) out.set(l, (out.get(l) ?? 0) + v);
  }
  return out;
}
