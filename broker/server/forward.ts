/**
 * Delivery: Aedes' `authorizeForward`. A federation answer (`qis/1/f/res/<clientId>`) goes to that
 * link alone, and only while it is a permitted peer (auth.ts `isPeer`): a client that subscribes
 * to `#` or `qis/1/f/#` gets nothing from `qis/1/f/`. Every other message passes the subscribe
 * ACL's topic-level verdict and the sync-topic privacy rule (`subscribe.ts` `forwardAllowed`).
 */
import type { AedesOptions } from 'aedes';
import { FED_RES, FEDERATION_PREFIX } from '../federation.js';
import type { BrokerContext } from './context.js';
import { forwardAllowed } from './subscribe.js';

export function authorizeForward(ctx: BrokerContext): NonNullable<AedesOptions['authorizeForward']> {
  return (client, packet) => {
    if (!packet.topic.startsWith(FEDERATION_PREFIX)) return forwardAllowed(ctx, client, packet.topic) ? packet : null;
    const id = client?.id ?? '';
    return packet.topic === `${FED_RES}${id}` && ctx.auth.isPeer(id, ctx.auth.identity(client)) ? packet : null;
  };
}
