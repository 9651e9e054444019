/**
 * The web console's static files (built by console/build.ts into dist/console/www) on the
 * broker's HTTP listener. Only the files the build wrote are served, by exact name: a request
 * path is never joined onto a directory, so no path can reach outside it.
 */
import { readdirSync, readFile } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

// The page talks MQTT over WebSocket to a broker the user names (maybe another host), so
// connect-src allows ws:/wss:; everything else comes from this origin.
const HEADERS = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
  'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
};

let files: { dir: string; names: ReadonlySet<string> } | null | undefined;

/** The build's output: next to the compiled broker (dist/broker → dist/console/www) or, run from source, under dist/. */
function consoleFiles(): { dir: string; names: ReadonlySet<string> } | null {
  if (files !== undefined) return files;
  const here = dirname(fileURLToPath(import.meta.url));
  for (const dir of [join(here, '..', 'console', 'www'), join(here, '..', 'dist', 'console', 'www')]) {
    try {
      return (files = { dir, names: new Set(readdirSync(dir).filter((n) => Object.hasOwn(TYPES, extname(n)))) });
    } catch {
      // not built here; try the next place
    }
  }
  return (files = null);
}

/**
 * Answers GET/HEAD for the console's files (`/` is index.html) and returns true; returns false,
 * having written nothing, for any other request so the caller answers it.
 */
export function serveConsole(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const path = (req.url ?? '').split('?')[0] ?? '';
  const name = path === '/' ? 'index.html' : path.slice(1);
  const f = consoleFiles();
  if (!f || !f.names.has(name)) return false;
  readFile(join(f.dir, name), (err, body) => {
    if (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('console file unreadable\n');
      return;
    }
    res.writeHead(200, { ...HEADERS, 'content-type': TYPES[extname(name)] as string, 'content-length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return true;
}
