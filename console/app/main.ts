/**
 * qis console: served by the broker on its HTTP listener, talking MQTT over a WebSocket listener,
 * verifying every packet and template itself with src/ code. It trusts no broker: the broker URL
 * is the user's choice (`?mqtt=ws://…`), and what it says is checked before it is shown.
 */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { html, type View } from './charts.js';
import { CohortPage } from './cohort-page.js';
import { FleetPage } from './fleet-page.js';
import { LinksPage } from './links-page.js';
import { Session } from './session.js';
import { TrackPage } from './track-page.js';

const PAGES = [
  { id: 'cohort', label: 'Cohort explorer' },
  { id: 'fleet', label: 'Fleet' },
  { id: 'links', label: 'Links' },
  { id: 'track', label: 'Track records' },
] as const;
type PageId = (typeof PAGES)[number]['id'];

function pageOf(hash: string): PageId {
  const id = hash.replace(/^#\/?/, '').split('?')[0];
  return PAGES.find((p) => p.id === id)?.id ?? 'cohort';
}

function defaultUrl(): string {
  const q = new URLSearchParams(location.search).get('mqtt');
  if (q) return q;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${proto}://${location.hostname}:8083/mqtt`;
}

function Login({ onConnect }: { onConnect: (url: string, username: string, password: string) => void }): View {
  const [url, setUrl] = useState(defaultUrl());
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  return html`<form class="login" onSubmit=${(e: Event) => {
    e.preventDefault();
    onConnect(url, username, password);
  }}>
    <h2>Connect to a broker</h2>
    <label>WebSocket URL <input id="url" type="url" required value=${url} onInput=${(e: Event) => setUrl((e.target as HTMLInputElement).value)} /></label>
    <label>User name (if the listener asks) <input id="username" autocomplete="username" value=${username} onInput=${(e: Event) => setUsername((e.target as HTMLInputElement).value)} /></label>
    <label>Password <input id="password" type="password" autocomplete="current-password" value=${password} onInput=${(e: Event) => setPassword((e.target as HTMLInputElement).value)} /></label>
    <button type="submit">Connect</button>
  </form>`;
}

function App(): View {
  const [session, setSession] = useState<Session | undefined>(() => (new URLSearchParams(location.search).get('mqtt') ? new Session(defaultUrl(), {}) : undefined));
  const [page, setPage] = useState<PageId>(pageOf(location.hash));
  const [, setTick] = useState(0);
  useEffect(() => {
    const onHash = (): void => setPage(pageOf(location.hash));
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => session?.on(() => setTick((n) => n + 1)), [session]);
  return html`<header>
      <h1>qis console</h1>
      <nav aria-label="Pages"><ul>${PAGES.map((p) => html`<li><a href=${`#/${p.id}`} aria-current=${p.id === page ? 'page' : undefined}>${p.label}</a></li>`)}</ul></nav>
      <p class="conn" role="status" data-testid="conn">${session ? `${session.state}${session.error ? `: ${session.error}` : ''} · ${session.templates.size} templates` : 'not connected'}</p>
    </header>
    <main id="main">
      ${!session
        ? html`<${Login} onConnect=${(url: string, username: string, password: string) => setSession(new Session(url, { username, password }))} />`
        : page === 'fleet'
          ? html`<${FleetPage} session=${session} />`
          : page === 'links'
            ? html`<${LinksPage} />`
            : page === 'track'
              ? html`<${TrackPage} session=${session} />`
              : html`<${CohortPage} session=${session} />`}
    </main>`;
}

const root = document.getElementById('app') as HTMLElement;
root.textContent = ''; // the "Loading" text: render() adds to what is there
render(html`<${App} />`, root);
