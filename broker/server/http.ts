/**
 * The HTTP endpoint (`http` in the options): the web console at `/`, `/healthz` and `/metrics`. Routes are the table in
 * `routes()`: a new page or API is one line there, `'<path>': handler`. A path ending in `*`
 * serves every path under it (e.g. `'/console/*'` for static files); exact paths win over these,
 * and longer prefixes over shorter ones. The query string is not part of the path.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { Aedes } from 'aedes';
import { QisError } from '../../src/index.js';
import { serveConsole } from '../console.js';
import type { BrokerContext } from './context.js';
import { addressOf, listen, type BrokerAddress } from './listeners.js';

export type Route = (req: IncomingMessage, res: ServerResponse) => void;

/** What the routes read: the broker's context and the running Aedes. */
export interface HttpDeps {
  readonly ctx: BrokerContext;
  readonly aedes: Pick<Aedes, 'closed' | 'connectedClients'>;
}

/** The HTTP routes, path → handler. Add a route here. */
export function routes(d: HttpDeps): Record<string, Route> {
  return {
    '/healthz': healthz(d),
    '/metrics': metrics(d),
    // The web console's static files (console/, built into dist/console/www); anything else is a 404.
    '/*': (req, res) => {
      if (!serveConsole(req, res)) notFound(res);
    },
  };
}

/** The handler of `path` in `table` (exact path first, then the longest `…*` prefix). */
export function routeOf(table: Readonly<Record<string, Route>>, path: string): Route | undefined {
  const exact = Object.hasOwn(table, path) ? table[path] : undefined;
  if (exact) return exact;
  let best: string | undefined;
  for (const key of Object.keys(table)) {
    if (key.endsWith('*') && path.startsWith(key.slice(0, -1)) && (best === undefined || key.length > best.length)) best = key;
  }
  return best === undefined ? undefined : table[best];
}

export interface HttpEndpoint {
  address(): BrokerAddress | undefined;
  close(): void;
}

/**
 * Starts the HTTP endpoint on `host:port`.
 * @throws QisError ERR_ADDRESS_IN_USE (another process holds the port) | ERR_FILE_IO (any other bind failure)
 */
export async function startHttp(d: HttpDeps, host: string, port: number): Promise<HttpEndpoint> {
  const table = routes(d);
  const server: HttpServer = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const route = routeOf(table, path);
    if (route) return route(req, res);
    notFound(res);
  });
  try {
    await listen(server, port, host);
  } catch (e) {
    server.close();
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new QisError('ERR_ADDRESS_IN_USE', `the HTTP endpoint (/healthz, /metrics) cannot listen on ${host}:${port}: another process listens there; choose another with --http HOST:PORT (port 0: any free port), or --http off`, { cause: e });
    }
    throw new QisError('ERR_FILE_IO', `cannot listen for HTTP on ${host}:${port}: ${(e as Error).message}`, { cause: e });
  }
  server.on('error', (e) => d.ctx.logger.error({ err: e.message }, 'HTTP server error'));
  return {
    address: () => (server.listening ? addressOf('http', server) : undefined),
    close: () => server.close(),
  };
}

function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('try / (the console), /healthz or /metrics\n');
}

/** Prometheus text exposition of the broker's registry. */
function metrics({ ctx }: HttpDeps): Route {
  const registry = ctx.metrics.registry;
  return (_req, res) => {
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      },
      (e: unknown) => {
        res.writeHead(500);
        res.end(String(e));
      },
    );
  };
}

/** 200 while Aedes runs and the store has not failed, else 503; JSON either way, with the federation links' state. */
function healthz({ ctx, aedes }: HttpDeps): Route {
  const store = ctx.store;
  return (_req, res) => {
    // links: each federation peer's state (the same as qis_federation_link_up); a link down does not make the broker unhealthy.
    const links = ctx.federation?.status().map((l) => ({ peer: l.peer, connected: l.connected, peerKind: l.peerKind, catchUps: l.catchUps }));
    const body = { ok: !aedes.closed && store.failure === null, ...(store.failure ? { error: store.failure.message } : {}), packets: store.size, clients: aedes.connectedClients, uptimeS: Math.round(process.uptime()), ...(links ? { links } : {}) };
    res.writeHead(body.ok ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
}
