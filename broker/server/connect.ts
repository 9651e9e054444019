/**
 * CONNECT: MQTT 3.1.1 [MQTT-3.1.3-8], a zero-length client id requires clean session (else
 * CONNACK 2); then who the client is (auth.ts): CONNACK 4 or 5 with ERR_LOGIN_REFUSED otherwise.
 */
import type { AedesOptions, Client } from 'aedes';
import { checkConnect } from '../admission.js';
import { certificateUserOf, type AuthRefusal } from './auth.js';
import type { BrokerContext } from './context.js';
import { linkPeers } from './link-peers.js';
import { listenerOf } from './listeners.js';

type AuthDone = Parameters<NonNullable<AedesOptions['authenticate']>>[3];

/** Refusals logged at warn once per (reason, user), so a client retrying a bad login does not flood the log. */
const LOGGED_MAX = 1024;

export function connectHooks(ctx: BrokerContext): Required<Pick<AedesOptions, 'preConnect' | 'authenticate'>> {
  // preConnect sees the CONNECT packet, authenticate answers it: the verdict passes between them.
  const emptyIdDirty = new WeakSet<Client>();
  const logged = new Set<string>();
  const refused = (client: Client, r: AuthRefusal, user: string | undefined, cb: AuthDone): void => {
    ctx.metrics.refused.inc({ code: r.code });
    const key = `${r.reason}\u0000${user ?? ''}`;
    const first = !logged.has(key);
    if (first) {
      if (logged.size >= LOGGED_MAX) logged.clear();
      logged.add(key);
    }
    ctx.logger[first ? 'warn' : 'debug']({ code: r.code, reason: r.reason, clientId: client.id, user }, `connection refused (CONNACK ${r.returnCode}): ${r.message}`);
    cb(Object.assign(new Error(r.message), { returnCode: r.returnCode }) as Parameters<AuthDone>[0], false);
  };
  return {
    preConnect(client, packet, cb) {
      if (checkConnect(packet.clientId, packet.clean !== false).action === 'refuse') emptyIdDirty.add(client);
      cb(null, true);
    },
    authenticate(client, username, password, cb) {
      if (emptyIdDirty.has(client)) {
        ctx.metrics.refused.inc({ code: 'ERR_CLIENT_ID' });
        ctx.logger.warn({ code: 'ERR_CLIENT_ID' }, 'zero-length client id with clean session false refused (CONNACK 2)');
        return cb(Object.assign(new Error('identifier rejected'), { returnCode: 2 }) as Parameters<typeof cb>[0], false);
      }
      const facts = { clientId: client.id, username, password, listener: listenerOf(client.conn), certificateUser: certificateUserOf(client.conn) };
      ctx.auth.check(facts, ctx.now()).then(
        (v) => {
          if (!v.ok) return refused(client, v, username, cb);
          const peer = ctx.auth.peerCheck(client.id, v.identity);
          if (!peer.ok) return refused(client, peer, v.identity.user, cb);
          const region = linkPeers(ctx).connectCheck(client, v.identity);
          if (!region.ok) return refused(client, region, v.identity.user, cb);
          const live = (client as Client & { broker?: { clients?: Record<string, Client> } }).broker?.clients?.[client.id];
          const t = ctx.auth.takeover(live === client ? undefined : live, v.identity);
          if (!t.ok) return refused(client, t, v.identity.user, cb);
          ctx.auth.remember(client, v.identity);
          cb(null, true);
        },
        (e: unknown) => {
          ctx.logger.error({ err: e, clientId: client.id }, 'authentication failed');
          cb(Object.assign(new Error('server unavailable'), { returnCode: 3 }) as Parameters<typeof cb>[0], false);
        },
      );
    },
  };
}
