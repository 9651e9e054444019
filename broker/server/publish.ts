/**
 * PUBLISH: Aedes' `authorizePublish`, which sends each topic class (admission.ts `classify`) to
 * its admission: ordinary MQTT under the ACL, sync markers held (subscribe.ts), outcome packets
 * (outcomes.ts), score packets (scores.ts), template documents (templates.ts), revocation lists (enrolment.ts), federation
 * requests (peers.ts). A new qis topic class gets its case here.
 */
import type { AedesOptions } from 'aedes';
import { BROKER_INFO_TOPIC, aclAllows, checkSync, classify, type TopicClass } from '../admission.js';
import { FEDERATION_PREFIX } from '../federation.js';
import type { BrokerContext } from './context.js';
import { federationRequest } from './peers.js';
import { admitRevocation } from './enrolment.js';
import { admitOutcome } from './outcomes.js';
import { rateLimited } from './publish-rate.js';
import { carryOut, drop, refuse, refuseFailed } from './respond.js';
import { admitScore } from './scores.js';
import type { SyncHold } from './subscribe.js';
import { admitTemplate } from './templates.js';
import { timedAdmission, timedSyncHold } from './timing.js';

const SIGNED: ReadonlySet<TopicClass> = new Set<TopicClass>(['outcome', 'score', 'template', 'revocation']);

export function authorizePublish(ctx: BrokerContext, hold: SyncHold): NonNullable<AedesOptions['authorizePublish']> {
  return (client, packet, cb) => {
    const topic = packet.topic;
    const clientId = client?.id ?? '';
    const kind = classify(topic);
    // The signed kinds (outcome, score, template, revocation) cost signature work: the rate limit first.
    if (SIGNED.has(kind) && rateLimited(ctx, client, cb)) return;
    switch (kind) {
      case 'ordinary': {
        // Mosquitto's way by default (acl.refusedPublish drop): acknowledged and delivered to
        // nobody, so an auto-reconnecting client does not loop; qis/1/ refusals still disconnect.
        const no = (message: string): void =>
          ctx.options.acl.refusedPublish === 'drop' ? drop(ctx, client, packet, 'ERR_NOT_AUTHORIZED', message, cb) : refuse(ctx, client, topic, 'ERR_NOT_AUTHORIZED', message, cb);
        if (topic.startsWith('$')) return no('$ topics are reserved');
        if (!aclAllows(ctx.options.acl.publish, topic, clientId, ctx.auth.user(client))) return no('the ACL denies publishing here');
        return cb(null);
      }
      case 'sync': {
        const d = checkSync(topic, clientId, packet.retain);
        if (carryOut(ctx, d, client, packet, cb)) return;
        if (!client) return cb(null);
        return hold.whenRetainedWritten(client, timedSyncHold(ctx, () => cb(null)));
      }
      case 'broker-info':
        return refuse(ctx, client, topic, 'ERR_NOT_AUTHORIZED', `${BROKER_INFO_TOPIC} is written by the broker only`, cb);
      case 'qis-reserved':
        if (topic.startsWith(FEDERATION_PREFIX)) return federationRequest(ctx, client, packet, cb);
        return refuse(ctx, client, topic, 'ERR_TOPIC_INVALID', 'not a qis/1 topic this broker knows (o, t, s, sync)', cb);
      case 'template':
        return admitTemplate(ctx, client, packet, timedAdmission(ctx, 'template', cb), undefined);
      case 'revocation': {
        const rcb = timedAdmission(ctx, 'revocation', cb);
        admitRevocation(ctx, client, packet, rcb).catch(refuseFailed(ctx, client, topic, rcb, 'revocation admission failed'));
        return;
      }
      case 'score': {
        const scb = timedAdmission(ctx, 'score', cb);
        admitScore(ctx, client, packet, scb).catch(refuseFailed(ctx, client, topic, scb, 'score admission failed'));
        return;
      }
      case 'outcome': {
        const ocb = timedAdmission(ctx, 'outcome', cb);
        admitOutcome(ctx, client, packet, ocb).catch(refuseFailed(ctx, client, topic, ocb, 'admission failed'));
        return;
      }
    }
  };
}
