/** CONNECT: MQTT 3.1.1 [MQTT-3.1.3-8], a zero-length client id requires clean session (else CONNACK 2). */
import type { AedesOptions, Client } from 'aedes';
import { checkConnect } from '../admission.js';
import type { BrokerContext } from './context.js';

export function connectHooks(ctx: BrokerContext): Required<Pick<AedesOptions, 'preConnect' | 'authenticate'>> {
  // preConnect sees the CONNECT packet, authenticate answers it: the verdict passes between them.
  const emptyIdDirty = new WeakSet<Client>();
  return {
    preConnect(client, packet, cb) {
      if (checkConnect(packet.clientId, packet.clean !== false).action === 'refuse') emptyIdDirty.add(client);
      cb(null, true);
    },
    authenticate(client, _user, _pass, cb) {
      if (emptyIdDirty.has(client)) {
        ctx.metrics.refused.inc({ code: 'ERR_CLIENT_ID' });
        ctx.logger.warn({ code: 'ERR_CLIENT_ID' }, 'zero-length client id with clean session false refused (CONNACK 2)');
        return cb(Object.assign(new Error('identifier rejected'), { returnCode: 2 }) as Parameters<typeof cb>[0], false);
      }
      cb(null, true);
    },
  };
}
