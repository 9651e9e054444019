/**
 * The `qis/1/` publish rate limit (`admission.ratePerSecond`, `admission.burst`; issue 13): one
 * token bucket per *who*, not per client id. A client chooses its client id, so a bucket per id
 * was bypassed by rotating ids (a fresh full burst each). The key is the identity the connection
 * authenticated as (auth.ts: a node login, a password-file user, a certificate CN), or, for an
 * anonymous connection, its remote address: two nodes behind one address keep their own budgets,
 * and every anonymous client of one address shares one.
 *
 * A hit is refused with ERR_RATE_LIMITED (the connection is closed, as for every refused qis/1/
 * publish), counted in `qis_refused_total` and `qis_limit_hits_total`, and logged once per
 * episode (limits.ts `Episodes`), never once per packet.
 */
import type { Client } from 'aedes';
import { QisError } from '../../src/index.js';
import { checkRate, type Decision } from '../admission.js';
import type { Identity } from './auth.js';
import type { BrokerContext, Done } from './context.js';
import { remoteAddressOf } from './listeners.js';

/** The bucket of a connection: its authenticated user, else its remote address (`''`: the broker itself, or unknown). */
export function rateKey(identity: Identity | undefined, address: string | undefined): string {
  if (identity?.user !== undefined) return `${identity.kind}:${identity.user}`;
  // ::ffff:127.0.0.1 and 127.0.0.1 are one address.
  const a = address ?? '';
  return `address:${a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a}`;
}

/** The rate key of a connected client (its identity from connect.ts, its address from listeners.ts). */
export function rateKeyOf(ctx: Pick<BrokerContext, 'auth'>, client: Client | null): string {
  return rateKey(ctx.auth.identity(client), client === null ? undefined : remoteAddressOf(client.conn));
}

/** Takes one token for `client`; a refusal is counted and logged once per episode. */
export function checkPublishRate(ctx: Pick<BrokerContext, 'auth' | 'rate' | 'limits' | 'metrics' | 'now'>, client: Client | null): Decision {
  const key = rateKeyOf(ctx, client);
  const d = checkRate(ctx.rate, key, ctx.now());
  if (d.action !== 'refuse') return d;
  ctx.metrics.refused.inc({ code: d.code });
  ctx.limits.episodes.hit(d.code, d.message, { key, clientId: client?.id });
  return d;
}

/** The publish ends here when the rate refuses it (true): closed without a log line of its own. */
export function rateLimited(ctx: BrokerContext, client: Client | null, cb: Done): boolean {
  const d = checkPublishRate(ctx, client);
  if (d.action !== 'refuse') return false;
  cb(new QisError(d.code, d.message));
  return true;
}
