/**
 * Delivery: Aedes' `authorizeForward`. A federation answer (`qis/1/f/res/<clientId>`) goes to that
 * link alone, and only while it is a permitted peer (auth.ts `isPeer`): a client that subscribes
 * to `#` or `qis/1/f/#` gets nothing from `qis/1/f/`. Every other message passes the subscribe
 * ACL's topic-level verdict and the sync-topic privacy rule (`subscribe.ts` `forwardAllowed`);
 * to a link another region opened, only what this side shares with that region and never a
 * packet that came from it (link-peers.ts).
 */
import type { AedesOptions } from 'aedes';
import { FED_RES, FEDERATION_PREFIX, LINK_CLIENT_PREFIX } from '../federation.js';
import type { BrokerContext } from './context.js';
import { linkPeers } from './link-peers.js';
import { forwardAllowed } from './subscribe.js';

export function authorizeForward(ctx: BrokerContext): NonNullable<AedesOptions['authorizeForward']> {
  return (client, packet) => {
    if (!packet.topic.startsWith(FEDERATION_PREFIX)) {
      // A link opened by another region: this side's share for it, and nothing back to its origin.
      if (client && client.id.startsWith(LINK_CLIENT_PREFIX) && !linkPeers(ctx).delivers(client, packet.topic, packet.payload)) return null;
      return forwardAllowed(ctx, client, packet.topic) ? packet : null;
    }
    const id = client?.id ?? '';
    return packet.topic === `${FED_RES}${id}` && ctx.auth.isPeer(id, ctx.auth.identity(client)) ? packet : null;
  };
}
