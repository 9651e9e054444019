/**
 * The MQTT listeners (TCP, TLS, WebSocket) that hand each connection to Aedes, and `listen()`,
 * shared with the HTTP endpoint (http.ts).
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Aedes } from 'aedes';
import type { Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { framePerPacket } from './ws-frames.js';
import { QisError } from '../../src/index.js';
import type { ListenerOptions } from '../options.js';
import type { Limits } from './limits.js';

export interface BrokerAddress {
  readonly type: ListenerOptions['type'] | 'http';
  readonly host: string;
  readonly port: number;
  readonly path?: string;
}

export interface Listeners {
  /** Where each listener is bound; ports are real when 0 was asked. */
  addresses(): BrokerAddress[];
  /** Stops accepting and ends every open connection. */
  close(): void;
}

// The listener each connection came in on, for authentication (anonymous clients on loopback listeners, auth.ts).
const arrivedOn = new WeakMap<object, ListenerOptions>();

/** The listener a connection (the socket or stream handed to Aedes) came in on. */
export function listenerOf(conn: unknown): ListenerOptions | undefined {
  return typeof conn === 'object' && conn !== null ? arrivedOn.get(conn) : undefined;
}

// The remote address of each connection, for the publish rate limit (publish-rate.ts): a WebSocket stream has none of its own.
const cameFrom = new WeakMap<object, string>();

/** The remote address a connection (the socket or stream handed to Aedes) came from. */
export function remoteAddressOf(conn: unknown): string | undefined {
  return typeof conn === 'object' && conn !== null ? cameFrom.get(conn) : undefined;
}

/** Where `server` is bound. */
export function addressOf(type: BrokerAddress['type'], server: NetServer | HttpServer, path?: string): BrokerAddress {
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  const host = typeof a === 'object' && a ? a.address : '';
  return { type, host, port, ...(path ? { path } : {}) };
}

/**
 * Starts every listener of `listeners` in order; when one cannot listen, those started are closed.
 * @throws QisError ERR_FILE_IO (a TLS file, or the address cannot be bound)
 */
export async function startListeners(listeners: readonly ListenerOptions[], aedes: Aedes, logger: Logger, limits?: Pick<Limits, 'accept' | 'attach'>): Promise<Listeners> {
  const servers: { type: ListenerOptions['type']; server: NetServer | HttpServer; path?: string }[] = [];
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const close = (): void => {
    for (const s of servers) s.server.close();
    for (const s of sockets) s.destroy();
  };
  try {
    for (const l of listeners) {
      const server = mqttServer(l, aedes, logger, track, limits);
      await listen(server, l.port, l.host);
      servers.push({ type: l.type, server, ...(l.type === 'ws' ? { path: l.path } : {}) });
    }
  } catch (e) {
    close();
    throw e instanceof QisError ? e : new QisError('ERR_FILE_IO', `cannot listen: ${(e as Error).message}`, { cause: e });
  }
  for (const x of servers) x.server.on('error', (e) => logger.error({ err: e.message, listener: x.type }, 'listener error'));
  return { addresses: () => servers.map((s) => addressOf(s.type, s.server, s.path)), close };
}

/** One listener's server, not yet listening; each connection is tracked and handed to Aedes. */
function mqttServer(l: ListenerOptions, aedes: Aedes, logger: Logger, track: (s: Socket) => void, limits?: Pick<Limits, 'accept' | 'attach'>): NetServer | HttpServer {
  /** Counted by the limits before Aedes sees it (refused: closed at once), then its parser guarded. */
  const admit = (conn: NodeJS.EventEmitter & { destroy(): void }, address: string | undefined): boolean => {
    if (address !== undefined) cameFrom.set(conn, address);
    if (!limits) return true;
    if (limits.accept(address ?? '', (release) => conn.once('close', release))) return true;
    conn.destroy();
    return false;
  };
  const handle = (s: Socket): void => {
    track(s);
    arrivedOn.set(s, l);
    if (!admit(s, s.remoteAddress)) return;
    const client = aedes.handle(s);
    limits?.attach(client);
  };
  // TCP_NODELAY: a lone PUBLISH or PUBACK is not held back by Nagle's algorithm waiting for the
  // peer's delayed ACK (~40 ms on Linux each way; it was most of a federation hop's latency).
  if (l.type === 'tcp') return createNetServer({ noDelay: true }, handle);
  if (l.type === 'tls') {
    const read = (f: string): Buffer => {
      try {
        return readFileSync(f);
      } catch (e) {
        throw new QisError('ERR_FILE_IO', `TLS listener: ${f}: ${(e as Error).message}`, { cause: e });
      }
    };
    return createTlsServer({ cert: read(l.cert), key: read(l.key), ...(l.ca ? { ca: read(l.ca) } : {}), requestCert: l.requestCert === true, rejectUnauthorized: l.requestCert === true, noDelay: true }, handle);
  }
  const http = createHttpServer();
  http.on('connection', track);
  const wss = new WebSocketServer({ server: http, path: l.path });
  // ws re-emits the HTTP server's errors (EADDRINUSE…); listen() reports those.
  wss.on('error', (e) => logger.debug({ err: e.message }, 'WebSocket server error'));
  wss.on('connection', (ws, req) => {
    const stream = createWebSocketStream(ws);
    framePerPacket(stream, ws);
    stream.on('error', () => stream.destroy());
    arrivedOn.set(stream, l);
    if (!admit(stream, req.socket.remoteAddress)) return;
    const client = aedes.handle(stream as unknown as Socket);
    limits?.attach(client);
  });
  return http;
}

export function listen(server: NetServer | HttpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
