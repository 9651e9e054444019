/**
 * Connections in the log at info: each accepted CONNECT (client id, user, how it logged in) and
 * each disconnect with its reason (DISCONNECT sent, keepalive timeout, a client error, the
 * broker closing, or the connection closed). Bounded: a budget of lines per second
 * (a reconnect storm of thousands of clients does not become thousands of lines); lines past
 * it are counted and said in one line when the budget refills. Refusals are logged where they
 * are decided (connect.ts, respond.ts, subscribe.ts).
 */
import type { Aedes, Client } from 'aedes';
import type { BrokerContext } from './context.js';

/** Lines per second, and the burst a quiet broker may write at once. */
export const CONN_LOG_PER_SECOND = 20;
export const CONN_LOG_BURST = 200;

interface Seen {
  readonly at: number;
  reason?: string;
}

export function logConnections(ctx: Pick<BrokerContext, 'logger' | 'now' | 'auth'>, aedes: Aedes, isClosing: () => boolean): void {
  const seen = new WeakMap<Client, Seen>();
  let tokens = CONN_LOG_BURST;
  let last = ctx.now();
  let suppressed = 0;
  /** Whether one more line fits the budget; says how many did not once lines fit again. */
  const budget = (): boolean => {
    const now = ctx.now();
    tokens = Math.min(CONN_LOG_BURST, tokens + ((now - last) / 1000) * CONN_LOG_PER_SECOND);
    last = now;
    if (tokens < 1) {
      suppressed++;
      return false;
    }
    tokens--;
    if (suppressed > 0) {
      ctx.logger.info({ notLogged: suppressed }, `connects and disconnects not logged (over ${CONN_LOG_PER_SECOND} lines/s)`);
      suppressed = 0;
    }
    return true;
  };
  const why = (client: Client, reason: string): void => {
    const s = seen.get(client);
    if (s && s.reason === undefined) s.reason = reason;
  };

  aedes.on('client', (client) => {
    seen.set(client, { at: ctx.now() });
    if (!budget()) return;
    const id = ctx.auth.identity(client);
    const address = (client.conn as { remoteAddress?: string } | undefined)?.remoteAddress;
    ctx.logger.info({ clientId: client.id, user: id?.user, auth: id?.kind, ...(address !== undefined ? { address } : {}) }, 'client connected');
  });
  aedes.on('keepaliveTimeout', (client) => why(client, 'keepalive timeout'));
  aedes.on('clientError', (client, err) => why(client, `client error: ${err.message}`));
  aedes.on('clientDisconnect', (client) => {
    const s = seen.get(client);
    if (!s || !budget()) return;
    const c = client as Client & { _disconnected?: boolean };
    // Aedes sets _disconnected on a DISCONNECT packet only (it decides the will the same way).
    const reason = c._disconnected === true ? 'DISCONNECT' : (s.reason ?? (isClosing() ? 'broker closing' : 'connection closed (by the client, the network, a takeover or a refusal logged before)'));
    ctx.logger.info({ clientId: client.id, user: ctx.auth.user(client), reason, connectedS: Math.round((ctx.now() - s.at) / 1000) }, 'client disconnected');
  });
}
